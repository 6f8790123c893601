"""Opening a search: its identity read without writing anything, its studies made (or finished), and
what each worker process opens once.

A search is one Optuna study per rung: the *main* study, named after the search, holds the
full-fidelity rung, the search's settings and its space; screening rungs are ``<name>.rung0``, ...
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import optuna
from optuna.trial import FrozenTrial

from nas.engine.data import load_dataset
from nas.engine.splits import Splits, make_splits
from nas.engine.device import Placement, place
from nas.errors import SettingError
from nas.search.context import Search
from nas.search.plan import Rates, precision_ratio
from nas.arch.budget import check_budget
from nas.arch.presets import load_preset, preset_file, preset_names
from nas.arch.spec import MNIST_SHAPE
from nas.store.record import TrialRecord, candidate_of
from nas.search.rungs import bucket_of, ranked_by_bucket
from nas.search.samplers import make_pruner, make_sampler
from nas.search.settings import OBJECTIVES, SearchConfig, StudySettings
from nas.store.storage import database_state, make_storage, storage_lock
from nas.store.urls import redact
from nas.store.keys import RUNG_ATTR, SETTINGS_ATTR, SPACE_ATTR
from nas.store.study import ensure_study, enqueue, find_study, set_study_system_attr, study_system_attr
from nas.space.audit import audit
from nas.space.inverse import Inexpressible, params_of
from nas.space.space import SearchSpace, space_file

OBJECTIVE_NAMES = {"accuracy": "validation accuracy", "params": "parameters", "flops": "FLOPs"}


@dataclass(frozen=True)
class Opened:
    """A search's identity, read before anything is written."""

    name: str
    settings: StudySettings
    space: SearchSpace
    space_text: str
    exists: bool  # the main study is there with its settings
    notes: tuple[str, ...] = ()  # what the run adapted to its data (a space cut to the images' size)


def read_search(config: SearchConfig) -> Opened:
    """Work out the study name, settings and space of this run without writing anything: from the
    study if it exists (checking what was asked explicitly), else from the config's and defaults."""
    space = SearchSpace.from_file(space_file(config.space)) if config.space else None
    name = config.study or (space.name if space else SearchSpace.from_file(space_file()).name)
    stored = None
    if database_state(config.storage) == "optuna":
        storage = make_storage(config.storage, mode="read")
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
        text = study_system_attr(main, SPACE_ATTR)
        stored_space = SearchSpace.from_text(text, name=settings.space) if text else None
        if space is not None and space.digest != settings.space_digest:
            raise SettingError("space", f"study {name!r} was created with space {settings.space} (digest "
                               f"{settings.space_digest}), this run asks for {space.name} (digest {space.digest}); "
                               "leave it out to resume with the study's own space, or pick a new study name")
        if stored_space is None:
            raise SettingError("study", f"study {name!r} holds no search space; pick another study name")
        return Opened(name, settings, stored_space, text, True)
    space = space or SearchSpace.from_file(space_file())
    settings = config.new_settings(space=space.name, space_digest=space.digest)
    smallest = min(settings.buckets)  # every budget of a front search needs networks of its own
    fits = audit(space, 300, seed=0, budget=smallest, enough=1)  # one fitting candidate is proof enough
    if fits["accepted"] == 0:
        raise SettingError("budgets" if settings.budgets else "budget", f"none of 300 random candidates of space "
                           f"{space.name} has fewer than {smallest:,} parameters (smallest: {fits['smallest']:,}); "
                           f"raise the {'smallest ' if settings.budgets else ''}budget")
    return Opened(name, settings, space, space.text, False)


def _show(value: Any) -> str:
    if value is None:  # an unset subset or budget list: what it means, not Python's None
        return "unset (the default)"
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


@dataclass(frozen=True)
class Known:
    """The networks a search starts from, queued as its first trials, and what could not be queued."""

    queue: list[tuple[str, dict[str, Any]]]  # the references and presets: queued when the study is made
    earlier: list[tuple[str, dict[str, Any]]]  # --warm-start's: queued by any run that asks for them
    notes: list[str]


def best_presets(budgets: tuple[int, ...]) -> list[str]:
    """Each budget band's best shipped preset: the highest measured mean accuracy (its ``measured``)
    among those with ``budgets[i-1] <= params < budgets[i]``."""
    best: dict[int, tuple[float, str]] = {}
    for name in preset_names():
        mean = (preset_file(name).get("measured") or {}).get("mean")
        params = check_budget(load_preset(name).arch, budgets[-1]).params
        if mean is None or params >= budgets[-1]:
            continue
        band = bucket_of(params, budgets)
        best[band] = max(best.get(band, (0.0, "")), (mean, name))
    return [best[band][1] for band in sorted(best)]


