"""One trial, from its candidate to its result: the only module that touches ``optuna.Trial``.

A trial goes:

1. ``space.sample(trial)`` -> candidate, its recipe compressed to the rung's epochs; its parameter
   count is the constraint ``params - budget + 1`` (> 0 infeasible). Over budget: PRUNED at once,
   never trained. In a front search, a sampled candidate whose budget band has spent more time
   screening than another band is turned away the same way (each band gets an equal share).
2. The same candidate finished earlier at this rung: its result is reused.
3. Otherwise it trains at the rung's fidelity; the final rung reports each epoch's validation
   accuracy (learning curves; the pruner at one fidelity).

A kill, Ctrl-C or SIGTERM ends the trial as 'interrupted' and queues it again; an error as 'failed'
(retried once).
"""

from __future__ import annotations

import math
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from optuna_dashboard import save_note

from nas.engine.trainer import EpochMetrics, TrainResult, train
from nas.store.artifacts import artifact_dir, save_weights, state_bytes
from nas.search.context import Search
from nas.store.dashboard import refresh_figure, trial_note
from nas.search.progress import QuietReporter, Reporter
from nas.store.record import TrialRecord, is_queued, key_of, write_candidate, write_constraint, write_curve
from nas.search.rungs import Rung, band_has_its_share
from nas.search.signals import Interrupted, check_signal
from nas.store.storage import storage_lock
from nas.store.study import fresh_trial, heartbeat, requeue
from nas.arch import Candidate
from nas.arch.budget import check_budget
from nas.arch.builder import count_flops

FIGURE_EVERY = 25  # screening trials between refreshes of the study's figure in the dashboard
# Proposals in a row turned away for their band's share, after which one trains anyway: a band the
# sampler no longer reaches must not stop the screening of the others.
SHARE_PATIENCE = 200

Outcome = tuple[TrialState, "list[float] | None"]


