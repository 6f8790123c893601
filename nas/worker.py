"""The worker: ask a trial, evaluate it, tell the study; across the rungs of the fidelity plan.

This is the only module that touches ``optuna.Trial``. One trial goes:

1. ``space.sample(trial)`` -> candidate, its recipe compressed to the rung's epochs; its parameter
   count is the constraint ``params - budget + 1`` (> 0 infeasible). Over budget: PRUNED at once,
   never trained.
2. The same candidate finished earlier at this rung: its result is reused.
3. Otherwise it trains at the rung's fidelity; the final rung reports each epoch's validation
   accuracy (learning curves; the pruner at one fidelity).

The loop (:meth:`Worker.run`) is a small state machine over the rungs, re-read from the storage at
every step, so any number of workers on any number of machines cooperate through the database
alone: run a queued trial of a higher rung if there is one; else promote a finished rung; else
screen another candidate while this run's trials or time last; else wait for the others.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from optuna_dashboard import save_note

from nas.artifacts import artifact_dir, save_weights
from nas.budget import check_budget
from nas.builder import count_flops
from nas.config import SearchConfig, StudySettings
from nas.data import Splits, stratified_first
from nas.dashboard import refresh_figure, save_trial_note, trial_note
from nas.engine import resolve_precision, time_steps, train
from nas.export import state_bytes
from nas.fidelity import Rates, Rung, ranked, reserve_seconds
from nas.record import TrialRecord, candidate_of, key_of, set_finished_trial_user_attr, write_candidate
from nas.space import SearchSpace
from nas.spec import Candidate
from nas.study import beat, enqueue, heartbeat, requeue, retry_stale_trials, storage_lock

MAX_UNTRAINED_IN_A_ROW = 500  # rejected or duplicate proposals before giving up on the sampler
FIGURE_EVERY = 25  # screening trials between refreshes of the study's figure in the dashboard
MAX_FAILURES_IN_A_ROW = 3  # trials ending in an error before the worker gives up (each is retried later)
WAIT_SECONDS = 2.0  # poll interval while other workers finish a rung
PROBE_STEPS = 40  # training steps of each precision that measure a candidate's fp32/bf16 time ratio


class Interrupted(BaseException):
    """SIGTERM (or SIGINT) arrived; like KeyboardInterrupt, it is not an error of the trial."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_PENDING: list[int] = []  # signals received, not yet acted on


def note_signal(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
    _PENDING.append(signum)


def check_signal() -> None:
    """Raise :class:`Interrupted` if SIGTERM or SIGINT came. Called at safe points (every batch,
    epoch and loop step): an exception raised from the handler itself could land inside a database
    transaction and leave it open, holding SQLite's write lock."""
    if _PENDING:
        raise Interrupted(_PENDING[0])


def handled_signal() -> None:
    _PENDING.clear()


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, note_signal)
    signal.signal(signal.SIGINT, note_signal)


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


@dataclass
class Search:
    """What every worker process opens once: settings, space, storage, one study per rung, data."""

    config: SearchConfig
    name: str
    settings: StudySettings
    space: SearchSpace
    storage: optuna.storages.BaseStorage
    rungs: list[Rung]
    studies: list[optuna.Study]
    data: Splits  # the full-fidelity training images, validation and test, on the device
    device: str
    run_id: str
    _rung_data: dict[int, Splits] = field(default_factory=dict)

    @property
    def final(self) -> Rung:
        return self.rungs[-1]

    def data_for(self, rung: Rung) -> Splits:
        """The rung's training images: the first ``rung.images`` of the full set (each class in
        proportion, as ``make_splits`` takes a subset), same validation and test images."""
        if rung.images >= len(self.data.train_labels):
            return self.data
        if rung.index not in self._rung_data:
            keep = stratified_first(torch.arange(len(self.data.train_labels)), self.data.train_labels.cpu(), rung.images)
            keep = keep.to(self.data.train_images.device)
            self._rung_data[rung.index] = replace(self.data, train_images=self.data.train_images[keep],
                                                  train_labels=self.data.train_labels[keep])
        return self._rung_data[rung.index]


