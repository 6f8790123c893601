"""Worker processes on one machine (``jobs``): started with spawn, watched from the storage, stopped
together; each dies with its parent."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
import os
import signal
import sys
import time
from typing import Any

import torch
from optuna.trial import TrialState

from nas.engine.device import Placement, worker_device
from nas.errors import SettingError
from nas.search.context import Search
from nas.search.opening import Opened, attach
from nas.search.progress import QuietReporter, Reporter
from nas.store.record import TrialRecord
from nas.search.rungs import Rung
from nas.search.settings import SearchConfig
from nas.search.signals import Interrupted, check_signal, handled_signal, install_signal_handlers, set_pdeathsig
from nas.store.study import progress_of, retry_stale_trials
from nas.search.worker import Worker, worker_threads


class SearchStopped(ValueError):
    """A worker process stopped with an error; the study is intact and the same command resumes."""


def _worker_process(config: SearchConfig, opened: Opened, run_id: str, index: int, trials_before: int,
                    deadline: float | None, rungs: list[Rung], placement: Placement,
                    band_estimates: list | None = None) -> None:
    set_pdeathsig()
    install_signal_handlers()
    if os.getppid() == 1:  # the parent died before we could ask to follow it
        raise SystemExit(143)
    try:
        torch.set_num_threads(worker_threads(config.jobs, config.threads))
        if placement.device == "cuda":  # no GPU named: one GPU per worker where there are several
            placement = replace(placement, device=worker_device("cuda", index, torch.cuda.device_count()))
        search = attach(config, opened, run_id, index, trials_before, placement=placement)
        search.rungs, search.band_estimates = rungs, band_estimates  # the plan of the main process
        Worker(search, index, QuietReporter()).run(deadline, config.stop_on_trials)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Interrupted as e:
        raise SystemExit(128 + e.signum) from None
    except SettingError as e:  # the database went away, the disk is full: one line, as the main process says it
        print(f"nas-search: worker {index}: {e.message}", file=sys.stderr)
        raise SystemExit(2) from None


class Watcher:
    """The main process's view of its workers: finished trials and epoch progress, from the storage."""

    def __init__(self, search: Search, reporter: Reporter) -> None:
        self.search, self.reporter = search, reporter
        self.seen: set[tuple[int, int]] = set()
        self.progress: dict[tuple[int, int], Any] = {}
        self.rungs_seen: set[int] = set()

    def poll(self) -> None:
        s = self.search
        for rung, study in zip(s.rungs, s.studies):
            for t in study.get_trials(deepcopy=False):
                r = TrialRecord.of(t)
                if r.run != s.run_id:
                    continue
                key = (rung.index, t.number)
                if rung.index > 0 and rung.index not in self.rungs_seen:
                    self.rungs_seen.add(rung.index)
                    self.reporter.message(f"rung {rung.index - 1} done: candidates go up to rung {rung.index} "
                                          f"({rung.label})")
                if t.state.is_finished() and key not in self.seen:
                    self.seen.add(key)
                    self.reporter.trial_finished(rung, t)
                elif t.state == TrialState.RUNNING:
                    progress = progress_of(t)
                    if progress is not None and self.progress.get(key) != progress[0]:
                        self.progress[key] = progress[0]
                        self.reporter.epoch(rung, t.number, *progress, None)


def run_processes(config: SearchConfig, opened: Opened, search: Search, trials_before: int,
                   deadline: float | None, reporter: Reporter) -> str:
    context = multiprocessing.get_context("spawn")  # CUDA and fork do not mix
    processes = [context.Process(target=_worker_process, args=(config, opened, search.run_id, i, trials_before,
                                                               deadline, search.rungs, search.placement,
                                                               search.band_estimates), daemon=True)
                 for i in range(config.jobs)]
    for p in processes:
        p.start()
    watcher = Watcher(search, reporter)
    interrupted: BaseException | None = None
    while True:
        try:
            while any(p.is_alive() for p in processes):
                time.sleep(1.0)
                check_signal()
                watcher.poll()
                if any(p.exitcode not in (None, 0) for p in processes):  # a worker died: its trial goes back now
                    for study in search.studies:
                        retry_stale_trials(study, config.storage)
            break
        except (KeyboardInterrupt, Interrupted) as e:
            # Ctrl-C reaches the workers too (same process group); SIGTERM is passed on. Each worker
            # queues its trial again and exits; then the summary.
            interrupted = interrupted or e
            handled_signal()
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            for p in processes:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)
            _join(processes, 60)
            break
    watcher.poll()
    for study in search.studies:  # a worker that died without a word: its trial goes back in the queue
        retry_stale_trials(study, config.storage)
    if interrupted is not None:
        raise interrupted
    failed = [i for i, p in enumerate(processes) if p.exitcode != 0]
    if failed:
        raise SearchStopped(f"worker process(es) {failed} stopped with an error (exit codes "
                            f"{[processes[i].exitcode for i in failed]}); run the same command again to resume")
    return "done" if len(search.rungs) > 1 else ("trials" if config.stop_on_trials is not None else "timeout")


def _join(processes: list, seconds: float) -> None:
    end = time.time() + seconds
    for p in processes:
        p.join(max(0.0, end - time.time()))
    for p in processes:
        if p.is_alive():
            p.kill()
            p.join()
