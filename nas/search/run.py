"""A search run: open (or create, or finish creating) the search's studies, start the workers, watch
them, and sum up. The pieces live in their own modules of :mod:`nas.search`.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from nas.engine.data import data_files
from nas.engine.splits import Splits
from nas.engine.device import Placement, place
from nas.store.artifacts import check_run_paths
from nas.search.context import Search
from nas.search.opening import (Opened, attach, band_rates, create_or_finish, estimate_rates, final_factor,
                                known_networks, load_data, read_search, screened_trials)
from nas.search.plan import Rates, fit_rungs
from nas.search.processes import run_processes
from nas.search.progress import QuietReporter, Reporter
from nas.store.record import ENDED, TrialRecord
from nas.search.rungs import Rung
from nas.search.settings import SearchConfig
from nas.store.snapshot import kept_snapshot, write_snapshot
from nas.search.signals import Interrupted, handled_signal, install_signal_handlers
from nas.store.storage import make_storage, storage_errors
from nas.store.urls import redact
from nas.store.study import find_study, record_run, retry_stale_trials
from nas.search.worker import Worker, worker_threads


# ---------------------------------------------------------------- a whole run


@dataclass
class SearchSummary:
    study_name: str
    storage: str  # redacted
    new_study: bool
    run_id: str
    stopped: str  # done, trials, timeout, stalled, or the signal that interrupted the run
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)  # this run's trials by outcome, all rungs
    rung_counts: list[dict[str, int]] = field(default_factory=list)
    running_elsewhere: int = 0  # RUNNING trials of other runs (other machines, or dead workers)
    multi_objective: bool = False
    signal: int | None = None  # SIGINT / SIGTERM that interrupted the run
    study: optuna.Study | None = field(default=None, repr=False)  # the main study, to read the results


COUNTED = ("trained", *ENDED)  # "trained": the ones that cost a training run (TRAINED)


def count_run(search: Search, run_id: str) -> tuple[dict[str, int], list[dict[str, int]], int]:
    total = dict.fromkeys(COUNTED, 0)
    per_rung = []
    elsewhere = 0
    for study in search.studies:
        counts = dict.fromkeys(COUNTED, 0)
        for t in study.get_trials(deepcopy=False):
            r = TrialRecord.of(t)
            if t.state == TrialState.RUNNING and r.run != run_id:
                elsewhere += 1
            if r.run != run_id or not t.state.is_finished():
                continue
            counts["trained"] += r.trained
            if r.outcome in counts:
                counts[r.outcome] += 1
        per_rung.append(counts)
        for k, v in counts.items():
            total[k] += v
    return total, per_rung, elsewhere


def run_search(config: SearchConfig, reporter: Reporter | None = None,
               on_start: Any = None, command: str = "") -> SearchSummary:
    """Create, finish creating or resume the search and work on it until its plan is done.

    Everything that can be refused (settings, device, data, paths, a time too short for one
    finalist) is refused before anything is written. ``on_start(search, new, plan_estimate)`` is
    called once the studies are open; ``reporter`` hears of trials and epochs (with several jobs, the
    main process reads them from the storage). Each run is recorded in the main study (``nas:runs``:
    its command, start, wall time, why it stopped), so a result can always say how it was found.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    began = time.time()  # the time asked counts from here: loading the data and timing the plan are in it
    with storage_errors(config.storage):
        opened, data, rungs, estimate = prepare(config, began)
        placement = estimate.placement
        storage = make_storage(config.storage)
        known = known_networks(config, opened, storage, data.info.shape)
        new = create_or_finish(config, opened, storage, data.info.shape, known)
        if not new and not opened.exists:  # another run made the study meanwhile: its settings rule
            opened, data, rungs, estimate = prepare(config, began)
        run_id = uuid.uuid4().hex[:12]
        trials_before = len(find_study(storage, rungs[0].study_name).get_trials(deepcopy=False))
        search = attach(config, opened, run_id, 0, trials_before, storage, data, placement)
        search.rungs, search.band_estimates = rungs, estimate.bands
        search.notes = ([f"known networks queued first: {', '.join(n for n, _ in known.queue + known.earlier)}"]
                        if new and known.queue + known.earlier else []) + known.notes + list(opened.notes)
        if config.jobs > 1:  # the workers train; the main process only watches: no copy of the data on a GPU
            search.data = search.data.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        for study in search.studies:  # a run that starts later also finds what dead workers left
            retry_stale_trials(study, config.storage)
        if on_start is not None:
            on_start(search, new, estimate)
        return work(config, opened, search, trials_before, reporter or QuietReporter(), new, command, began)


