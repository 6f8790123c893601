"""Search spaces: data files of distributions over the spec's architecture family and recipe.

``roles`` is the file's vocabulary (its roles and how an entry becomes a distribution); ``space``
reads a space file and holds the one function that samples a candidate from it
(the only code that calls ``trial.suggest_*``); ``audit`` samples a space without training;
the files shipped with it are in ``search_spaces/`` at the top of the repository, installed as
``nas.space.spaces`` (``mnist_20k`` is the default).
"""
