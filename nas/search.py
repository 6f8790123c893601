"""A search run: open (or create, or finish creating) the search's studies, start the workers, watch
them, and sum up. The pieces live in their own modules: settings in :mod:`nas.config`, the study's
life in :mod:`nas.study`, the rungs in :mod:`nas.fidelity`, the ask/evaluate/tell loop in
:mod:`nas.worker`, and queries of the results in :mod:`nas.results`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from nas.config import DEFAULT_SPACE, OBJECTIVES, SearchConfig, SettingError, StudySettings
from nas.data import load_mnist, make_splits
from nas.engine import resolve_device, resolve_precision
from nas.fidelity import Rates, Rung, fit_rungs, make_rungs
from nas.record import TrialRecord
from nas.space import SearchSpace, audit
from nas.study import (SETTINGS_ATTR, SPACE_ATTR, ensure_study, enqueue, find_study, make_storage, redact,
                       retry_stale_trials, sqlite_path, storage_lock)
from nas.worker import (Interrupted, QuietReporter, Reporter, Search, Worker, check_signal, handled_signal,
                        install_signal_handlers, set_pdeathsig, worker_threads)

OBJECTIVE_NAMES = {"accuracy": "validation accuracy", "params": "parameters", "flops": "FLOPs"}
PACKAGED_SPACE = Path(__file__).parent / "spaces" / "mnist_20k.yaml"


def default_space_path() -> Path:
    """The default space file: ``search_spaces/`` where users edit it, else the packaged copy."""
    local = Path(DEFAULT_SPACE)
    return local if local.exists() else PACKAGED_SPACE


# ---------------------------------------------------------------- samplers and pruners


def make_sampler(config: SearchConfig, worker: int, trials_before: int) -> optuna.samplers.BaseSampler:
    # Workers, and runs resuming a study, must not replay the same random proposals.
    seed = config.seed + 1000 * worker + trials_before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if config.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if config.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        # multivariate + group: the space is conditional (blocks, convs per block) and its parameters
        # interact; constant_liar keeps workers (here or on other machines) from proposing alike.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=10,
                                          constant_liar=True)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        # The first trials (the references) run in full and set the bar; no verdict on epoch 1.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


# ---------------------------------------------------------------- opening a search


@dataclass(frozen=True)
class Opened:
    """A search's identity, read before anything is written."""

    name: str
    settings: StudySettings
    space: SearchSpace
    space_text: str
    exists: bool  # the main study is there with its settings


