"""The search: successive halving over Optuna studies, one study per rung, under a time plan.

``settings`` (a study's settings and one run's config) -> ``opening`` (read, create or resume the
studies) -> ``run`` (one run: plan, workers, summary). ``rungs`` and ``plan`` are the fidelities and
the time they cost; ``worker`` is the loop over the rungs, ``trial`` one trial (the only module that
touches ``optuna.Trial``), ``processes`` the worker processes, ``signals`` clean stops. What a search
keeps (storage, records, heartbeats, weights, notes) is :mod:`nas.store`'s.
"""
