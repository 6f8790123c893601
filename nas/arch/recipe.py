"""The training recipe: how to train a network, as plain data that round-trips to JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from typing import Any

from nas.arch.checks import check_keys, is_int, is_number

OPTIMIZERS = ("sgd", "adam", "adamw")
MAX_BATCH, MAX_EPOCHS = 4096, 1000
SCHEDULES = ("none", "step", "multistep", "onecycle", "cosine", "piecewise")
INITS = ("default", "xavier")
QUIET = ("scale", "crop", "init")


@dataclass(frozen=True)
class Recipe:
    """How to train a network. ``lr`` is the peak learning rate for the one-cycle schedule."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = 0.0
    batch_size: int = 128
    schedule: str = "none"
    step_size: float = 10  # schedule "step": decay every step_size epochs (fractions: see compressed())
    gamma: float = 0.1  # schedules "step" and "multistep": decay factor
    milestones: tuple[float, ...] = ()  # schedule "multistep": epochs after which to decay
    rotation: float = 0.0  # random rotation, +- degrees
    translate: float = 0.0  # random translation, +- fraction of the image side
    scale: float = 0.0  # random zoom, +- fraction (0.1: a factor in [0.9, 1.1])
    crop: float = 0.0  # random resized crop: 0.15 keeps a random 85-100 % of the image's area, resized back
    init: str = "default"  # "xavier": Xavier-uniform conv and linear weights, zero biases
    label_smoothing: float = 0.0
    epochs: int = 19

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(self.milestones))
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (is_number(self.lr) and 0 < self.lr <= 100, f"lr must be > 0 (and at most 100), got {self.lr!r}"),
            (is_number(self.momentum) and 0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum!r}"),
            (isinstance(self.nesterov, bool), f"nesterov must be true or false, got {self.nesterov!r}"),
            (not self.nesterov or (self.optimizer == "sgd" and self.momentum > 0),
             "nesterov needs the sgd optimizer with momentum > 0"),
            (is_number(self.weight_decay) and 0 <= self.weight_decay <= 1, f"weight_decay must be in [0, 1], got {self.weight_decay!r}"),
            (is_int(self.batch_size) and 1 <= self.batch_size <= MAX_BATCH,
             f"batch_size must be an integer from 1 to {MAX_BATCH}, got {self.batch_size!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (is_number(self.step_size) and 0 < self.step_size <= MAX_EPOCHS, f"step_size must be > 0 epochs, got {self.step_size!r}"),
            (is_number(self.gamma) and 0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma!r}"),
            (len(self.milestones) <= 100 and all(is_number(m) and 0 < m <= MAX_EPOCHS for m in self.milestones)
             and list(self.milestones) == sorted(set(self.milestones)),
             f"milestones must be increasing positive epoch counts, got {list(self.milestones)}"),
            (self.schedule != "multistep" or self.milestones, "schedule multistep needs milestones"),
            (is_number(self.rotation) and 0 <= self.rotation <= 180, f"rotation must be in [0, 180] degrees, got {self.rotation!r}"),
            (is_number(self.translate) and 0 <= self.translate <= 0.5, f"translate must be in [0, 0.5], got {self.translate!r}"),
            (is_number(self.scale) and 0 <= self.scale <= 0.5, f"scale must be in [0, 0.5], got {self.scale!r}"),
            (is_number(self.crop) and 0 <= self.crop <= 0.9, f"crop must be in [0, 0.9], got {self.crop!r}"),
            (self.init in INITS, f"init must be one of {INITS}, got {self.init!r}"),
            (is_number(self.label_smoothing) and 0 <= self.label_smoothing < 1,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}"),
            (is_int(self.epochs) and 1 <= self.epochs <= MAX_EPOCHS,
             f"epochs must be an integer from 1 to {MAX_EPOCHS}, got {self.epochs!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def compressed(self, epochs: int) -> Recipe:
        """The same recipe run for ``epochs`` epochs with its whole schedule squeezed (or stretched)
        into them ("Budgeted Training", Li et al., ICLR 2020): one-cycle, cosine and piecewise already
        span the run; step sizes and milestones scale with it and may become fractions of an epoch
        (the trainer steps these schedules per batch)."""
        if epochs == self.epochs:
            return self
        scale = epochs / self.epochs
        return replace(self, epochs=epochs, step_size=round(self.step_size * scale, 4),
                       milestones=tuple(round(m * scale, 4) for m in self.milestones))

    def in_effect(self) -> dict[str, Any]:
        """The fields its optimizer and schedule read (two recipes that differ elsewhere train alike)."""
        unused = {"sgd": set(), "adam": {"momentum", "nesterov"}, "adamw": {"momentum", "nesterov"}}[self.optimizer]
        unused |= {"step": {"milestones"}, "multistep": {"step_size"}}.get(self.schedule,
                                                                          {"step_size", "gamma", "milestones"})
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in unused}

    @property
    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        for name in QUIET:  # fields added later: left out at their default, so earlier recipes keep their key
            if d[name] == getattr(Recipe, name):
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        check_keys("recipe", d, {f.name for f in dataclasses.fields(cls)})
        return cls(**d)
