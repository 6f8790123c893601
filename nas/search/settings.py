"""The settings of a search, each default in one place. Library errors name the parameter
(:class:`~nas.errors.SettingError`); the command line turns the name into its flag.

:class:`StudySettings` are fixed when a study is created and stored in it; a resumed run takes
them from the study. :class:`SearchConfig` is one run: how long, how many workers, which device,
and any study settings the caller asked for explicitly (``settings``), which must agree with a
stored study's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from nas.engine.device import DEFAULT_DEVICE, DEFAULT_PRECISION
from nas.errors import SettingError
from nas.search.rungs import Rung, check_rungs, fitting_rungs, make_rungs
from nas.arch import MAX_EPOCHS
from nas.arch.budget import DEFAULT_BUDGET
from nas.arch.checks import is_int
from nas.arch.spec import DEFAULT_HOLDOUT, MNIST_TRAIN_IMAGES
from nas.store.urls import DEFAULT_STORAGE

OBJECTIVES = {"accuracy": "maximize", "params": "minimize", "flops": "minimize"}
SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "hyperband", "none")
DEFAULT_TRIALS = 200  # screening candidates when a run gives neither trials nor a timeout
MAX_IMAGES = MNIST_TRAIN_IMAGES
MAX_SEED = 2**31 - 1  # seeds torch and Optuna both take
MAX_THREADS = 1024
HOLDOUT_SHARE = 6  # a new study holds out a sixth of a set smaller than MNIST (10,000 of 60,000)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if not is_int(value) or value < low or (high is not None and value > high):
        bound = f"between {low:,} and {high:,}" if high is not None else f"at least {low:,}"
        raise SettingError(name, f"must be an integer {bound}, got {value!r}")


@dataclass(frozen=True)
class StudySettings:
    """What a search is created with and keeps; comparing results needs them equal."""

    space: str = "mnist_20k"  # the space's name; its text is stored in the study
    space_digest: str = ""
    budget: int = DEFAULT_BUDGET  # candidates need fewer parameters
    budgets: tuple[int, ...] = ()  # a front search: the best network under each of these (budget: the largest)
    epochs: int = 15  # of the full-fidelity (last) rung
    rungs: tuple[str, ...] = ("2x10000", "2")  # screening rungs before the last, EPOCHS[xIMAGES]: benchmarks/fidelity.py
    promote: int = 4  # each rung trains the best 1/promote of the rung below
    finalists: int = 3  # candidates trained at full fidelity per round (per budget of a front search)
    holdout: int = DEFAULT_HOLDOUT  # validation images held out of the 60,000 training images
    subset: int | None = None  # train on at most this many of the remaining images
    objectives: tuple[str, ...] = ("accuracy",)
    references: bool = True  # the study starts by training the known networks: references and presets

    def __post_init__(self) -> None:
        object.__setattr__(self, "rungs", tuple(self.rungs))
        object.__setattr__(self, "budgets", tuple(self.budgets))
        if not isinstance(self.references, bool):
            raise SettingError("references", f"must be true or false, got {self.references!r}")
        object.__setattr__(self, "objectives", tuple(self.objectives))
        self._check_budgets()  # first: the budget of a search over budgets is their largest
        _check_int("budget", self.budget, 1)
        _check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        _check_int("promote", self.promote, 2, 100)
        _check_int("finalists", self.finalists, 1, 1000)
        _check_int("holdout", self.holdout, 1, MAX_IMAGES - 1)
        if self.subset is not None:
            _check_int("subset", self.subset, 1, MAX_IMAGES - 1)
        o = self.objectives
        if not o or o[0] != "accuracy" or len(set(o)) != len(o) or not set(o) <= set(OBJECTIVES):
            raise SettingError("objectives", "must be accuracy, optionally followed by params and/or flops "
                               f"(e.g. accuracy,params), got {','.join(map(str, o))}")
        if self.budgets and o not in (("accuracy", "params"), ("accuracy", "flops")):
            raise SettingError("objectives", "a search over several budgets ranks accuracy against one cost, params "
                               f"(the default) or flops, got {','.join(map(str, o))}")
        if len(o) > 1 and self.rungs and not self.budgets:
            raise SettingError("rungs", "a Pareto search (several objectives) trains at one fidelity; "
                               "use no screening rungs (rungs none), or give `budgets` for one with rungs")
        check_rungs(self.rungs, self.epochs, self.train_images)

    def _check_budgets(self) -> None:
        b = self.budgets
        if not b:
            return
        if not all(is_int(v) and v >= 100 for v in b) or list(b) != sorted(set(b)) or len(b) > 10:
            raise SettingError("budgets", "must be 1 to 10 increasing parameter counts of at least 100 (e.g. "
                               f"2000,4000,8000,20000), got {','.join(map(str, b))}")
        if self.budget != b[-1]:
            raise SettingError("budget", f"is the largest of `budgets` ({b[-1]:,}) in a search over budgets; "
                               f"leave it out, got {self.budget:,}")

    @property
    def buckets(self) -> tuple[int, ...]:
        """The budgets whose best networks the search looks for: each gets its own finalists."""
        return self.budgets or (self.budget,)

    @property
    def train_images(self) -> int:
        """Training images of the full-fidelity rung."""
        left = MAX_IMAGES - self.holdout
        return min(left, self.subset) if self.subset else left

    def sized_for(self, images: int) -> StudySettings:
        """A new study on a set of ``images`` training images whose holdout was not asked for: a sixth of
        them held out for validation (MNIST's 10,000 of 60,000), never more than the default's 10,000."""
        return dataclasses.replace(self, holdout=min(self.holdout, images // HOLDOUT_SHARE))

    def fitted(self, available: int, asked_rungs: bool) -> StudySettings:
        """The settings of a new study on data of ``available`` training images: on a set smaller than
        the rungs assume, the default screening rungs that would cost no less than the rung after them
        (capped at the images there are) are left out; rungs asked for are refused instead."""
        images = min(self.train_images, available)
        try:
            check_rungs(self.rungs, self.epochs, images)
        except SettingError as e:
            if asked_rungs:
                raise SettingError("rungs", f"{e.message} (on the data's {images:,} training images)") from None
            return dataclasses.replace(self, rungs=fitting_rungs(self.rungs, self.epochs, images))
        return self

    def make_rungs(self, name: str, available: int | None = None) -> list[Rung]:
        """The rungs of the search named ``name``: its screening rungs, then full fidelity; with
        ``available``, the data's training images (a set smaller than MNIST trains on all it has)."""
        images = self.train_images if available is None else min(self.train_images, available)
        return make_rungs(name, self.rungs, self.epochs, images, self.finalists, self.promote, self.buckets)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


ASKABLE_SETTINGS = tuple(f.name for f in dataclasses.fields(StudySettings) if f.name not in ("space", "space_digest"))


@dataclass(frozen=True)
class SearchConfig:
    """One run of a search."""

    storage: str = DEFAULT_STORAGE
    study: str | None = None  # default: the space's name
    space: str | None = None  # space file or shipped name; default: the study's own (resume), else mnist_20k
    settings: dict[str, Any] = field(default_factory=dict)  # study settings asked for explicitly
    trials: int | None = None  # screening candidates to train in this run
    timeout: float | None = None  # seconds for this run, the full-fidelity rung included
    sampler: str = "tpe"
    pruner: str | None = None  # default: median at one fidelity and one objective, else none
    jobs: int = 1  # worker processes on this machine
    threads: int | None = None  # CPU threads for this run, shared by its workers; default: every core
    seed: int = 0
    device: str = DEFAULT_DEVICE
    precision: str = DEFAULT_PRECISION  # see nas.engine.device
    data_dir: str | None = None
    artifacts: str | None = None  # folder of the trials' weights; default beside the storage (nas.artifacts)
    verify_data: bool = True  # False only for tests' small IDX files
    warm_start: str | None = None  # an earlier study of the storage: its best trial per budget band is queued
    snapshot: bool = False  # keep NAME.db.gz beside the SQLite file, current as the search goes (to commit)

    def __post_init__(self) -> None:
        unknown = set(self.settings) - set(ASKABLE_SETTINGS)
        if unknown:
            raise SettingError(sorted(unknown)[0], f"is not a study setting; known: {', '.join(ASKABLE_SETTINGS)}")
        self.new_settings()  # each value checked now, before anything is opened
        if self.trials is not None:
            _check_int("trials", self.trials, 1, 1_000_000)
        if self.timeout is not None and not (isinstance(self.timeout, (int, float)) and math.isfinite(self.timeout)
                                             and 0 < self.timeout <= 30 * 86400):
            raise SettingError("timeout", f"must be a number of seconds between 0 and 30 days, got {self.timeout!r}")
        _check_int("jobs", self.jobs, 1, 64)
        if self.threads is not None:
            _check_int("threads", self.threads, 1, MAX_THREADS)
        _check_int("seed", self.seed, 0, MAX_SEED)
        if self.sampler not in SAMPLERS:
            raise SettingError("sampler", f"must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.pruner is not None and self.pruner not in PRUNERS:
            raise SettingError("pruner", f"must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.study is not None and (not self.study.strip() or not self.study.isprintable() or len(self.study) > 200):
            raise SettingError("study", f"must be a non-empty printable name of at most 200 characters, got {self.study!r}")

    def new_settings(self, **fixed: Any) -> StudySettings:
        """The settings a new study gets: the defaults, what was asked, and ``fixed`` (the space).
        Several objectives mean one fidelity unless rungs were asked for; several budgets mean the
        objectives accuracy and parameters, and a budget of the largest."""
        implied: dict[str, Any] = {}
        if self.settings.get("budgets"):
            implied.update(objectives=("accuracy", "params"), budget=max(self.settings["budgets"]))
        if len(self.settings.get("objectives", ())) > 1:
            implied["rungs"] = ()
        if "rungs" not in self.settings and "rungs" not in implied:  # the default rungs that are cheaper than this study's full fidelity
            probe = StudySettings(**{**implied, **self.settings, "rungs": ()})
            implied["rungs"] = fitting_rungs(StudySettings().rungs, probe.epochs, probe.train_images)
        return StudySettings(**{**implied, **self.settings, **fixed})

    @property
    def stop_on_trials(self) -> int | None:
        return self.trials if self.trials is not None or self.timeout is not None else DEFAULT_TRIALS

    def pruner_for(self, settings: StudySettings) -> str:
        """Within-trial pruning makes sense at one fidelity and one objective; rungs replace it."""
        if self.pruner is not None:
            if self.pruner != "none" and (settings.multi_objective or settings.rungs):
                raise SettingError("pruner", "works only at one fidelity (rungs none) with one objective")
            return self.pruner
        return "median" if not settings.rungs and not settings.multi_objective else "none"
