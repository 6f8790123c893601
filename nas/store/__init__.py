"""What a search keeps in Optuna, and the only package that touches Optuna's private API.

``urls`` (a storage URL: its SQLite file, its password hidden) -> ``storage`` (opening it, the lock
that orders writers, a lost server, a full disk) and ``snapshot`` (a study as a ``.db.gz``);
``keys`` names every attribute written; ``record`` is a trial's typed record and its outcomes;
``study`` the studies of a search, the run log, heartbeats and retries; ``artifacts`` a trial's
weights; ``dashboard`` what optuna-dashboard shows. ``nas.search`` (the algorithm) and
``nas.results`` (reading a study back) both go through here; nothing here imports either.
"""
