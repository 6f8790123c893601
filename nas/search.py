"""The search: Optuna samples candidates from a space, the budget filter rejects the oversized ones,
the trainer trains the rest with pruning, and every trial lands in an Optuna storage (SQLite).

This is the only module that touches ``optuna.Trial``. A trial goes:

1. ``space.sample(trial)`` -> candidate; its parameter count is the constraint
   ``params - budget + 1`` (``trial.set_constraint``; > 0 is infeasible). Over budget: the trial
   ends PRUNED at once, never trained, with ``rejected`` saying why.
2. A candidate equal (spec and recipe) to a finished trained trial reuses that result.
3. Otherwise it trains; each epoch's validation accuracy is reported and the pruner may stop it.

Workers are ask/tell loops. On SQLite, ``study.ask()`` runs under a file lock: two processes
popping the same enqueued trial at once is optuna issue 4002, and SQLite has no row locks.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from nas.budget import DEFAULT_BUDGET, check_budget
from nas.builder import count_flops
from nas.data import DEFAULT_HOLDOUT, Splits, load_mnist, make_splits
from nas.engine import resolve_device, train
from nas.space import SearchSpace
from nas.spec import Candidate

OBJECTIVES = {"accuracy": "maximize", "params": "minimize", "flops": "minimize"}
SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "hyperband", "none")
DEFAULT_STORAGE = "sqlite:///studies/mnist.db"
HEARTBEAT_SECONDS = 30  # a trial whose worker died is retried once after 4 missed beats
MAX_UNTRAINED_IN_A_ROW = 500  # rejected or duplicate proposals before giving up on the sampler
# What a study is created with; resuming with other values would mix incomparable trials.
STUDY_SETTINGS = ("space_digest", "budget", "objectives", "epochs", "holdout", "subset")


@dataclass(frozen=True)
class SearchConfig:
    space: str = "search_spaces/mnist_20k.yaml"
    storage: str = DEFAULT_STORAGE
    study: str | None = None  # default: the space's name
    budget: int = DEFAULT_BUDGET
    epochs: int = 19
    trials: int = 200  # candidates to train in this run (rejected and reused ones not counted)
    timeout: float | None = None  # seconds after which no new trial starts
    sampler: str = "tpe"
    pruner: str | None = None  # default: median with one objective, none with several
    jobs: int = 1
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    subset: int | None = None
    holdout: int = DEFAULT_HOLDOUT
    objectives: tuple[str, ...] = ("accuracy",)
    references: bool = True
    verify_data: bool = True  # False only for tests' small IDX files

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))
        if not self.objectives or self.objectives[0] != "accuracy" or len(set(self.objectives)) != len(self.objectives) \
                or not set(self.objectives) <= set(OBJECTIVES):
            raise ValueError(f"--objectives must be accuracy, optionally followed by params and/or flops "
                             f"(e.g. accuracy,params), got {','.join(self.objectives)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler}")
        if self.pruner is not None and self.pruner not in PRUNERS:
            raise ValueError(f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner}")
        if self.multi_objective and self.pruner not in (None, "none"):
            raise ValueError("Optuna cannot prune trials with several objectives; drop --pruner or use one objective")
        for name, low in (("trials", 1), ("epochs", 1), ("jobs", 1), ("budget", 1), ("holdout", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"--{name} must be at least {low}, got {getattr(self, name)}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"--timeout must be positive, got {self.timeout}")

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def pruner_name(self) -> str:
        return self.pruner or ("none" if self.multi_objective else "median")


# ---------------------------------------------------------------- storage, study, sampler, pruner

def make_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats (a killed worker's trial is retried on the next run)."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 120}}  # wait for the other writers, don't fail
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=4 * HEARTBEAT_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    except Exception as e:  # noqa: BLE001 - sqlalchemy raises many kinds for a bad URL
        raise ValueError(f"cannot open storage {url}: {str(e).splitlines()[0]}") from None


def ask_lock(url: str) -> contextlib.AbstractContextManager:
    """A lock around ``study.ask()`` for SQLite, which cannot lock the trial it pops."""
    if url.startswith("sqlite:///"):
        from filelock import FileLock

        return FileLock(url[len("sqlite:///"):] + ".lock")
    return contextlib.nullcontext()


def make_sampler(config: SearchConfig, worker: int = 0, trials_before: int = 0) -> optuna.samplers.BaseSampler:
    # Workers, and runs resuming a study, must not replay the same random proposals.
    seed = config.seed + 1000 * worker + trials_before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if config.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if config.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        # multivariate + group: the space is conditional (blocks, convs per block) and its
        # parameters interact; constant_liar keeps parallel workers apart.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=10,
                                          constant_liar=config.jobs > 1)


def make_pruner(config: SearchConfig) -> optuna.pruners.BasePruner:
    if config.pruner_name == "median":
        # The first trials (the references) run in full and set the bar; no verdict on epoch 1.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if config.pruner_name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def study_settings(config: SearchConfig, space: SearchSpace) -> dict[str, Any]:
    return {"space": space.name, "space_digest": space.digest, "budget": config.budget,
            "objectives": list(config.objectives), "epochs": config.epochs, "holdout": config.holdout,
            "subset": config.subset}


def open_study(config: SearchConfig, space: SearchSpace, storage: optuna.storages.BaseStorage) -> tuple[optuna.Study, bool]:
    """Create the study (enqueueing the references) or resume it after checking its settings.

    Returns the study and whether it is new. Nothing is written when the settings differ.
    """
    name = config.study or space.name
    wanted = study_settings(config, space)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        study = None
    if study is not None:
        stored = study.user_attrs.get("nas")
        if stored is None:
            raise ValueError(f"study {name!r} in {config.storage} was not made by nas-search; pick another --study")
        for key in STUDY_SETTINGS:
            if stored.get(key) != wanted[key]:
                flag = {"space_digest": "--space", "objectives": "--objectives"}.get(key, f"--{key}")
                was = f"space {stored['space']} (digest {stored['space_digest']})" if key == "space_digest" \
                    else f"{flag} {stored.get(key)}"
                now = f"space {space.name} (digest {space.digest})" if key == "space_digest" else f"{flag} {wanted[key]}"
                raise ValueError(f"study {name!r} in {config.storage} was created with {was}, this run asks for "
                                 f"{now}; run with the study's settings to resume it, or pick a new --study name")
        return study, False
    directions = [OBJECTIVES[o] for o in config.objectives]
    study = optuna.create_study(study_name=name, storage=storage, directions=directions)
    study.set_user_attr("nas", wanted)
    if config.references:
        for ref_name, params in space.references.items():
            study.enqueue_trial(params, user_attrs={"reference": ref_name})
    return study, True


# ---------------------------------------------------------------- one trial

@dataclass
class Worker:
    """Everything a worker process needs to run trials: the study, the space and the data."""

    config: SearchConfig
    run_id: str
    study: optuna.Study
    space: SearchSpace
    data: Splits
    device: str
    storage: optuna.storages.RDBStorage
    lock: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext)

    def evaluate(self, trial: optuna.Trial) -> tuple[TrialState, list[float] | None]:
        """Run one trial; returns the state and values to tell the study."""
        config = self.config
        candidate = self.space.sample(trial)
        candidate = Candidate(candidate.arch, replace(candidate.recipe, epochs=config.epochs),
                              trial.user_attrs.get("reference", ""))
        verdict = check_budget(candidate.arch, config.budget)
        for key, value in (("run", self.run_id), ("trained", False), ("params", verdict.params),
                           ("flops", count_flops(candidate.arch)), ("spec", candidate.to_dict()),
                           ("key", candidate.key)):
            trial.set_user_attr(key, value)
        trial.set_constraint("params", verdict.excess)
        if not verdict.accepted:
            trial.set_user_attr("rejected", verdict.reason)
            return TrialState.PRUNED, None
        earlier = self.find_duplicate(candidate.key, trial.number)
        if earlier is not None:
            return self.reuse(trial, earlier)

        seed = config.seed + trial.number
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("device", self.device)
        trial.set_user_attr("trained", True)

        def on_epoch(m) -> bool:
            if config.multi_objective:  # Optuna keeps no intermediate values for several objectives
                return False
            trial.report(m.val_acc, m.epoch)
            return m.epoch < config.epochs and trial.should_prune()  # a finished run is complete

        result = train(candidate.arch, candidate.recipe, self.data, self.device, seed, on_epoch=on_epoch)
        last = result.epochs[-1]
        for key, value in (("val_acc", last.val_acc), ("test_acc", result.test_acc), ("epochs_run", last.epoch),
                           ("epoch_seconds", [round(s, 3) for s in result.epoch_seconds]),
                           ("val_curve", [m.val_acc for m in result.epochs]), ("stopped", result.stopped)):
            trial.set_user_attr(key, value)
        diverged = not math.isfinite(last.train_loss)
        if result.stopped and not diverged:
            return TrialState.PRUNED, None
        return TrialState.COMPLETE, self.values(last.val_acc, verdict.params, trial.user_attrs["flops"])

    def values(self, val_acc: float, params: int, flops: int) -> list[float]:
        return [{"accuracy": val_acc, "params": params, "flops": flops}[o] for o in self.config.objectives]

    def find_duplicate(self, key: str, number: int) -> FrozenTrial | None:
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if t.number != number and t.user_attrs.get("key") == key and "val_acc" in t.user_attrs:
                return t
        return None

    def reuse(self, trial: optuna.Trial, earlier: FrozenTrial) -> tuple[TrialState, list[float] | None]:
        trial.set_user_attr("duplicate_of", earlier.user_attrs.get("duplicate_of", earlier.number))
        for key in ("val_acc", "test_acc", "epochs_run", "epoch_seconds", "val_curve", "seed", "device", "stopped"):
            if key in earlier.user_attrs:
                trial.set_user_attr(key, earlier.user_attrs[key])
        if not self.config.multi_objective:
            for step, value in sorted(earlier.intermediate_values.items()):
                trial.report(value, step)
        if earlier.state == TrialState.PRUNED:
            return TrialState.PRUNED, None
        return TrialState.COMPLETE, list(earlier.values)

    # ------------------------------------------------------------ the loop

    def trained_in_run(self) -> int:
        return sum(t.user_attrs.get("run") == self.run_id and t.user_attrs.get("trained", False)
                   for t in self.study.get_trials(deepcopy=False))

    def run(self, deadline: float | None, on_finished: Callable[[FrozenTrial], None] | None = None) -> str:
        """Ask, evaluate and tell until the run has trained enough, time is up or the sampler stalls.

        Returns why it stopped.
        """
        untrained_in_a_row = 0
        while True:
            if self.trained_in_run() >= self.config.trials:
                return "trials"
            if deadline is not None and time.time() >= deadline:
                return "timeout"
            if untrained_in_a_row >= MAX_UNTRAINED_IN_A_ROW:
                return "stalled"
            with self.lock, warnings.catch_warnings():
                # This loop records heartbeats itself (see heartbeat()), which Optuna's ask() does not know.
                warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
                trial = self.study.ask()
            with heartbeat(self.storage, trial._trial_id):
                try:
                    state, values = self.evaluate(trial)
                except BaseException as e:
                    trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
                    self.study.tell(trial, state=TrialState.FAIL)
                    raise
            frozen = self.study.tell(trial, values, state=state)
            untrained_in_a_row = 0 if frozen.user_attrs.get("trained") else untrained_in_a_row + 1
            if on_finished is not None:
                on_finished(frozen)


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.RDBStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat while it runs, so a dead worker's trial is noticed and retried."""
    storage.record_heartbeat(trial_id)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def make_worker(config: SearchConfig, run_id: str, index: int, trials_before: int, data: Splits | None = None) -> Worker:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.from_file(config.space)
    device = resolve_device(config.device)
    if device.type == "cpu" and config.jobs > 1:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.jobs))
    storage = make_storage(config.storage)
    study = optuna.load_study(study_name=config.study or space.name, storage=storage,
                              sampler=make_sampler(config, index, trials_before), pruner=make_pruner(config))
    if data is None:
        data = make_splits(load_mnist(config.data_dir, verify=config.verify_data), config.holdout, config.subset,
                           seed=config.seed)
    return Worker(config, run_id, study, space, data.to(device), str(device), storage, ask_lock(config.storage))