@dataclass
class Worker:
    search: Search
    index: int = 0
    reporter: Reporter = field(default_factory=QuietReporter)
    precision: str = "auto"

    # ------------------------------------------------------------ one trial

    def evaluate(self, trial: optuna.Trial, rung: Rung, record: TrialRecord,
                 progress: dict[str, Any]) -> tuple[TrialState, list[float] | None]:
        s = self.search
        sampled = s.space.sample(trial)
        candidate = Candidate(sampled.arch, sampled.recipe.compressed(rung.epochs), record.name)
        write_candidate(trial, candidate)
        verdict = check_budget(candidate.arch, s.settings.budget)
        record.write(trial, params=verdict.params, flops=count_flops(candidate.arch))
        trial.set_constraint("params", verdict.excess)
        # optuna-dashboard 0.21 reads feasibility from the older "constraints" system attribute.
        trial.storage.set_trial_system_attr(trial._trial_id, "constraints", [verdict.excess])
        if not verdict.accepted:
            record.write(trial, outcome="rejected", reason=verdict.reason)
            return TrialState.PRUNED, None
        earlier = self.find_duplicate(rung, candidate.key, trial.number)
        if earlier is not None:
            return self.reuse(trial, record, earlier)

        seed = record.seed if record.seed is not None else s.config.seed + trial.number
        record.write(trial, seed=seed, device=s.device, precision=self.precision_at(rung))
        self.reporter.trial_started(rung, trial.number, record)
        # Learning curves at full fidelity (and the pruner's evidence there); the references get theirs at
        # every rung, a few cheap evaluations, so the report can always draw them.
        curve = rung.final or bool(record.name)
        report = curve and not s.settings.multi_objective  # Optuna keeps no curves for several objectives

        def on_epoch(m) -> bool:
            check_signal()
            progress.update(epoch=m.epoch, of=rung.epochs)
            self.reporter.epoch(rung, trial.number, m.epoch, rung.epochs, m.val_acc)
            if report and m.val_acc is not None:
                trial.report(m.val_acc, m.epoch)
                # Only the final rung prunes; a finished run is complete.
                return rung.final and m.epoch < rung.epochs and trial.should_prune()
            return False

        data = s.data_for(rung)
        result = train(candidate.arch, candidate.recipe, data, s.device, seed, on_epoch=on_epoch,
                       on_batch=lambda n: check_signal(), precision=self.precision, val_every_epoch=curve,
                       evaluate_test=rung.final, ranking_only=not rung.final)
        last = result.epochs[-1]
        eval_seconds = sum(m.eval_seconds for m in result.epochs)
        evaluations = sum(m.val_acc is not None for m in result.epochs)
        train_seconds = sum(m.seconds for m in result.epochs) - eval_seconds
        diverged = not math.isfinite(last.train_loss)
        outcome = "diverged" if diverged else ("pruned" if result.stopped else "complete")
        val = last.val_acc if last.val_acc is not None else 0.0
        record.write(trial, outcome=outcome, val_acc=val, test_acc=result.test_acc, epochs=last.epoch,
                     seconds=round(sum(result.epoch_seconds), 2),
                     train_us=round(1e6 * train_seconds / (len(data.train_labels) * last.epoch), 3),
                     eval_us=round(1e6 * eval_seconds / max(1, evaluations * len(data.val_labels)), 3),
                     reason=result.stopped)
        # Every trained trial keeps its weights (tens of KB): downloadable in the dashboard, exported by --no-retrain.
        save_weights(trial, state_bytes(result.model), artifact_dir(s.config.storage, s.config.artifacts))
        if outcome == "pruned":
            return TrialState.PRUNED, None
        return TrialState.COMPLETE, self.values(val, verdict.params, record.flops)

    def values(self, val_acc: float, params: int, flops: int) -> list[float]:
        return [{"accuracy": val_acc, "params": params, "flops": flops}[o] for o in self.search.settings.objectives]

    def find_duplicate(self, rung: Rung, key: str, number: int) -> FrozenTrial | None:
        study = self.search.studies[rung.index]
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if t.number != number and key_of(t) == key and TrialRecord.of(t).has_result:
                return t
        return None

    def reuse(self, trial: optuna.Trial, record: TrialRecord, earlier: FrozenTrial) -> tuple[TrialState, list[float] | None]:
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

    def run_one(self, rung: Rung, trial: optuna.Trial) -> FrozenTrial:
        """Evaluate a trial taken from the study and tell the result. A kill, Ctrl-C or SIGTERM
        ends it as 'interrupted' and queues it again; an error as 'failed' (retried once)."""
        s = self.search
        study = s.studies[rung.index]
        record = TrialRecord.of(trial)
        record.rung, record.fidelity, record.run = rung.index, rung.label, s.run_id
        if rung.index == 0:
            record.bracket = self.bracket
        try:
            with heartbeat(s.storage, trial._trial_id, watch=self.retry_stale) as progress:
                record.write(trial, rung=rung.index, fidelity=rung.label, run=s.run_id, bracket=record.bracket)
                state, values = self.evaluate(trial, rung, record, progress)
        except (KeyboardInterrupt, Interrupted) as e:
            # The run ends: a second signal (Ctrl-C reaches every process of the group, and the
            # parent passes SIGTERM on) must not cut short the queueing of this trial.
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self._give_back(study, trial, "interrupted", f"interrupted by {'SIGINT' if isinstance(e, KeyboardInterrupt) else e}")
            raise
        except Exception as e:
            self._give_back(study, trial, "failed", f"{type(e).__name__}: {e}")
            raise
        save_note(trial, trial_note(study._storage.get_trial(trial._trial_id)))
        frozen = study.tell(trial, values, state=state)
        self.reporter.trial_finished(rung, frozen)
        self.finished_here += 1
        if rung.final or self.finished_here % FIGURE_EVERY == 0:
            refresh_figure(study, f"{study.study_name}: validation accuracy at {rung.label} against parameters")
        return frozen

    def _give_back(self, study: optuna.Study, trial: optuna.Trial, outcome: str, reason: str) -> None:
        with storage_lock(self.search.config.storage):
            requeue(study, study._storage.get_trial(trial._trial_id), outcome, reason)

    # ------------------------------------------------------------ the loop

    bracket: int = 0
    failures_in_a_row: int = 0
    finished_here: int = 0
    _final_ratio: dict[int, float] = field(default_factory=dict)  # trial id -> final/screening time ratio

    def precision_at(self, rung: Rung) -> str:
        return resolve_precision(self.precision, self.search.device, ranking_only=not rung.final)

    def final_rates(self, top: list[tuple[FrozenTrial, Rates]]) -> list[Rates] | None:
        """The likely finalists' rates at the final rung's precision, where it is not screening's.
        Screening trains in bf16 on CPUs with native bf16 and the finalists in fp32, 1.1-1.5x slower per
        image for these networks (their measured rates alone left the reserve 20 % short), so each
        candidate's ratio is probed once: a few steps in each precision (about 2 s)."""
        s = self.search
        final, screening = self.precision_at(s.final), self.precision_at(s.rungs[0])
        if final == screening:
            return None
        out = []
        for trial, rates in top[: s.final.keep]:
            if trial._trial_id not in self._final_ratio:
                candidate = candidate_of(trial)
                slow = time_steps(candidate, s.data, s.device, PROBE_STEPS, precision=final)[0]
                fast = time_steps(candidate, s.data, s.device, PROBE_STEPS, precision=screening)[0]
                self._final_ratio[trial._trial_id] = slow / fast
            out.append(rates.scaled(self._final_ratio[trial._trial_id]))
        return out

    def run(self, deadline: float | None, trials: int | None) -> str:
        """Work until the plan is done; returns why it stopped: "done" (the final rung of the round
        finished), "trials", "timeout", or "stalled" (the sampler proposes nothing trainable)."""
        s = self.search
        self.bracket = current_bracket(s)
        untrained = 0
        while True:
            check_signal()
            self.retry_stale()
            action, arg = self.next_step(deadline, trials)
            if action == "stop":
                return arg
            if action == "wait":
                time.sleep(WAIT_SECONDS)
                continue
            if action == "promote":
                self.promote(arg)
                continue
            trial = self.ask(arg)
            if trial is None:
                continue
            try:
                frozen = self.run_one(arg, trial)
            except Exception:
                self.failures_in_a_row += 1
                if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                    raise
                continue
            self.failures_in_a_row = 0
            if arg.index == 0:
                untrained = 0 if TrialRecord.of(frozen).trained else untrained + 1
                if untrained >= MAX_UNTRAINED_IN_A_ROW:
                    return "stalled"

    def retry_stale(self) -> None:
        """Queue again the trials of workers that are gone (any worker, any machine)."""
        for study in self.search.studies:
            for number in retry_stale_trials(study, self.search.config.storage):
                self.reporter.message(f"trial {number} of {study.study_name!r} lost its worker; queued again")

    def next_step(self, deadline: float | None, trials: int | None) -> tuple[str, Any]:
        """What to do now, from the state of the studies: ("train", rung), ("promote", rung),
        ("wait", None) or ("stop", why)."""
        s = self.search
        # This round's trials; a queued screening trial (a reference, a retry) joins the round that runs it.
        mine = [[t for t in study.get_trials(deepcopy=False)
                 if TrialRecord.of(t).bracket == self.bracket or (i == 0 and t.state == TrialState.WAITING)]
                for i, study in enumerate(s.studies)]
        for rung in reversed(s.rungs[1:]):  # queued work of a higher rung: promotions and retries
            if any(t.state == TrialState.WAITING for t in mine[rung.index]):
                return "train", rung
        stage = max((r.index for r in s.rungs if any(t.state != TrialState.WAITING for t in mine[r.index])),
                    default=0)
        if stage == 0:
            why = self.screening_closed(deadline, trials, mine[0])
            if why is None:
                return "train", s.rungs[0]  # queued ones (references, retries) first: study.ask() pops them
            if len(s.rungs) == 1:
                return "stop", why
        # Other workers finish the rung before it is ranked; screening trials still queued when
        # this run's screening has closed are left for a later run.
        if any(t.state == TrialState.RUNNING or (stage > 0 and t.state == TrialState.WAITING) for t in mine[stage]):
            return "wait", None
        if stage < len(s.rungs) - 1:
            return ("promote", s.rungs[stage + 1]) if ranked(mine[stage]) else ("stop", "stalled")
        trained_here = any(TrialRecord.of(t).run == s.run_id and t.state != TrialState.WAITING
                           for trials_of_rung in mine for t in trials_of_rung)
        if not trained_here and self.screening_closed(deadline, trials, []) is None:
            # This run arrived after the round's screening had closed (another machine screened it) and
            # only waited for it to end: it has its own trials or time to spend, so it screens a new round.
            self.bracket += 1
            self.reporter.message(f"round {self.bracket - 1} ended without this run; it screens round {self.bracket}")
            return self.next_step(deadline, trials)
        return "stop", "done"

    def screening_closed(self, deadline: float | None, trials: int | None, screened: list[FrozenTrial]) -> str | None:
        """Why this run screens no more candidates, or None while it does."""
        s = self.search
        if trials is not None:
            mine = [t for t in screened if TrialRecord.of(t).run == s.run_id]
            if sum(TrialRecord.of(t).trained or t.state == TrialState.RUNNING for t in mine) >= trials:
                return "trials"
        if deadline is None:
            return None
        now = time.time()
        top = [(t, r) for t, r in ((t, Rates.of(TrialRecord.of(t))) for t in ranked(screened)) if r is not None]
        best = [r for _, r in top]
        if len(s.rungs) == 1:  # start no trial that would end after the deadline (as far as the others say)
            val = len(s.data.val_labels)
            each = sum(r.seconds(s.rungs[0], val) for r in best) / len(best) if best else 0.0
            return "timeout" if now + each >= deadline else None
        if not best:
            return "timeout" if now >= deadline else None
        val, jobs = len(s.data.val_labels), s.config.jobs
        next_one = sum(r.seconds(s.rungs[0], val) for r in best) / len(best) / jobs
        reserve = reserve_seconds(s.rungs, best, val, jobs, self.final_rates(top))
        return "timeout" if now + next_one + reserve >= deadline else None

    def ask(self, rung: Rung) -> optuna.Trial | None:
        """Take the rung's next queued trial or (rung 0) a new sample; None if another worker took it."""
        study = self.search.studies[rung.index]
        with storage_lock(self.search.config.storage), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if rung.index > 0 and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return None
            trial = study.ask()
            beat(self.search.storage, trial._trial_id)  # from now on a dead worker is noticed
        return trial

    def promote(self, to: Rung) -> None:
        """Queue the best of the rung below into ``to``, once: under the lock, what is there counts."""
        s = self.search
        with storage_lock(s.config.storage):
            below = [t for t in s.studies[to.index - 1].get_trials(deepcopy=False)
                     if TrialRecord.of(t).bracket == self.bracket]
            if any(t.state == TrialState.RUNNING for t in below):
                return  # more work appeared meanwhile; the loop comes back
            already = {TrialRecord.of(t).promoted_from for t in s.studies[to.index].get_trials(deepcopy=False)
                       if TrialRecord.of(t).bracket == self.bracket}
            pool = ranked(below)
            chosen = pool[: to.keep]
            for t in chosen:
                if t.number in already:
                    continue
                was = TrialRecord.of(t)
                number = enqueue(s.studies[to.index], t.params,
                                 TrialRecord(rung=to.index, fidelity=to.label, name=was.name, seed=was.seed,
                                             bracket=self.bracket, promoted_from=t.number))
                set_finished_trial_user_attr(s.storage, t._trial_id, "promoted_to", number)
                save_trial_note(s.studies[to.index - 1], t._trial_id)
        self.reporter.message(f"rung {to.index - 1} done: the best {len(chosen)} of {len(pool)} go up to "
                              f"rung {to.index} ({to.label})")


def current_bracket(search: Search) -> int:
    """The round this run works on: the latest one, or a new one if its final rung has finished."""
    latest = max((TrialRecord.of(t).bracket for t in search.studies[0].get_trials(deepcopy=False)), default=0)
    if len(search.rungs) == 1:
        return latest
    finals = [t for t in search.studies[-1].get_trials(deepcopy=False) if TrialRecord.of(t).bracket == latest]
    return latest + 1 if finals and all(t.state.is_finished() for t in finals) else latest


def set_pdeathsig() -> None:
    """Linux: this process gets SIGTERM when its parent dies, so workers never outlive it."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def worker_threads(jobs: int, threads: int | None = None) -> int:
    """Threads per worker: the run's threads (default: every core) shared, so workers never
    oversubscribe the cores (two 2-thread jobs on 2 cores ran 9x slower here)."""
    return max(1, (threads or os.cpu_count() or 1) // jobs)