def known_networks(config: SearchConfig, opened: Opened, storage: optuna.storages.BaseStorage,
                   shape: tuple[int, int, int] = MNIST_SHAPE) -> Known:
    """Every band's first candidates: the space's references and each band's best shipped preset
    (:func:`best_presets`; MNIST networks: MNIST-shaped data only; ``settings.references``), then, where
    ``config.warm_start`` names an earlier study of the storage, its best full-fidelity trial in each
    budget band. A network the space cannot express is a note, never a silent drop."""
    queue: list[tuple[str, dict[str, Any]]] = []
    earlier: list[tuple[str, dict[str, Any]]] = []
    notes: list[str] = []
    space, settings = opened.space, opened.settings
    if settings.references and shape == MNIST_SHAPE:
        queue += [(name, space.reference_params(name)) for name in space.references]
        for name in best_presets(settings.buckets if len(settings.buckets) > 1 else (settings.budget,)):
            if name in space.references:
                continue
            try:
                queue.append((name, params_of(space, load_preset(name), shape)))
            except Inexpressible as e:
                notes.append(f"preset {name} is not queued: space {space.name} cannot express it ({e})")
    if config.warm_start:
        study = find_study(storage, config.warm_start)
        if study is None or config.warm_start == opened.name:
            raise SettingError("warm_start", f"no earlier study {config.warm_start!r} in {redact(config.storage)} "
                                             "to start from; name another search's study in the same storage")
        buckets = settings.buckets if len(settings.buckets) > 1 else ()
        for band in ranked_by_bucket(study.get_trials(deepcopy=False), buckets):
            for trial in band[:1]:
                name = f"{config.warm_start}#{trial.number}"
                try:
                    earlier.append((name, params_of(space, candidate_of(trial), shape)))
                except ValueError as e:  # Inexpressible, or a trial that holds no candidate
                    notes.append(f"trial {name} is not queued: space {space.name} cannot express it ({e})")
    return Known(queue, earlier, notes)


def create_or_finish(config: SearchConfig, opened: Opened, storage: optuna.storages.BaseStorage,
                     shape: tuple[int, int, int] = MNIST_SHAPE, known: Known | None = None) -> bool:
    """Make the search's studies, settings and queued known networks (:func:`known_networks`),
    completing whatever a killed run left half-made; nothing twice (under the storage lock). Returns
    whether it was new."""
    directions = [OBJECTIVES[o] for o in opened.settings.objectives]
    rungs = opened.settings.make_rungs(opened.name)
    with storage_lock(config.storage), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # set_metric_names
        main = ensure_study(storage, opened.name, directions)
        new = SETTINGS_ATTR not in main.user_attrs
        if new:
            set_study_system_attr(main, SPACE_ATTR, opened.space_text)
            main.set_metric_names([OBJECTIVE_NAMES[o] for o in opened.settings.objectives])
            main.set_user_attr(SETTINGS_ATTR, opened.settings.to_dict())  # last: the study is made
        # A front search ranks every rung on accuracy and size, so the dashboard draws each rung's front.
        objectives = opened.settings.objectives if opened.settings.budgets else ("accuracy",)
        for rung in rungs[:-1]:
            study = ensure_study(storage, rung.study_name, [OBJECTIVES[o] for o in objectives])
            if RUNG_ATTR not in study.user_attrs:
                study.set_metric_names([f"validation accuracy at {rung.label}", *(OBJECTIVE_NAMES[o] for o in
                                                                                   objectives[1:])])
                study.set_user_attr(RUNG_ATTR, {"search": opened.name, "rung": rung.index, "fidelity": rung.label,
                                             "keeps": rung.keep or "open"})
        first = find_study(storage, rungs[0].study_name)
        trials = first.get_trials(deepcopy=False)
        queued = {TrialRecord.of(t).name for t in trials}
        known = known if known is not None else known_networks(config, opened, storage, shape)
        made = not trials or all(TrialRecord.of(t).name for t in trials)  # a run killed while queueing them
        for name, params in (known.queue if made else []) + known.earlier:
            if name not in queued:
                enqueue(first, params, TrialRecord(name=name))
    return new


def load_data(config: SearchConfig, settings: StudySettings, device: str, new: bool = False) -> tuple[Splits, StudySettings]:
    """The search's data split (seeded, the same for every run and machine), on the run's device, and the
    settings it was split with: a ``new`` study that was not asked for a holdout holds out a share of
    the set it has (:meth:`StudySettings.sized_for`)."""
    dataset = load_dataset(config.data_dir, verify=config.verify_data)
    if new and "holdout" not in config.settings:
        settings = settings.sized_for(len(dataset.train_labels))
    data = make_splits(dataset, settings.holdout, settings.subset, seed=0)
    return data.to(device), settings