@dataclass
class TrialRunner:
    """Runs trials of one worker: evaluates each and tells the study."""

    search: Search
    reporter: Reporter = field(default_factory=QuietReporter)
    watch: Callable[[], Any] | None = None  # runs while a trial trains: look for other workers' stale trials
    finished: int = 0
    share_waits: int = 0  # proposals in a row turned away because their band had its share

    def run(self, rung: Rung, trial: optuna.Trial, bracket: int) -> FrozenTrial:
        """Evaluate a trial taken from the study and tell the result."""
        s = self.search
        study = s.studies[rung.index]
        record = TrialRecord.of(trial)
        record.rung, record.fidelity, record.run = rung.index, rung.label, s.run_id
        if rung.index == 0:
            record.bracket = bracket
        try:
            with heartbeat(trial, watch=self.watch) as progress:
                record.write(trial, rung=rung.index, fidelity=rung.label, run=s.run_id, bracket=record.bracket)
                state, values = self.evaluate(trial, rung, record, progress)
        except (KeyboardInterrupt, Interrupted) as e:
            # The run ends: a second signal (Ctrl-C reaches every process of the group, and the
            # parent passes SIGTERM on) must not cut short the queueing of this trial.
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            by = "SIGINT" if isinstance(e, KeyboardInterrupt) else e
            self._give_back(study, trial, "interrupted", f"interrupted by {by}")
            raise
        except Exception as e:
            self._give_back(study, trial, "failed", f"{type(e).__name__}: {e}")
            raise
        save_note(trial, trial_note(fresh_trial(study, trial)))
        frozen = study.tell(trial, values, state=state)
        self.reporter.trial_finished(rung, frozen)
        self.finished += 1
        if rung.final or self.finished % FIGURE_EVERY == 0:
            refresh_figure(study, f"{study.study_name}: validation accuracy at {rung.label} against parameters")
        return frozen

    def _give_back(self, study: optuna.Study, trial: optuna.Trial, outcome: str, reason: str) -> None:
        with storage_lock(self.search.config.storage):
            requeue(study, fresh_trial(study, trial), outcome, reason)

    # ------------------------------------------------------------ evaluation

    def evaluate(self, trial: optuna.Trial, rung: Rung, record: TrialRecord, progress: Callable[[int, int], None]) -> Outcome:
        candidate, params = self._propose(trial, rung, record)
        if candidate is None:
            return TrialState.PRUNED, None
        earlier = self.find_duplicate(rung, candidate.key, trial.number)
        if earlier is not None:
            return self.reuse(trial, record, earlier)
        self._train(trial, rung, record, candidate, progress)
        if record.outcome == "pruned":
            return TrialState.PRUNED, None
        return TrialState.COMPLETE, self.values(record.val_acc, params, record.flops)

    def _propose(self, trial: optuna.Trial, rung: Rung, record: TrialRecord) -> tuple[Candidate | None, int]:
        """Sample the candidate, store it and its size, and check the budget (None: rejected)."""
        s = self.search
        sampled = s.space.sample(trial, s.data.info.shape)
        candidate = Candidate(sampled.arch, sampled.recipe.compressed(rung.epochs), record.name)
        write_candidate(trial, candidate)
        verdict = check_budget(candidate.arch, s.settings.budget)
        record.write(trial, params=verdict.params, flops=count_flops(candidate.arch))
        write_constraint(trial, verdict.excess)
        if not verdict.accepted:
            record.write(trial, outcome="rejected", reason=verdict.reason)
            return None, verdict.params
        # a known network (reference, warm start) or a retry of one is trained whatever its band
        if rung.index == 0 and not is_queued(trial) and (full := self._band_full(trial, verdict.params, record.bracket)):
            record.write(trial, outcome="rejected", reason=full)
            return None, verdict.params
        self.share_waits = 0
        return candidate, verdict.params

    def _band_full(self, trial: optuna.Trial, params: int, bracket: int) -> str | None:
        """Why a sampled candidate's band waits for the others (a front search), or None."""
        buckets = self.search.final.buckets
        if not buckets or self.share_waits >= SHARE_PATIENCE:
            return None
        this_round = [t for t in self.search.studies[0].get_trials(deepcopy=False)
                      if TrialRecord.of(t).bracket == bracket and t.number != trial.number]
        full = band_has_its_share(this_round, params, buckets)
        self.share_waits += full is not None
        return full

    def _train(self, trial: optuna.Trial, rung: Rung, record: TrialRecord, candidate: Candidate,
               progress: Callable[[int, int], None]) -> TrainResult:
        """Train the candidate at the rung's fidelity and record what came out, weights included."""
        s = self.search
        seed = record.seed if record.seed is not None else s.config.seed + trial.number
        precision = s.precision_at(rung)
        record.write(trial, seed=seed, device=s.device, precision=precision)
        self.reporter.trial_started(rung, trial.number, record)
        # Learning curves at full fidelity (and the pruner's evidence there); the references get theirs at
        # every rung, a few cheap evaluations, so the report can always draw them.
        curve = rung.final or bool(record.name)
        data = s.data_for(rung)
        result = train(candidate.arch, candidate.recipe, data, s.device, seed,
                       on_epoch=self._on_epoch(trial, rung, progress, curve), on_batch=lambda n: check_signal(), between=check_signal,
                       precision=precision, val_every_epoch=curve, evaluate_test=rung.final,
                       ranking_only=not rung.final)
        last = result.epochs[-1]
        eval_seconds = sum(m.eval_seconds for m in result.epochs)
        evaluations = sum(m.val_acc is not None for m in result.epochs)
        train_seconds = sum(m.seconds for m in result.epochs) - eval_seconds
        diverged = not math.isfinite(last.train_loss)
        record.write(trial, outcome="diverged" if diverged else ("pruned" if result.stopped else "complete"),
                     val_acc=last.val_acc if last.val_acc is not None else 0.0, test_acc=result.test_acc,
                     epochs=last.epoch, seconds=round(sum(result.epoch_seconds), 2),
                     train_us=round(1e6 * train_seconds / (len(data.train_labels) * last.epoch), 3),
                     eval_us=round(1e6 * eval_seconds / max(1, evaluations * len(data.val_labels)), 3),
                     reason=result.stopped)
        # Every trained trial keeps its weights (tens of KB): downloadable in the dashboard, exported by --no-retrain.
        save_weights(trial, state_bytes(result.model), artifact_dir(s.config.storage, s.config.artifacts))
        return result

    def _on_epoch(self, trial: optuna.Trial, rung: Rung, progress: Callable[[int, int], None],
                  curve: bool) -> Callable[[EpochMetrics], bool]:
        several = self.search.settings.multi_objective  # Optuna keeps no curves for several objectives: we do
        points: list[list[float]] = []

        def on_epoch(m: EpochMetrics) -> bool:
            check_signal()
            progress(m.epoch, rung.epochs)
            self.reporter.epoch(rung, trial.number, m.epoch, rung.epochs, m.val_acc)
            if not curve or m.val_acc is None:
                return False
            if several:
                points.append([m.epoch, m.val_acc])
                write_curve(trial, points)
                return False
            trial.report(m.val_acc, m.epoch)
            # Only the final rung prunes; a finished run is complete.
            return rung.final and m.epoch < rung.epochs and trial.should_prune()
        return on_epoch

    def values(self, val_acc: float, params: int, flops: int) -> list[float]:
        return [{"accuracy": val_acc, "params": params, "flops": flops}[o] for o in self.search.settings.objectives]

    def find_duplicate(self, rung: Rung, key: str, number: int) -> FrozenTrial | None:
        study = self.search.studies[rung.index]
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if t.number != number and key_of(t) == key and TrialRecord.of(t).has_result:
                return t
        return None

    def reuse(self, trial: optuna.Trial, record: TrialRecord, earlier: FrozenTrial) -> Outcome:
        was = TrialRecord.of(earlier)
        original = was.duplicate_of if was.duplicate_of is not None else earlier.number
        record.write(trial, outcome="duplicate", duplicate_of=original, val_acc=was.val_acc, test_acc=was.test_acc,
                     epochs=was.epochs, seed=was.seed, device=was.device)
        if not self.search.settings.multi_objective:
            for step, value in sorted(earlier.intermediate_values.items()):
                trial.report(value, step)
        if earlier.state == TrialState.PRUNED:
            return TrialState.PRUNED, None
        return TrialState.COMPLETE, list(earlier.values)