def read_search(config: SearchConfig) -> Opened:
    """Work out the study name, settings and space of this run without writing anything: from the
    study if it exists (checking what was asked explicitly), else from the config's and defaults."""
    asked_space = Path(config.space) if config.space else None
    if asked_space is not None and not asked_space.exists() and config.space == DEFAULT_SPACE:
        asked_space = default_space_path()
    space = SearchSpace.from_file(asked_space) if asked_space else None
    name = config.study or (space.name if space else SearchSpace.from_file(default_space_path()).name)
    stored = None
    path = sqlite_path(config.storage)
    if path is None or path.exists():
        storage = make_storage(config.storage, create=False)
        main = find_study(storage, name)
        if main is not None:
            stored = main.user_attrs.get(SETTINGS_ATTR)
            if stored is None and main.get_trials(deepcopy=False):
                raise SettingError("study", f"study {name!r} in {redact(config.storage)} was not made by nas-search; "
                                   "pick another study name")
    if stored is not None:
        settings = StudySettings.from_dict(stored)
        for key, value in config.settings.items():
            have = getattr(settings, key)
            if (tuple(value) if isinstance(value, list) else value) != have:
                raise SettingError(key, f"study {name!r} was created with {key} {_show(have)}, this run asks for "
                                   f"{_show(value)}; leave it out to resume the study with its own settings, or "
                                   "pick a new study name")
        text = storage.get_study_system_attrs(main._study_id).get(SPACE_ATTR)
        stored_space = SearchSpace.from_text(text, name=settings.space) if text else None
        if space is not None and space.digest != settings.space_digest:
            raise SettingError("space", f"study {name!r} was created with space {settings.space} (digest "
                               f"{settings.space_digest}), this run asks for {space.name} (digest {space.digest}); "
                               "leave it out to resume with the study's own space, or pick a new study name")
        if stored_space is None:
            raise SettingError("study", f"study {name!r} holds no search space; pick another study name")
        return Opened(name, settings, stored_space, text, True)
    space = space or SearchSpace.from_file(default_space_path())
    settings = config.new_settings(space=space.name, space_digest=space.digest)
    fits = audit(space, 300, seed=0, budget=settings.budget)
    if fits["accepted"] == 0:
        raise SettingError("budget", f"none of 300 random candidates of space {space.name} has fewer than "
                           f"{settings.budget:,} parameters (smallest: {fits['smallest']:,}); raise the budget")
    return Opened(name, settings, space, space.text, False)


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def create_or_finish(config: SearchConfig, opened: Opened, storage: optuna.storages.BaseStorage) -> bool:
    """Make the search's studies, settings and queued references, completing whatever a killed
    run left half-made; nothing twice (under the storage lock). Returns whether it was new."""
    directions = [OBJECTIVES[o] for o in opened.settings.objectives]
    rungs = make_rungs(opened.name, opened.settings)
    with storage_lock(config.storage), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # set_metric_names
        main = ensure_study(storage, opened.name, directions)
        new = SETTINGS_ATTR not in main.user_attrs
        if new:
            storage.set_study_system_attr(main._study_id, SPACE_ATTR, opened.space_text)
            main.set_metric_names([OBJECTIVE_NAMES[o] for o in opened.settings.objectives])
            main.set_user_attr(SETTINGS_ATTR, opened.settings.to_dict())  # last: the study is made
        for rung in rungs[:-1]:
            study = ensure_study(storage, rung.study_name, ["maximize"])
            if "rung" not in study.user_attrs:
                study.set_metric_names([f"validation accuracy at {rung.label}"])
                study.set_user_attr("rung", {"search": opened.name, "rung": rung.index, "fidelity": rung.label,
                                             "keeps": rung.keep or "open"})
        if opened.settings.references:
            first = find_study(storage, rungs[0].study_name)
            queued = {TrialRecord.of(t).name for t in first.get_trials(deepcopy=False)}
            for ref_name, params in opened.space.references.items():
                if ref_name not in queued:
                    enqueue(first, params, TrialRecord(name=ref_name))
    return new


def attach(config: SearchConfig, opened: Opened, run_id: str, worker: int, trials_before: int,
           storage: optuna.storages.BaseStorage | None = None) -> Search:
    """Open everything a worker needs, once per process."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = resolve_device(config.device)
    storage = storage or make_storage(config.storage)
    rungs = make_rungs(opened.name, opened.settings)
    pruner = config.pruner_for(opened.settings)
    studies = []
    for rung in rungs:
        sampler = make_sampler(config, worker, trials_before) if rung.index == 0 else \
            optuna.samplers.RandomSampler(seed=config.seed + worker)  # higher rungs only run queued trials
        studies.append(optuna.load_study(study_name=rung.study_name, storage=storage, sampler=sampler,
                                         pruner=make_pruner(pruner, rung.epochs) if rung.final else None))
    s = opened.settings
    data = make_splits(load_mnist(config.data_dir, verify=config.verify_data), s.holdout, s.subset, seed=0)
    return Search(config, opened.name, s, opened.space, storage, rungs, studies, data.to(device), str(device), run_id)


def estimate_rates(search: Search) -> Rates | None:
    """Seconds a typical candidate takes: measured in the study when it has screened some, else
    from a few timed steps of the references."""
    measured = [Rates.of(TrialRecord.of(t)) for t in search.studies[0].get_trials(deepcopy=False)]
    measured = [r for r in measured if r is not None]
    if measured:
        return Rates(sum(r.train_us for r in measured) / len(measured), sum(r.eval_us for r in measured) / len(measured))
    from nas.engine import time_steps

    names = list(search.space.references)[:3]
    if not names:
        return None
    rates = [time_steps(search.space.reference(n), search.data, search.device) for n in names]
    return Rates(sum(r[0] for r in rates) / len(rates), sum(r[1] for r in rates) / len(rates))


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


COUNTED = ("trained", "complete", "pruned", "diverged", "rejected", "duplicate", "failed", "interrupted")


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

    ``on_start(search, new, plan_estimate)`` is called once the studies are open; ``reporter``
    hears of trials and epochs (with several jobs, the main process reads them from the storage).
    Each run is recorded in the main study (``nas:runs``: its command, start, wall time, why it
    stopped), so a result can always say how it was found.
    """
    reporter = reporter or QuietReporter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened = read_search(config)
    resolve_device(config.device)  # a wrong device fails before anything is written
    resolve_precision(config.precision, "cpu")
    load_mnist(config.data_dir, verify=config.verify_data)  # and so do bad data files
    storage = make_storage(config.storage)
    new = create_or_finish(config, opened, storage)
    if not new and not opened.exists:  # another run made the study meanwhile: its settings rule
        opened = read_search(config)
    run_id = uuid.uuid4().hex[:12]
    trials_before = len(find_study(storage, make_rungs(opened.name, opened.settings)[0].study_name)
                        .get_trials(deepcopy=False))
    threads = worker_threads(config.jobs, config.threads)
    if resolve_device(config.device).type == "cpu":
        torch.set_num_threads(threads)
    search = attach(config, opened, run_id, 0, trials_before, storage)
    for study in search.studies:  # a run that starts later also finds what dead workers left
        retry_stale_trials(study, config.storage)
    start = time.time()
    deadline = start + config.timeout if config.timeout else None
    estimate = estimate_rates(search)
    search.rungs = fit_rungs(search.rungs, estimate, len(search.data.val_labels), config.jobs, config.timeout)
    if on_start is not None:
        on_start(search, new, estimate)
    stopped, signum = "done", None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    if main_thread:
        install_signal_handlers()
    try:
        if config.jobs == 1:
            stopped = Worker(search, 0, reporter, config.precision).run(deadline, config.stop_on_trials)
        else:
            stopped = _run_processes(config, opened, search, trials_before, deadline, reporter)
    except (KeyboardInterrupt, Interrupted) as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        stopped = signal.Signals(signum).name
        handled_signal()
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
    counts, per_rung, elsewhere = count_run(search, run_id)
    record_run(search, {"run": run_id, "command": command, "started": start, "seconds": round(time.time() - start, 1),
                        "stopped": stopped, "timeout": config.timeout, "trials": config.trials, "jobs": config.jobs,
                        "threads": worker_threads(config.jobs, config.threads) * config.jobs, "seed": config.seed,
                        "device": search.device, "trained": counts["trained"]})
    return SearchSummary(opened.name, redact(config.storage), new, run_id, stopped, time.time() - start, counts,
                         per_rung, elsewhere, opened.settings.multi_objective, signum, search.studies[-1])