def attach(config: SearchConfig, opened: Opened, run_id: str, worker: int, trials_before: int,
           storage: optuna.storages.BaseStorage | None = None, data: Splits | None = None,
           placement: Placement | None = None) -> Search:
    """Open everything a worker needs, once per process; ``placement``: the run's, as the main process
    resolved it (resolved here from the config where none is given)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    placement = placement or place(config.device, config.precision)
    storage = storage or make_storage(config.storage)
    rungs = opened.settings.make_rungs(opened.name)
    pruner = config.pruner_for(opened.settings)
    studies = []
    for rung in rungs:
        sampler = make_sampler(config, worker, trials_before) if rung.index == 0 else \
            optuna.samplers.RandomSampler(seed=config.seed + worker)  # higher rungs only run queued trials
        studies.append(optuna.load_study(study_name=rung.study_name, storage=storage, sampler=sampler,
                                         pruner=make_pruner(pruner, rung.epochs) if rung.final else None))
    data = data if data is not None else load_data(config, opened.settings, placement.device)[0]
    return Search(config, opened.name, opened.settings, opened.space, storage, rungs, studies, data, placement, run_id)


def screened_trials(config: SearchConfig, opened: Opened) -> list[FrozenTrial]:
    """The screening rung's trials of an existing search (read only), none for a new one."""
    if not opened.exists:
        return []
    first = find_study(make_storage(config.storage, mode="read"), opened.settings.make_rungs(opened.name)[0].study_name)
    return first.get_trials(deepcopy=False) if first is not None else []


ESTIMATE_CANDIDATES = 3  # typical candidates timed for a new study's plan
ESTIMATE_STEPS = 20  # training steps each: a 10.0 s plan against 10.4 s measured (results/plan-estimate.csv)


def typical_candidates(space: SearchSpace, shape: tuple[int, int, int], budget: int | None,
                       n: int = ESTIMATE_CANDIDATES) -> list[Any]:
    """The first ``n`` random candidates under ``budget`` (seed 0): what a screening rung mostly trains. Not
    the references: the 20,000-parameter ones ran 3x slower than a typical candidate, and a plan made
    from them said 13 candidates at ~104 s where the run then trained 120 at 27-42 s."""
    return list(itertools.islice((c for c, params in random_candidates(space, shape)
                                  if budget is None or params < budget), n))


def estimate_rates(screened: list[FrozenTrial], space: SearchSpace, data: Splits, device: str,
                   budget: int | None = None, precision: str = "fp32") -> Rates | None:
    """Seconds a typical candidate takes at the screening rung: measured in the study when it has
    screened some, else timed on :func:`typical_candidates` in the rung's ``precision`` (one over the
    budget is never trained, so it would only slow the probe)."""
    from nas.engine.trainer import time_steps
    from nas.search.plan import mean_rates

    measured = [Rates.of(TrialRecord.of(t)) for t in screened]
    measured = [r for r in measured if r is not None]
    if measured:
        return mean_rates(measured)
    candidates = typical_candidates(space, data.info.shape, budget)
    return mean_rates([Rates(*time_steps(c, data, device, ESTIMATE_STEPS, precision=precision))
                       for c in candidates]) if candidates else None


def final_factor(space: SearchSpace, data: Splits, placement: Placement, budget: int | None) -> float:
    """How much slower per image the full-fidelity rung trains than screening: 1 where both use one
    precision, else timed on a typical candidate in each (fp32 finalists after bf16 screening: a plan
    that priced them at bf16 rates said ~237 s each where the fresh one said ~355 s)."""
    from nas.engine.trainer import time_steps

    if placement.precision == placement.screening:
        return 1.0
    candidates = typical_candidates(space, data.info.shape, budget, 1)
    if not candidates:
        return 1.0
    slow, fast = (time_steps(candidates[0], data, placement.device, ESTIMATE_STEPS, precision=p)[0]
                  for p in (placement.precision, placement.screening))
    return precision_ratio(slow, fast)


PROBES_PER_BAND = 2  # random candidates timed per budget band before anything is screened
PROBE_PROPOSALS = 2000  # random proposals at most to find them (every band has some in a space that fits it)


def random_candidates(space: SearchSpace, shape: tuple[int, int, int]) -> Iterator[tuple[Any, int]]:
    """Random candidates of ``space`` for data of ``shape``, with their parameter counts (seed 0, at
    most PROBE_PROPOSALS): what the speed probes time before a study has screened anything."""
    from nas.arch.builder import count_params

    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(PROBE_PROPOSALS):
        trial = probe.ask()
        candidate = space.sample(trial, shape)
        probe.tell(trial, 0.0)
        yield candidate, count_params(candidate.arch)


def band_rates(screened: list[FrozenTrial], space: SearchSpace, data: Splits, device: str,
               buckets: tuple[int, ...], precision: str = "fp32") -> list[Rates] | None:
    """A front search's typical rates per budget band: measured on the band's screened candidates
    where there are some, else from a few timed steps of random candidates of the space in the band."""
    if len(buckets) <= 1:
        return None
    from nas.engine.trainer import time_steps
    from nas.search.plan import mean_rates
    from nas.search.rungs import bucket_of

    bands: list[list[Rates]] = [[] for _ in buckets]
    for t in screened:
        r = TrialRecord.of(t)
        if Rates.of(r) is not None and r.params is not None and r.params < buckets[-1]:
            bands[bucket_of(r.params, buckets)].append(Rates.of(r))
    for candidate, params in random_candidates(space, data.info.shape):
        if all(bands):
            break
        band = bucket_of(params, buckets)
        if params < buckets[-1] and len(bands[band]) < PROBES_PER_BAND:
            bands[band].append(Rates(*time_steps(candidate, data, device, ESTIMATE_STEPS, precision=precision)))
    return [mean_rates(b) for b in bands] if all(bands) else None
