"""The training engine: the data, the device and number format, and the trainer.

``data`` reads and checks the IDX files and splits them; ``device`` resolves the device and the
precision; ``augment`` and ``optim`` prepare batches and the recipe's optimizer; ``trainer`` trains
one spec with one recipe on device-resident data; ``bench`` times it against the classic loop.
Nothing here knows of Optuna or search spaces.
"""
