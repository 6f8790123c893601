"""Reading a search's results: which study, which trial, its candidate, the tables. Shared by the
command line, the report and the exporter; reads only."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.arch import Candidate
from nas.errors import SettingError
from nas.store.record import TrialRecord, candidate_of
from nas.search.rungs import Rung
from nas.search.settings import StudySettings
from nas.store.storage import make_storage
from nas.store.urls import redact
from nas.store.keys import RUNG_ATTR, SETTINGS_ATTR
from nas.store.study import find_study, sibling_study

TOP_TRIALS = 10  # rows of a top-trials table (nas-search's last one, nas-report's)

def open_study(url: str, name: str | None = None, mode: str = "read") -> optuna.Study:
    """The main study of a search in the storage at ``url`` (``name`` may be left out when the
    storage holds one search). Never creates a database, a table or a study; ``mode`` "read" opens a
    SQLite file read-only, "write" lets results be written back to its trials."""
    storage = make_storage(url, mode=mode)
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
    rungs = settings.make_rungs(study.study_name)
    return [(rung, study if rung.final else sibling_study(study, rung.study_name)) for rung in rungs]


def usable_trials(study: optuna.Study, budget: int | None = None) -> list[FrozenTrial]:
    """Trials that can win: complete (never a duplicate, rejected or diverged one), feasible, and
    under ``budget`` parameters where one is given."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if TrialRecord.of(t).outcome == "complete" and all(v <= 0 for v in t.constraints.values())
            and (budget is None or (TrialRecord.of(t).params or 0) < budget)]


def best_under(study: optuna.Study, budget: int | None) -> FrozenTrial | None:
    """The most accurate usable trial with fewer than ``budget`` parameters (ties: the smaller, then the
    earlier), so no other trial is as accurate with fewer parameters."""
    usable = usable_trials(study, budget)
    return max(usable, key=lambda t: (TrialRecord.of(t).val_acc, -(TrialRecord.of(t).params or 0), -t.number)) \
        if usable else None


def winners_by_budget(study: optuna.Study) -> list[tuple[int, FrozenTrial | None]]:
    """Each budget of the search (one, or a front search's several) with its winner so far."""
    settings = settings_of(study)
    budgets = settings.buckets if settings else ()
    return [(b, best_under(study, b)) for b in budgets]


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The winner: the best feasible full-fidelity trial (one objective), or the feasible Pareto
    front (several), never a duplicate, rejected or diverged one."""
    usable = usable_trials(study)
    if not usable:
        return []
    if len(study.directions) > 1:
        front = [t for t in study.best_trials if t in usable]
        return sorted(front, key=lambda t: TrialRecord.of(t).params or 0)
    return [max(usable, key=lambda t: (t.values[0], -t.number))]


def find_trial(study: optuna.Study, which: str | int | None, budget: int | None = None) -> FrozenTrial:
    """Trial ``which`` of the study: a number, or ``best`` / None for the winner (under ``budget``
    parameters where one is given)."""
    if which in (None, "best"):
        if budget is not None:
            winner = best_under(study, budget)
        else:
            winner = next(iter(best_trials(study)), None)
            winner = winner if len(study.directions) == 1 or winner is None else best_under(study, None)
        if winner is None:
            raise SettingError("trial", no_winner_yet(study, budget))
        return winner
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


def no_winner_yet(study: optuna.Study, budget: int | None) -> str:
    """Why there is no winner, and where to look instead: a search still screening has its best screened
    candidate in its first rung's study."""
    under = f" under {budget:,} parameters" if budget is not None else ""
    what = f"study {study.study_name!r} has no completed full-fidelity trial{under} yet"
    settings = settings_of(study)
    if settings is not None and settings.rungs:
        what += (f"; its best screened candidate is in study {study.study_name}.rung0 (give that `study`; "
                 f"trained again, its recipe runs its full {settings.epochs} epochs)")
    return what


def retrain_candidate(study: optuna.Study, trial: FrozenTrial) -> Candidate:
    """The trial's candidate as a retraining runs it: a screening rung's trial with its recipe back at
    the search's full-fidelity epochs (it was screened with the schedule compressed)."""
    candidate = candidate_of(trial)
    rung = study.user_attrs.get(RUNG_ATTR)
    main = sibling_study(study, rung["search"]) if rung else None
    settings = settings_of(main) if main is not None else None
    if settings is not None and candidate.recipe.epochs != settings.epochs:
        candidate = replace(candidate, recipe=candidate.recipe.compressed(settings.epochs))
    return candidate


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


MAX_CSV_BYTES = 200_000_000  # a trials CSV of 50,000 trials (about 3 KB each) is far below this


def candidate_from_csv(path: str, number: int, study: str | None = None) -> Candidate:
    """Trial ``number``'s candidate from a trials CSV (``nas-report --csv``): its ``spec`` column, in
    the rows of ``study`` (default: the search's main study, the full-fidelity rung)."""
    import csv
    import io
    import json
    from pathlib import Path

    from nas.system import read_text_file

    text = read_text_file(Path(path), MAX_CSV_BYTES, "trials CSV", "CSV")
    csv.field_size_limit(MAX_CSV_BYTES)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    if not {"study", "number", "spec"} <= set(columns):
        raise SettingError("csv", f"{path} has no {'spec column' if 'study' in columns else 'study, number and spec columns'}"
                           ": write it with nas-report --csv (the trials CSV of a search)")
    try:
        rows = [r for r in reader if r["number"] == str(number)
                and (r["study"] == study if study is not None else ".rung" not in r["study"])]
    except csv.Error as e:
        raise SettingError("csv", f"{path} is not a readable CSV ({e})") from None
    if not rows or not rows[0]["spec"]:
        where = f"study {study!r}" if study is not None else "the main study (give --study NAME.rung0 for a screening row)"
        raise SettingError("row", f"{path} has no trained trial {number} of {where}")
    return replace(Candidate.from_dict(json.loads(rows[0]["spec"])), name=f"{rows[0]['study']} trial {number}")
