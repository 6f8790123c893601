"""The trial record: what a trial of a search holds, as one typed definition.

A :class:`TrialRecord` is written to a trial's user attributes (short values only, so the
optuna-dashboard trial table stays readable) and read back with :meth:`TrialRecord.of`. The full
spec (architecture and recipe) and its canonical key live in system attributes, so the database
alone rebuilds any trial's candidate (:func:`candidate_of`).

Every finished trial has one explicit outcome:

==============  =========  =================================================================
outcome         state      meaning
==============  =========  =================================================================
rejected        PRUNED     over the parameter budget, or its band had its share of screening time; never trained
duplicate       as copied  same candidate as an earlier trial at this rung; result reused
pruned          PRUNED     stopped early by the pruner
diverged        COMPLETE   training loss became non-finite (its poor accuracy is kept)
complete        COMPLETE   trained to the end
failed          FAIL       an error; retried once
interrupted     FAIL       its worker was killed, interrupted or terminated; always retried
==============  =========  =================================================================
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nas.arch import Candidate
from nas.store.keys import CONSTRAINTS_ATTR, CURVE_ATTR, FIXED_PARAMS_ATTR, KEY_ATTR, SPEC_ATTR

OUTCOMES = ("running", "rejected", "duplicate", "pruned", "diverged", "complete", "failed", "interrupted")
ENDED = OUTCOMES[1:]  # the outcomes of a finished trial
TRAINED = ("pruned", "diverged", "complete")  # outcomes that cost a training run
WITH_RESULT = (*TRAINED, "duplicate")  # outcomes with an accuracy: their own, or an earlier trial's reused


@dataclass
class TrialRecord:
    outcome: str = "running"
    rung: int = 0  # 0 = the screening rung the sampler proposes in; the last rung is full fidelity
    fidelity: str = ""  # e.g. "2 ep x 10,000 img"
    name: str = ""  # the reference's name, for the references
    params: int | None = None
    flops: int | None = None
    seed: int | None = None
    val_acc: float | None = None  # final epoch run, on the held-out validation split: what selects
    test_acc: float | None = None  # final epoch run: reported, never used to select
    epochs: int | None = None  # epochs run
    seconds: float | None = None  # wall time of training and evaluation
    train_us: float | None = None  # training microseconds per image and epoch (plans the rungs)
    eval_us: float | None = None  # evaluation microseconds per image
    device: str | None = None
    precision: str | None = None  # of the training steps: bf16 screens on CPUs with native bf16, fp32 is final
    duplicate_of: int | None = None  # trial number whose result this one reuses
    promoted_from: int | None = None  # trial number in the rung below
    promoted_to: int | None = None  # trial number in the rung above
    reason: str | None = None  # why rejected, stopped, failed or interrupted
    retries: int = 0  # real failures so far (kills and interrupts not counted)
    retry_of: int | None = None  # the trial number this one runs again
    bracket: int = 0  # the round of successive halving the trial belongs to
    run: str | None = None  # the nas-search run that made the trial
    retrain_seeds: list[int] | None = None  # nas-train --trial: retrained on all 60,000 images with these seeds
    retrain_test_acc: list[float] | None = None  # final-epoch test accuracy per seed
    retrain_mean: float | None = None
    retrain_std: float | None = None
    retrain_epochs: int | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")

    @property
    def trained(self) -> bool:
        return self.outcome in TRAINED

    @property
    def has_result(self) -> bool:
        """Trained (or reusing a training) with an accuracy to compare."""
        return self.val_acc is not None and self.outcome in WITH_RESULT

    @property
    def is_point(self) -> bool:
        """A result of its own: one point per trained candidate in figures and rankings (no duplicate)."""
        return self.has_result and self.outcome != "duplicate"

    def attrs(self) -> dict[str, Any]:
        """The user attributes to write: every field that is set."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) not in (None, "") and not (f.name in ("retries", "bracket") and not getattr(self, f.name))}

    def write(self, trial: optuna.Trial, **changes: Any) -> TrialRecord:
        """Apply ``changes`` and write the changed fields to a running trial."""
        for key, value in changes.items():
            setattr(self, key, value)
        self.__post_init__()
        for key, value in self.attrs().items():
            if key in changes or key not in trial.user_attrs:
                trial.set_user_attr(key, value)
        return self

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in trial.user_attrs.items() if k in known})


