"""Reading a search's results: which study, which trial, its candidate, the tables. Shared by the
command line, the report and the exporter; reads only."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.config import SettingError, StudySettings
from nas.fidelity import Rung, make_rungs
from nas.record import TrialRecord, candidate_of
from nas.study import SETTINGS_ATTR, find_study, make_storage, redact

__all__ = ["best_trials", "candidate_of", "find_trial", "open_study", "rung_studies", "settings_of", "trials_table"]


def open_study(url: str, name: str | None = None) -> optuna.Study:
    """The main study of a search in the storage at ``url`` (``name`` may be left out when the
    storage holds one search). Never creates a database or a study."""
    storage = make_storage(url, create=False)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    searches = [s.study_name for s in summaries if SETTINGS_ATTR in s.user_attrs]
    if name is None:
        if len(searches) != 1:
            raise SettingError("study", f"{redact(url)} holds {len(searches)} searches"
                               + (f" ({', '.join(map(repr, searches))})" if searches else "")
                               + "; name one with the study name")
        name = searches[0]
    study = find_study(storage, name)
    if study is None:
        known = ", ".join(repr(s.study_name) for s in summaries) or "none"
        raise SettingError("study", f"no study {name!r} in {redact(url)}; studies there: {known}")
    return study


def settings_of(study: optuna.Study) -> StudySettings | None:
    stored = study.user_attrs.get(SETTINGS_ATTR)
    return StudySettings.from_dict(stored) if stored else None


def rung_studies(study: optuna.Study) -> list[tuple[Rung, optuna.Study | None]]:
    """Each rung of the search with its study (the main study is the last rung)."""
    settings = settings_of(study)
    if settings is None:
        return []
    rungs = make_rungs(study.study_name, settings)
    return [(rung, study if rung.final else find_study(study._storage, rung.study_name)) for rung in rungs]


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The winner: the best feasible full-fidelity trial (one objective), or the feasible Pareto
    front (several), never a duplicate, rejected or diverged one."""
    usable = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if TrialRecord.of(t).outcome == "complete" and all(v <= 0 for v in t.constraints.values())]
    if not usable:
        return []
    if len(study.directions) > 1:
        front = [t for t in study.best_trials if t in usable]
        return sorted(front, key=lambda t: TrialRecord.of(t).params or 0)
    return [max(usable, key=lambda t: (t.values[0], -t.number))]


def find_trial(study: optuna.Study, which: str | int | None) -> FrozenTrial:
    """Trial ``which`` of the study: a number, or ``best`` / None for the winner."""
    if which in (None, "best"):
        winners = best_trials(study)
        if not winners:
            raise SettingError("trial", f"study {study.study_name!r} has no completed full-fidelity trial yet")
        return winners[0]
    try:
        number = int(which)
    except (TypeError, ValueError):
        raise SettingError("trial", f"must be a trial number or 'best', got {which!r}") from None
    matches = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not matches:
        raise SettingError("trial", f"study {study.study_name!r} has no trial {number} "
                           f"(it has {len(study.get_trials(deepcopy=False))})")
    trial = matches[0]
    record = TrialRecord.of(trial)
    if record.outcome == "rejected":
        raise SettingError("trial", f"trial {number} was rejected ({record.reason}); it has no weights to export")
    candidate_of(trial)  # fails clearly when the trial never got a candidate
    return trial


def trials_table(study: optuna.Study, include_untrained: bool = False) -> Any:
    """One row per trained (or reused) trial of a study, from its records."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        r = TrialRecord.of(t)
        if not (r.has_result or include_untrained):
            continue
        rows.append({"trial": t.number, "outcome": r.outcome, "rung": r.rung, "val_acc": r.val_acc,
                     "test_acc": r.test_acc, "params": r.params, "flops": r.flops, "epochs": r.epochs,
                     "seconds": r.seconds, "name": r.name or (f"=#{r.duplicate_of}" if r.duplicate_of is not None else ""),
                     "promoted_from": r.promoted_from})
    columns = ["trial", "outcome", "rung", "val_acc", "test_acc", "params", "flops", "epochs", "seconds", "name",
               "promoted_from"]
    return pd.DataFrame(rows, columns=columns)
