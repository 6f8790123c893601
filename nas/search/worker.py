"""The worker's loop: a small state machine over the rungs of the fidelity plan.

The loop (:meth:`Worker.run`) is re-read from the storage at every step, so any number of workers on
any number of machines cooperate through the database alone: run a queued trial of a higher rung if
there is one; else promote a finished rung; else screen another candidate while this run's trials
or time last; else wait for the others. Each trial itself is :mod:`nas.search.trial`'s.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.engine.device import default_threads
from nas.engine.trainer import time_steps
from nas.search.context import Search
from nas.store.dashboard import save_trial_note
from nas.search.plan import Rates, precision_ratio, reserve_seconds, screening_fits
from nas.search.progress import QuietReporter, Reporter
from nas.store.record import TrialRecord, candidate_of, key_of, update_record
from nas.search.rungs import Rung, promoted, ranked, ranked_by_bucket
from nas.search.signals import check_signal
from nas.store.snapshot import EVERY_SECONDS, kept_snapshot, write_snapshot
from nas.store.storage import DATABASE_WAIT_SECONDS, connection_lost, disk_full, storage_lock, wait_for_database
from nas.store.study import beat, enqueue, retry_stale_trials
from nas.search.trial import TrialRunner

MAX_UNTRAINED_IN_A_ROW = 500  # rejected or duplicate proposals before giving up on the sampler
MAX_FAILURES_IN_A_ROW = 3  # trials ending in an error before the worker gives up (each is retried later)
WAIT_SECONDS = 2.0  # poll interval while other workers finish a rung
PROBE_STEPS = 40  # training steps of each precision that measure a candidate's fp32/bf16 time ratio
# A front search's proposals turned away in a row for their band's share, after which the next come
# from random sampling until one fits: the sampler, fitted on every band, keeps proposing the bands
# it has seen do well (2 of 214 proposals fell under 1,500 parameters), random sampling reaches each
# band of the space in proportion to its size (1 in 11 under 2,000 in mnist_front).
SAMPLER_TRIES = 10


@dataclass
class Worker:
    search: Search
    index: int = 0
    reporter: Reporter = field(default_factory=QuietReporter)
    bracket: int = 0
    failures_in_a_row: int = 0
    untrained: int = 0  # screening proposals in a row that trained nothing (rejected, duplicates)
    _final_ratio: dict[str | None, float] = field(default_factory=dict)  # candidate key -> final/screening time ratio
    _snapshot_at: float = field(default_factory=time.time)
    _closed_said: bool = False  # the line that says why this run's screening closed on time

    def __post_init__(self) -> None:
        self.runner = TrialRunner(self.search, self.reporter, watch=self.retry_stale)
        self.random = optuna.samplers.RandomSampler(seed=self.search.config.seed + 1000 * self.index + 999)

    def final_rates(self, top: list[list[tuple[FrozenTrial, Rates]]]) -> list[list[Rates]] | None:
        """The likely finalists' rates at the final rung's precision, where it is not screening's.
        Screening trains in bf16 on CPUs with native bf16 and the finalists in fp32, 1.1-1.5x slower per
        image for these networks (their measured rates alone left the reserve 20 % short), so each
        candidate's ratio is probed once: a few steps in each precision (about 2 s). ``top``: each
        budget's band, best first."""
        s = self.search
        final, screening = s.precision_at(s.final), s.precision_at(s.rungs[0])
        if final == screening:
            return None
        return [[rates.scaled(self._ratio(trial, final, screening)) for trial, rates in band[: s.final.keep]]
                for band in top]

    def _ratio(self, trial: FrozenTrial, final: str, screening: str) -> float:
        key = key_of(trial)  # the ratio is the candidate's: keyed by what it is
        if key not in self._final_ratio:
            s = self.search
            candidate = candidate_of(trial)
            slow = time_steps(candidate, s.data, s.device, PROBE_STEPS, precision=final)[0]
            fast = time_steps(candidate, s.data, s.device, PROBE_STEPS, precision=screening)[0]
            self._final_ratio[key] = precision_ratio(slow, fast)
        return self._final_ratio[key]

    def run(self, deadline: float | None, trials: int | None) -> str:
        """Work until the plan is done; returns why it stopped: "done" (the final rung of the round
        finished), "trials", "timeout", or "stalled" (the sampler proposes nothing trainable). A database
        that stops answering is waited for (``DATABASE_WAIT_SECONDS``), then the loop goes on where
        the storage says it is; a trial whose result could not be written is queued again."""
        self.bracket = current_bracket(self.search)
        self.untrained = 0
        while True:
            check_signal()
            try:
                stopped = self.step(deadline, trials)
            except Exception as e:
                if not connection_lost(e):
                    raise
                self.reporter.message(f"the database stopped answering ({type(e).__name__}); waiting up to "
                                      f"{DATABASE_WAIT_SECONDS:.0f} s for it")
                wait_for_database(self.search.storage, self.search.config.storage)
                self.reporter.message("the database answers again; going on")
                continue
            if stopped is not None:
                return stopped

    def step(self, deadline: float | None, trials: int | None) -> str | None:
        """One step of the loop; returns why the run stops, or None to go on."""
        self.retry_stale()
        action, arg = self.next_step(deadline, trials)
        if action == "stop":
            return arg
        if action == "wait":
            time.sleep(WAIT_SECONDS)
        elif action == "promote":
            self.promote(arg)
        elif (trial := self.ask(arg)) is not None:
            try:
                frozen = self.runner.run(arg, trial, self.bracket)
            except Exception as e:
                if connection_lost(e) or disk_full(e):
                    raise
                self.failures_in_a_row += 1
                if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                    raise
                return None
            self.failures_in_a_row = 0
            self.keep_snapshot(arg.final)
            if arg.index == 0:
                self.untrained = 0 if TrialRecord.of(frozen).trained else self.untrained + 1
                if self.untrained >= MAX_UNTRAINED_IN_A_ROW:
                    return "stalled"
        return None

    def keep_snapshot(self, final: bool) -> None:
        """Rewrite the study's snapshot (the form a repository keeps) after a full-fidelity trial, or
        a trial ``EVERY_SECONDS`` after the last one; one worker per machine writes it."""
        database = kept_snapshot(self.search.config.storage, self.search.config.snapshot)
        if database is None or self.index != 0 or not (final or time.time() - self._snapshot_at >= EVERY_SECONDS):
            return
        write_snapshot(database)
        self._snapshot_at = time.time()

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
            if why == "timeout" and not self._closed_said:  # "timeout" comes only with a deadline
                self._closed_said = True
                self.say_screening_closed(deadline, mine[0])
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
        if self.screened_none(mine, deadline, trials):
            # This run arrived after the round's screening had closed (another machine screened it) and
            # only waited for it to end, or helped with its later rungs: it has its own candidates or time
            # to spend, so it screens a new round.
            self.bracket += 1
            self.reporter.message(f"round {self.bracket - 1} was screened without this run; it screens round "
                                  f"{self.bracket}")
            return self.next_step(deadline, trials)
        return "stop", "done"

    def screened_none(self, mine: list[list[FrozenTrial]], deadline: float | None, trials: int | None) -> bool:
        """Whether this run has screened nothing yet and still has candidates (``trials``) or time to."""
        s = self.search
        screened = [t for t in s.studies[0].get_trials(deepcopy=False) if TrialRecord.of(t).run == s.run_id]
        if trials is not None:
            return not screened
        trained_here = any(TrialRecord.of(t).run == s.run_id and t.state != TrialState.WAITING
                           for trials_of_rung in mine for t in trials_of_rung)
        return not trained_here and self.screening_closed(deadline, None, []) is None

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
        top = self.ranked_rates(screened)
        best = [r for band in top for _, r in band]
        if len(s.rungs) == 1:  # start no trial that would end after the deadline (as far as the others say)
            val = len(s.data.val_labels)
            each = sum(r.seconds(s.rungs[0], val) for r in best) / len(best) if best else 0.0
            return "timeout" if now + each >= deadline else None
        if not best:
            return "timeout" if now >= deadline else None
        val, jobs = len(s.data.val_labels), s.config.jobs
        next_one = sum(r.seconds(s.rungs[0], val) for r in best) / len(best) / jobs
        bands = [[r for _, r in band] for band in top]
        left = deadline - now - next_one
        return None if screening_fits(s.rungs, bands, val, jobs, left, self.final_rates(top),
                                     s.band_estimates) else "timeout"

    def ranked_rates(self, screened: list[FrozenTrial]) -> list[list[tuple[FrozenTrial, Rates]]]:
        """Each budget's band of screened trials with their measured rates, best first."""
        return [[(t, r) for t, r in ((t, Rates.of(TrialRecord.of(t))) for t in band) if r is not None]
                for band in ranked_by_bucket(screened, self.search.final.buckets)]

    def say_screening_closed(self, deadline: float, screened: list[FrozenTrial]) -> None:
        """One line with what closed screening: the time the later rungs are reckoned to need against
        the time left (a reckoning several times too high ended a 5-minute run at a third of it)."""
        s = self.search
        top = self.ranked_rates(screened)
        if len(s.rungs) == 1 or not any(top):
            return
        bands, val = [[r for _, r in band] for band in top], len(s.data.val_labels)
        final = self.final_rates(top)
        need = reserve_seconds(s.rungs, bands, val, s.config.jobs, final, s.band_estimates, more=0)
        ratios = sorted({round(r, 2) for r in self._final_ratio.values()})
        self.reporter.message(f"screening closed after {sum(map(len, bands))} candidates: the later rungs need "
                              f"about {need:,.0f} s, {max(0.0, deadline - time.time()):,.0f} s are left"
                              + (f" (final/screening time ratio {', '.join(f'{r:g}' for r in ratios)})"
                                 if ratios else ""))

    def ask(self, rung: Rung) -> optuna.Trial | None:
        """Take the rung's next queued trial or (rung 0) a new sample; None if another worker took it."""
        study = self.search.studies[rung.index]
        with storage_lock(self.search.config.storage), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if rung.index > 0 and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return None
            sampler = study.sampler
            if rung.index == 0 and self.runner.share_waits >= SAMPLER_TRIES:
                study.sampler = self.random
            try:
                trial = study.ask()
            finally:
                study.sampler = sampler
            # In the same hold of the lock: a trial seen without a beat under the lock is a dead
            # worker's (study.is_stale), and from now on a dead worker is noticed by its beat.
            beat(trial)
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
            chosen = promoted(below, to)
            for t in chosen:
                if t.number in already:
                    continue
                was = TrialRecord.of(t)
                number = enqueue(s.studies[to.index], t.params,
                                 TrialRecord(rung=to.index, fidelity=to.label, name=was.name, seed=was.seed,
                                             bracket=self.bracket, promoted_from=t.number))
                update_record(s.studies[to.index - 1], t, promoted_to=number)
                save_trial_note(s.studies[to.index - 1], t)
        self.reporter.message(f"rung {to.index - 1} done: the best {len(chosen)} of {len(pool)} go up to "
                              f"rung {to.index} ({to.label})")


def current_bracket(search: Search) -> int:
    """The round this run works on: the latest one, or a new one if its final rung has finished."""
    latest = max((TrialRecord.of(t).bracket for t in search.studies[0].get_trials(deepcopy=False)), default=0)
    if len(search.rungs) == 1:
        return latest
    finals = [t for t in search.studies[-1].get_trials(deepcopy=False) if TrialRecord.of(t).bracket == latest]
    return latest + 1 if finals and all(t.state.is_finished() for t in finals) else latest


def worker_threads(jobs: int, threads: int | None = None) -> int:
    """Threads per worker: the run's threads (default: ``default_threads()``) shared, so workers never
    oversubscribe the cores (two 2-thread jobs on 2 cores ran 9x slower here)."""
    return max(1, (threads or default_threads()) // jobs)