def write_candidate(trial: optuna.Trial, candidate: Candidate) -> None:
    trial.storage.set_trial_system_attr(trial._trial_id, SPEC_ATTR, candidate.to_dict())
    trial.storage.set_trial_system_attr(trial._trial_id, KEY_ATTR, candidate.key)


def candidate_of(trial: FrozenTrial) -> Candidate:
    """Rebuild a trial's candidate (architecture and recipe, as trained) from the study alone."""
    spec = trial.system_attrs.get(SPEC_ATTR)
    if spec is None:
        raise ValueError(f"trial {trial.number} holds no candidate (it failed before its candidate was sampled)")
    return Candidate.from_dict(spec)


def curve_of(trial: FrozenTrial) -> dict[int, float]:
    """Validation accuracy per epoch: Optuna's intermediate values, or (several objectives) our own."""
    return dict(trial.intermediate_values) or {int(e): v for e, v in trial.system_attrs.get(CURVE_ATTR, [])}


def key_of(trial: FrozenTrial) -> str | None:
    return trial.system_attrs.get(KEY_ATTR)


def write_curve(trial: optuna.Trial, points: list[list[float]]) -> None:
    trial.storage.set_trial_system_attr(trial._trial_id, CURVE_ATTR, points)


def write_constraint(trial: optuna.Trial, excess: float) -> None:
    """The parameter excess, also where optuna-dashboard 0.21 reads feasibility (the older attribute)."""
    trial.set_constraint("params", excess)
    trial.storage.set_trial_system_attr(trial._trial_id, CONSTRAINTS_ATTR, [excess])


def is_queued(trial: optuna.Trial | FrozenTrial) -> bool:
    """Enqueued with fixed parameters (a known network, a promotion, a retry), not sampled."""
    attrs = trial.system_attrs if isinstance(trial, FrozenTrial) else trial.storage.get_trial_system_attrs(trial._trial_id)
    return FIXED_PARAMS_ATTR in attrs


def update_record(study: optuna.Study, trial: FrozenTrial, **fields: Any) -> None:
    """Write fields of a finished trial's record (a promotion, a retraining, why it ended)."""
    known = {f.name for f in dataclasses.fields(TrialRecord)}
    if not fields.keys() <= known:
        raise ValueError(f"not fields of a trial record: {sorted(fields.keys() - known)}")
    for key, value in fields.items():
        _set_finished_trial_user_attr(study._storage, trial._trial_id, key, value)


def _set_finished_trial_user_attr(storage: optuna.storages.BaseStorage, trial_id: int, key: str, value: Any) -> None:
    """Write a user attribute on a trial that has already finished.

    Optuna refuses attributes on finished trials, but some facts arrive later (a promotion
    decided when the whole rung is done, a retraining run days later) and belong on the trial, where
    optuna-dashboard shows them. RDB storages only: the row is written as Optuna writes it.
    """
    from optuna.storages._rdb import models  # noqa: PLC0415 - Optuna's own table definitions

    rdb = getattr(storage, "_backend", storage)  # studies wrap RDBStorage in a cache
    if not isinstance(rdb, optuna.storages.RDBStorage):
        raise ValueError("attributes of finished trials can only be written to an RDB storage (SQLite, "
                         "PostgreSQL, MySQL)")
    session = rdb.scoped_session()
    try:
        row = session.query(models.TrialUserAttributeModel).filter_by(trial_id=trial_id, key=key).one_or_none()
        if row is None:
            session.add(models.TrialUserAttributeModel(trial_id=trial_id, key=key, value_json=json.dumps(value)))
        else:
            row.value_json = json.dumps(value)
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


def write_retrain(study: optuna.Study, trial: FrozenTrial, seeds: list[int], test_accs: list[float],
                  epochs: int) -> None:
    """Record a retraining's final test accuracies (one per seed) on the trial, for the dashboard."""
    import statistics

    update_record(study, trial, retrain_seeds=seeds, retrain_test_acc=test_accs, retrain_mean=statistics.fmean(test_accs),
                  retrain_std=statistics.stdev(test_accs) if len(test_accs) > 1 else 0.0, retrain_epochs=epochs)