def _worker_process(config: SearchConfig, run_id: str, index: int, trials_before: int, deadline: float | None) -> None:
    try:
        make_worker(config, run_id, index, trials_before).run(deadline)
    except KeyboardInterrupt:  # the main process reports the interruption
        raise SystemExit(130) from None


# ---------------------------------------------------------------- a whole run

@dataclass
class SearchSummary:
    study_name: str
    storage: str
    new_study: bool
    run_id: str
    stopped: str
    seconds: float
    counts: dict[str, int]  # trained, complete, pruned, rejected, duplicates, failed (this run)
    multi_objective: bool


def run_counts(study: optuna.Study, run_id: str) -> dict[str, int]:
    counts = dict.fromkeys(("trained", "complete", "pruned", "rejected", "duplicates", "failed"), 0)
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("run") != run_id or not t.state.is_finished():
            continue
        trained = bool(t.user_attrs.get("trained"))
        counts["trained"] += trained
        counts["complete"] += trained and t.state == TrialState.COMPLETE
        counts["pruned"] += trained and t.state == TrialState.PRUNED
        counts["rejected"] += "rejected" in t.user_attrs
        counts["duplicates"] += "duplicate_of" in t.user_attrs
        counts["failed"] += t.state == TrialState.FAIL
    return counts


