"""What a run tells its caller as it goes: trials started and finished, epochs, messages."""

from __future__ import annotations

from typing import Protocol

from optuna.trial import FrozenTrial

from nas.store.record import TrialRecord
from nas.search.rungs import Rung


class Reporter(Protocol):
    def trial_started(self, rung: Rung, number: int, record: TrialRecord) -> None: ...
    def epoch(self, rung: Rung, number: int, epoch: int, of: int, val_acc: float | None) -> None: ...
    def trial_finished(self, rung: Rung, trial: FrozenTrial) -> None: ...
    def message(self, text: str) -> None: ...


class QuietReporter:
    def trial_started(self, rung: Rung, number: int, record: TrialRecord) -> None:
        pass

    def epoch(self, rung: Rung, number: int, epoch: int, of: int, val_acc: float | None) -> None:
        pass

    def trial_finished(self, rung: Rung, trial: FrozenTrial) -> None:
        pass

    def message(self, text: str) -> None:
        pass
