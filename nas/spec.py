"""The architecture spec and the training recipe: plain, immutable data that round-trips to JSON.

An :class:`ArchSpec` is a flat sequence of :class:`Layer` entries (conv, activation, BatchNorm,
dropout, max-pool, global average pooling, linear) applied to a 1x28x28 image; the network's
output is ``log_softmax`` over the last layer's 10 values (log-probabilities, trained with NLL).
A :class:`Recipe` says how to train it. A :class:`Candidate` pairs the two; spec files hold one.

Everything here is validated with ``ValueError`` at construction, so a spec that exists is
well-formed layer by layer. Whether its shapes fit together is the builder's check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# op name -> the fields that op takes, with their defaults (None: required).
# Limits checked before anything is built or allocated: far above any MNIST network.
MAX_CHANNELS, MAX_KERNEL, MAX_SIZE, MAX_LAYERS = 4096, 31, 1024, 500
MAX_SPEC_BYTES = 1_000_000

OP_FIELDS: dict[str, dict[str, Any]] = {
    "conv": {"out": None, "k": 3, "pad": 0, "bias": True},
    "relu": {},
    "leaky_relu": {"slope": 0.01},
    "bn": {},
    "dropout": {"p": None},  # element-wise
    "dropout2d": {"p": None},  # whole channels
    "maxpool": {},  # 2x2, stride 2
    "gap": {},  # average over the whole feature map
    "linear": {"out": None, "bias": True},
}
_ALL_FIELDS = ("out", "k", "pad", "bias", "p", "slope")


@dataclass(frozen=True)
class Layer:
    """One layer. Only the fields of its op are set; the others stay None."""

    op: str
    out: int | None = None
    k: int | None = None
    pad: int | None = None
    bias: bool | None = None
    p: float | None = None
    slope: float | None = None

    def __post_init__(self) -> None:
        if self.op not in OP_FIELDS:
            raise ValueError(f"unknown layer kind {self.op!r}; known kinds: {', '.join(OP_FIELDS)}")
        wanted = OP_FIELDS[self.op]
        for name in _ALL_FIELDS:
            value = getattr(self, name)
            if name not in wanted:
                if value is not None:
                    raise ValueError(f"layer {self.op!r} takes no field {name!r}")
                continue
            if value is None:
                if wanted[name] is None:
                    raise ValueError(f"layer {self.op!r} needs field {name!r}")
                object.__setattr__(self, name, wanted[name])
        self._check_values()

    def _check_values(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if self.out is not None and (not is_int(self.out) or not 1 <= self.out <= MAX_CHANNELS):
            raise ValueError(f"{self.op}: channel count must be an integer from 1 to {MAX_CHANNELS}, got {self.out!r}")
        if self.k is not None and (not is_int(self.k) or not 1 <= self.k <= MAX_KERNEL or self.k % 2 == 0):
            raise ValueError(f"conv: kernel size must be an odd integer from 1 to {MAX_KERNEL}, got {self.k!r}")
        if self.pad is not None and (not is_int(self.pad) or not 0 <= self.pad <= MAX_KERNEL // 2):
            raise ValueError(f"conv: padding must be an integer from 0 to {MAX_KERNEL // 2}, got {self.pad!r}")
        if self.bias is not None and not isinstance(self.bias, bool):
            raise ValueError(f"{self.op}: bias must be true or false, got {self.bias!r}")
        if self.p is not None and not (_num(self.p) and 0 <= self.p < 1):
            raise ValueError(f"{self.op}: rate must be in [0, 1), got {self.p!r}")
        if self.slope is not None and not (_num(self.slope) and 0 <= self.slope <= 10):
            raise ValueError(f"leaky_relu: slope must be between 0 and 10, got {self.slope!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, **{name: getattr(self, name) for name in OP_FIELDS[self.op]}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layer:
        if not isinstance(d, dict) or "op" not in d:
            raise ValueError(f"a layer must be an object with an 'op' key, got {d!r}")
        op = d["op"]
        extra = set(d) - {"op"} - set(OP_FIELDS.get(op, _ALL_FIELDS))
        if op in OP_FIELDS and extra:
            raise ValueError(f"layer {op!r} takes no field {sorted(extra)[0]!r}")
        return cls(**d)

    @property
    def token(self) -> str:
        """Short canonical form, e.g. ``c3x16p1nb`` (3x3 conv to 16, padding 1, no bias)."""
        nb = "" if self.bias in (None, True) else "nb"
        if self.op == "conv":
            return f"c{self.k}x{self.out}" + (f"p{self.pad}" if self.pad else "") + nb
        if self.op == "linear":
            return f"fc{self.out}{nb}"
        if self.op == "leaky_relu":
            return f"lr{self.slope:g}"
        if self.op in ("dropout", "dropout2d"):
            return ("d" if self.op == "dropout" else "dd") + f"{self.p:g}"
        return {"relu": "r", "bn": "bn", "maxpool": "mp", "gap": "gap"}[self.op]


# Small constructors so code that writes specs reads like the network it describes.
def conv(out: int, k: int = 3, pad: int = 0, bias: bool = True) -> Layer:
    return Layer("conv", out=out, k=k, pad=pad, bias=bias)


def linear(out: int, bias: bool = True) -> Layer:
    return Layer("linear", out=out, bias=bias)


def relu() -> Layer:
    return Layer("relu")


def leaky_relu(slope: float) -> Layer:
    return Layer("leaky_relu", slope=slope)


def bn() -> Layer:
    return Layer("bn")


def dropout(p: float, channels: bool = False) -> Layer:
    return Layer("dropout2d" if channels else "dropout", p=p)


def maxpool() -> Layer:
    return Layer("maxpool")


def gap() -> Layer:
    return Layer("gap")


@dataclass(frozen=True)
class ArchSpec:
    """A network: layers applied in order to an ``in_channels`` x ``in_size`` x ``in_size`` image."""

    layers: tuple[Layer, ...]
    in_channels: int = 1
    in_size: int = 28
    classes: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ValueError("an architecture needs at least one layer")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise ValueError(f"layer {i} is not a Layer: {layer!r}")
        if len(self.layers) > MAX_LAYERS:
            raise ValueError(f"an architecture has at most {MAX_LAYERS} layers, got {len(self.layers)}")
        for name, high in (("in_channels", MAX_CHANNELS), ("in_size", MAX_SIZE), ("classes", MAX_CHANNELS)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= high:
                raise ValueError(f"{name} must be an integer from 1 to {high}, got {v!r}")

    @property
    def key(self) -> str:
        """Canonical string: equal for equal architectures, readable in logs."""
        body = "-".join(layer.token for layer in self.layers)
        if (self.in_channels, self.in_size, self.classes) != (1, 28, 10):
            body = f"in{self.in_channels}x{self.in_size}c{self.classes}:" + body
        return body

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "in_size": self.in_size,
            "classes": self.classes,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchSpec:
        _check_keys("arch", d, {"layers", "in_channels", "in_size", "classes"}, required={"layers"})
        if not isinstance(d["layers"], list):
            raise ValueError("arch.layers must be a list of layer objects")
        layers = []
        for i, item in enumerate(d["layers"]):
            try:
                layers.append(Layer.from_dict(item))
            except (ValueError, TypeError) as e:
                raise ValueError(f"layer {i}: {e}") from None
        return cls(tuple(layers), **{k: v for k, v in d.items() if k != "layers"})


OPTIMIZERS = ("sgd", "adam", "adamw")
MAX_BATCH, MAX_EPOCHS = 4096, 1000
SCHEDULES = ("none", "step", "multistep", "onecycle", "cosine")


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
    label_smoothing: float = 0.0
    epochs: int = 19

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(self.milestones))
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (_num(self.lr) and 0 < self.lr <= 100, f"lr must be > 0 (and at most 100), got {self.lr!r}"),
            (_num(self.momentum) and 0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum!r}"),
            (isinstance(self.nesterov, bool), f"nesterov must be true or false, got {self.nesterov!r}"),
            (not self.nesterov or (self.optimizer == "sgd" and self.momentum > 0),
             "nesterov needs the sgd optimizer with momentum > 0"),
            (_num(self.weight_decay) and 0 <= self.weight_decay <= 1, f"weight_decay must be in [0, 1], got {self.weight_decay!r}"),
            (_int(self.batch_size) and 1 <= self.batch_size <= MAX_BATCH,
             f"batch_size must be an integer from 1 to {MAX_BATCH}, got {self.batch_size!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (_num(self.step_size) and 0 < self.step_size <= MAX_EPOCHS, f"step_size must be > 0 epochs, got {self.step_size!r}"),
            (_num(self.gamma) and 0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma!r}"),
            (len(self.milestones) <= 100 and all(_num(m) and 0 < m <= MAX_EPOCHS for m in self.milestones)
             and list(self.milestones) == sorted(set(self.milestones)),
             f"milestones must be increasing positive epoch counts, got {list(self.milestones)}"),
            (self.schedule != "multistep" or self.milestones, "schedule multistep needs milestones"),
            (_num(self.rotation) and 0 <= self.rotation <= 180, f"rotation must be in [0, 180] degrees, got {self.rotation!r}"),
            (_num(self.translate) and 0 <= self.translate <= 0.5, f"translate must be in [0, 0.5], got {self.translate!r}"),
            (_num(self.label_smoothing) and 0 <= self.label_smoothing < 1,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}"),
            (_int(self.epochs) and 1 <= self.epochs <= MAX_EPOCHS,
             f"epochs must be an integer from 1 to {MAX_EPOCHS}, got {self.epochs!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def compressed(self, epochs: int) -> Recipe:
        """The same recipe run for ``epochs`` epochs with its whole schedule squeezed (or stretched)
        into them ("Budgeted Training", Li et al., ICLR 2020): one-cycle and cosine already span
        the run; step sizes and milestones scale with it and may become fractions of an epoch
        (the trainer steps these schedules per batch)."""
        if epochs == self.epochs:
            return self
        scale = epochs / self.epochs
        return replace(self, epochs=epochs, step_size=round(self.step_size * scale, 4),
                       milestones=tuple(round(m * scale, 4) for m in self.milestones))

    @property
    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        _check_keys("recipe", d, {f.name for f in dataclasses.fields(cls)})
        return cls(**d)


@dataclass(frozen=True)
class Candidate:
    """An architecture with its recipe: what a spec file holds and what a trial trains."""

    arch: ArchSpec
    recipe: Recipe = field(default_factory=Recipe)
    name: str = ""

    @property
    def key(self) -> str:
        """Canonical string of architecture and recipe (the name is not part of it)."""
        return f"{self.arch.key}|{self.recipe.key}"

    @property
    def digest(self) -> str:
        """Short stable id of :attr:`key`, for logs and file names."""
        return hashlib.sha1(self.key.encode()).hexdigest()[:10]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name} if self.name else {}
        return {**d, "arch": self.arch.to_dict(), "recipe": self.recipe.to_dict()}

    def to_json(self, pretty: bool = False, notes: str = "", measured: dict[str, Any] | None = None) -> str:
        """JSON text; ``pretty`` puts one layer per line, as the preset files are written."""
        d = self.to_dict()
        if notes or measured:
            extra = {"notes": notes} if notes else {}
            extra.update({"measured": measured} if measured else {})
            d = {"name": self.name, **extra, **{k: v for k, v in d.items() if k != "name"}}
        if not pretty:
            return json.dumps(d)
        layers = ",\n".join("      " + json.dumps(layer) for layer in d["arch"]["layers"])
        d["arch"]["layers"] = ["@LAYERS@"]
        text = json.dumps(d, indent=2)
        return text.replace('[\n      "@LAYERS@"\n    ]', "[\n" + layers + "\n    ]") + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        # "notes" and "measured" (final test accuracy over seeds) describe a preset file; the candidate ignores them.
        _check_keys("spec", d, {"name", "arch", "recipe", "notes", "measured"}, required={"arch"})
        return cls(ArchSpec.from_dict(d["arch"]), Recipe.from_dict(d.get("recipe", {})), d.get("name", ""))

    @classmethod
    def from_json(cls, text: str) -> Candidate:
        def refuse(constant: str) -> None:
            raise ValueError(f"{constant} is not a number a spec can hold")

        try:
            data = json.loads(text, parse_constant=refuse)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e}") from None
        except RecursionError:
            raise ValueError("not a spec: the JSON is nested too deeply") from None
        return cls.from_dict(data)


def load_spec_file(path: str | Path) -> Candidate:
    """Read a spec file; every problem is a ``ValueError`` that names the file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise ValueError(f"spec file {path} is larger than {MAX_SPEC_BYTES // 1000} KB; a spec is a short JSON file")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read spec file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"spec file {path} is not a text (UTF-8) JSON file") from None
    try:
        return Candidate.from_json(text)
    except (ValueError, TypeError) as e:
        raise ValueError(f"spec file {path}: {e}") from None


def _check_keys(what: str, d: Any, allowed: set[str], required: set[str] = frozenset()) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(d).__name__}")
    unknown = set(d) - allowed
    if unknown:
        raise ValueError(f"{what}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(allowed))}")
    missing = required - set(d)
    if missing:
        raise ValueError(f"{what}: missing key {sorted(missing)[0]!r}")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