def run_search(config: SearchConfig, on_finished: Callable[[FrozenTrial], None] | None = None,
               on_start: Callable[[optuna.Study, bool, str], None] | None = None) -> SearchSummary:
    """Create or resume the study and train ``config.trials`` more candidates in it.

    ``on_finished`` is called with each trial of this run as it finishes (in this process; with
    several jobs, the main process watches the storage and calls it).
    """
    space = SearchSpace.from_file(config.space)
    resolve_device(config.device)  # a wrong --device fails before the study is touched,
    data = make_splits(load_mnist(config.data_dir, verify=config.verify_data),  # so do bad data files
                       config.holdout, config.subset, seed=config.seed)  # and impossible split sizes
    storage = make_storage(config.storage)
    study, new = open_study(config, space, storage)
    run_id = uuid.uuid4().hex[:12]
    if on_start is not None:
        on_start(study, new, run_id)
    start = time.time()
    deadline = start + config.timeout if config.timeout else None
    trials_before = len(study.get_trials(deepcopy=False))
    if config.jobs == 1:
        stopped = make_worker(config, run_id, 0, trials_before, data).run(deadline, on_finished)
    else:
        stopped = _run_processes(config, run_id, trials_before, deadline, study, on_finished)
    return SearchSummary(study.study_name, config.storage, new, run_id, stopped, time.time() - start,
                         run_counts(study, run_id), config.multi_objective)