@dataclass(frozen=True)
class Estimate:
    """What a typical candidate costs before this run has screened any: overall, and per budget band."""

    placement: Placement  # where the candidates train, resolved once for the run
    rates: Rates | None  # at the screening rung
    bands: list[Rates] | None = None
    final_factor: float = 1.0  # the full-fidelity rung's time per image over screening's (its precision)


def prepare(config: SearchConfig, began: float | None = None) -> tuple[Opened, Splits, list[Rung], Estimate]:
    """Read the search, check what the run needs and plan its rungs, writing nothing. The rungs fit
    the time left of ``config.timeout`` counted from ``began``: loading the data and the probes spend it."""
    opened = read_search(config)
    config.pruner_for(opened.settings)  # a pruner the rungs cannot take fails before anything is written
    placement = place(config.device, config.precision)  # and so does a wrong device or precision
    data, settings = load_data(config, opened.settings, placement.device, new=not opened.exists)  # and bad data files
    if not opened.exists:  # a new study's rungs fit the data it has: none repeats the next on a small set
        opened = replace(opened, settings=settings.fitted(len(data.train_labels), "rungs" in config.settings))
    space, cuts = opened.space.fitted_to(data.info.size)  # a family cut to the images' size, or refused
    size = data.info.size
    opened = replace(opened, space=space, notes=(f"space {space.name} cut to fit {size}x{size} images: "
                                                 f"{', '.join(cuts)}",) if cuts else ())
    inputs = {"search space": Path(opened.space.path) if opened.space.path else None, **data_files(config.data_dir)}
    check_run_paths(config.storage, config.artifacts, inputs)  # and outputs that cannot be written
    if placement.device == "cpu":
        torch.set_num_threads(worker_threads(config.jobs, config.threads))
    screened = screened_trials(config, opened)
    rungs = opened.settings.make_rungs(opened.name, available=len(data.train_labels))
    first = placement.precision_for(ranking_only=not rungs[0].final)
    s = opened.settings
    estimate = estimate_rates(screened, opened.space, data, placement.device, s.budget, first)
    bands = band_rates(screened, opened.space, data, placement.device, s.buckets, first) if config.timeout else None
    factor = final_factor(opened.space, data, placement, s.budget) if len(rungs) > 1 else 1.0
    left = config.timeout - (time.time() - began) if config.timeout and began else config.timeout
    rungs = fit_rungs(rungs, estimate, len(data.val_labels), config.jobs, left,
                      bands=bands, final_factor=factor)  # and a time too short for one finalist
    return opened, data, rungs, Estimate(placement, estimate, bands, factor)


def work(config: SearchConfig, opened: Opened, search: Search, trials_before: int, reporter: Reporter, new: bool,
         command: str, began: float | None = None) -> SearchSummary:
    """Run the workers until the plan is done or a signal comes; record the run; sum it up."""
    start = began or time.time()  # the run's wall time, as it is recorded and as the deadline counts it
    deadline = start + config.timeout if config.timeout else None
    stopped, signum = "done", None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    if main_thread:
        install_signal_handlers()
    try:
        if config.jobs == 1:
            stopped = Worker(search, 0, reporter).run(deadline, config.stop_on_trials)
        else:
            stopped = run_processes(config, opened, search, trials_before, deadline, reporter)
    except (KeyboardInterrupt, Interrupted) as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        stopped = signal.Signals(signum).name
        handled_signal()
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
    counts, per_rung, elsewhere = count_run(search, search.run_id)
    record_run(search.studies[-1], config.storage, {
        "run": search.run_id, "command": command, "started": start, "seconds": round(time.time() - start, 1),
        "stopped": stopped, "timeout": config.timeout, "trials": config.trials, "jobs": config.jobs,
        "threads": worker_threads(config.jobs, config.threads) * config.jobs, "seed": config.seed,
        "device": search.device, "trained": counts["trained"]})
    database = kept_snapshot(config.storage, config.snapshot)
    if database is not None:  # at the run's end, however it ended (a signal too), with its record
        write_snapshot(database)
    return SearchSummary(opened.name, redact(config.storage), new, search.run_id, stopped, time.time() - start, counts,
                         per_rung, elsewhere, opened.settings.multi_objective, signum, search.studies[-1])