RUNS_ATTR = "nas:runs"


def record_run(search: Search, run: dict[str, Any]) -> None:
    main = search.studies[-1]
    with storage_lock(search.config.storage):
        runs = search.storage.get_study_system_attrs(main._study_id).get(RUNS_ATTR, [])
        search.storage.set_study_system_attr(main._study_id, RUNS_ATTR, [*runs, run])


def runs_of(study: optuna.Study) -> list[dict[str, Any]]:
    """The runs recorded in a search's main study, oldest first."""
    return study._storage.get_study_system_attrs(study._study_id).get(RUNS_ATTR, [])


# ---------------------------------------------------------------- worker processes


def _worker_process(config: SearchConfig, opened: Opened, run_id: str, index: int, trials_before: int,
                    deadline: float | None, rungs: list[Rung]) -> None:
    set_pdeathsig()
    install_signal_handlers()
    if os.getppid() == 1:  # the parent died before we could ask to follow it
        raise SystemExit(143)
    try:
        torch.set_num_threads(worker_threads(config.jobs, config.threads))
        search = attach(config, opened, run_id, index, trials_before)
        search.rungs = rungs  # the plan of the main process
        Worker(search, index, QuietReporter(), config.precision).run(deadline, config.stop_on_trials)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Interrupted as e:
        raise SystemExit(128 + e.signum) from None


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
                    beat = t.system_attrs.get("nas:beat") or {}
                    if "epoch" in beat and self.progress.get(key) != beat["epoch"]:
                        self.progress[key] = beat["epoch"]
                        self.reporter.epoch(rung, t.number, beat["epoch"], beat["of"], None)


def _run_processes(config: SearchConfig, opened: Opened, search: Search, trials_before: int,
                   deadline: float | None, reporter: Reporter) -> str:
    context = multiprocessing.get_context("spawn")  # CUDA and fork do not mix
    processes = [context.Process(target=_worker_process, args=(config, opened, search.run_id, i, trials_before,
                                                               deadline, search.rungs), daemon=True)
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
        raise RuntimeError(f"worker process(es) {failed} stopped with an error (exit codes "
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