def _run_processes(config: SearchConfig, run_id: str, trials_before: int, deadline: float | None, study: optuna.Study,
                   on_finished: Callable[[FrozenTrial], None] | None) -> str:
    context = multiprocessing.get_context("spawn")  # CUDA and fork do not mix
    processes = [context.Process(target=_worker_process, args=(config, run_id, i, trials_before, deadline),
                                 daemon=True)
                 for i in range(config.jobs)]
    for p in processes:
        p.start()
    seen: set[int] = set()

    def report_new() -> None:
        for t in study.get_trials(deepcopy=False):
            if t.number not in seen and t.state.is_finished() and t.user_attrs.get("run") == run_id:
                seen.add(t.number)
                if on_finished is not None:
                    on_finished(t)

    try:
        while any(p.is_alive() for p in processes):
            time.sleep(2)
            report_new()
    finally:
        for p in processes:
            if p.is_alive():
                p.terminate()
            p.join()
    report_new()
    failed = [i for i, p in enumerate(processes) if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"worker process(es) {failed} failed; see their messages above")
    return "trials" if run_counts(study, run_id)["trained"] >= config.trials else "timeout"


# ---------------------------------------------------------------- results

def trials_table(study: optuna.Study) -> Any:
    """One row per trained (or reused) trial: number, state, val/test accuracy, params, FLOPs, epochs,
    seconds, name."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if "val_acc" not in a:
            continue
        rows.append({"trial": t.number, "state": t.state.name, "val_acc": a.get("val_acc"),
                     "test_acc": a.get("test_acc"), "params": a.get("params"), "flops": a.get("flops"),
                     "epochs": a.get("epochs_run"), "seconds": round(sum(a.get("epoch_seconds", [])), 1),
                     "name": a.get("reference") or (f"=#{a['duplicate_of']}" if "duplicate_of" in a else "")})
    return pd.DataFrame(rows, columns=["trial", "state", "val_acc", "test_acc", "params", "flops", "epochs",
                                       "seconds", "name"])


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best feasible trial (one objective) or the feasible Pareto front (several)."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.user_attrs.get("params", 0))
    try:
        return [study.best_trial]
    except ValueError:
        return []


def candidate_of(trial: FrozenTrial) -> Candidate:
    """Rebuild a trial's candidate from the study alone."""
    if "spec" not in trial.user_attrs:
        raise ValueError(f"trial {trial.number} holds no spec (it was rejected or failed before sampling)")
    return Candidate.from_dict(trial.user_attrs["spec"])
