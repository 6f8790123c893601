"""The architecture: a flat sequence of :class:`Layer` entries applied to a C x S x S image.

An :class:`ArchSpec` holds the layers and the input it takes (channels, size) and the classes it
scores; the network's output is ``log_softmax`` over the last layer's values (log-probabilities,
trained with NLL). Each layer kind is one record in :mod:`nas.arch.ops`. Everything is validated
with ``ValueError`` at construction, so a spec that exists is well-formed layer by layer; whether
its shapes fit together is the builder's check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nas.arch.checks import check_keys, is_int, is_number
from nas.arch.ops import OPS

# Limits checked before anything is built or allocated: far above any network of this tool.
MAX_CHANNELS, MAX_KERNEL, MAX_SIZE, MAX_LAYERS, MAX_TIMES = 4096, 31, 1024, 500, 16
ALL_FIELDS = tuple(dict.fromkeys(f for op in OPS.values() for f in op.fields))


@dataclass(frozen=True)
class Layer:
    """One layer. Only the fields of its op are set; the others stay None. A new kind of layer is a
    record in :data:`~nas.arch.ops.OPS`; only a field no kind had before is also added here."""

    op: str
    out: int | None = None
    k: int | None = None
    pad: int | None = None
    bias: bool | None = None
    p: float | None = None
    slope: float | None = None
    affine: bool | None = None
    times: int | None = None
    sep: bool | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown layer kind {self.op!r}; known kinds: {', '.join(OPS)}")
        wanted = OPS[self.op].fields
        for name in ALL_FIELDS:
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
        if self.out is not None and (not is_int(self.out) or not 1 <= self.out <= MAX_CHANNELS):
            raise ValueError(f"{self.op}: channel count must be an integer from 1 to {MAX_CHANNELS}, got {self.out!r}")
        if self.k is not None and (not is_int(self.k) or not 1 <= self.k <= MAX_KERNEL or self.k % 2 == 0):
            raise ValueError(f"{self.op}: kernel size must be an odd integer from 1 to {MAX_KERNEL}, got {self.k!r}")
        if self.pad is not None and (not is_int(self.pad) or not 0 <= self.pad <= MAX_KERNEL // 2):
            raise ValueError(f"{self.op}: padding must be an integer from 0 to {MAX_KERNEL // 2}, got {self.pad!r}")
        if self.bias is not None and not isinstance(self.bias, bool):
            raise ValueError(f"{self.op}: bias must be true or false, got {self.bias!r}")
        if self.times is not None and (not is_int(self.times) or not 1 <= self.times <= MAX_TIMES):
            raise ValueError(f"{self.op}: times must be an integer from 1 to {MAX_TIMES}, got {self.times!r}")
        if self.sep is not None and not isinstance(self.sep, bool):
            raise ValueError(f"{self.op}: sep must be true or false, got {self.sep!r}")
        if self.affine is not None and not isinstance(self.affine, bool):
            raise ValueError(f"{self.op}: affine must be true or false, got {self.affine!r}")
        if self.p is not None and not (is_number(self.p) and 0 <= self.p < 1):
            raise ValueError(f"{self.op}: rate must be in [0, 1), got {self.p!r}")
        if self.slope is not None and not (is_number(self.slope) and 0 <= self.slope <= 10):
            raise ValueError(f"leaky_relu: slope must be between 0 and 10, got {self.slope!r}")

    def to_dict(self) -> dict[str, Any]:
        op = OPS[self.op]
        return {"op": self.op, **{name: getattr(self, name) for name in op.fields
                                  if not (name in op.quiet and getattr(self, name) == op.fields[name])}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layer:
        if not isinstance(d, dict) or "op" not in d:
            raise ValueError(f"a layer must be an object with an 'op' key, got {d!r}")
        op = d["op"]
        extra = set(d) - {"op"} - set(OPS[op].fields if op in OPS else ALL_FIELDS)
        if op in OPS and extra:
            raise ValueError(f"layer {op!r} takes no field {sorted(extra)[0]!r}")
        return cls(**d)

    @property
    def token(self) -> str:
        """Short canonical form, e.g. ``c3x16p1nb`` (3x3 conv to 16, padding 1, no bias)."""
        return OPS[self.op].token(self)


# Small constructors so code that writes specs reads like the network it describes.
def conv(out: int, k: int = 3, pad: int = 0, bias: bool = True) -> Layer:
    return Layer("conv", out=out, k=k, pad=pad, bias=bias)


def linear(out: int, bias: bool = True) -> Layer:
    return Layer("linear", out=out, bias=bias)


def relu() -> Layer:
    return Layer("relu")


def leaky_relu(slope: float) -> Layer:
    return Layer("leaky_relu", slope=slope)


def bn(affine: bool = True) -> Layer:
    return Layer("bn", affine=affine)


def dwconv(k: int = 3, pad: int = 0, bias: bool = True) -> Layer:
    return Layer("dwconv", k=k, pad=pad, bias=bias)


def dropout(p: float, channels: bool = False) -> Layer:
    return Layer("dropout2d" if channels else "dropout", p=p)


def maxpool() -> Layer:
    return Layer("maxpool")


def gap() -> Layer:
    return Layer("gap")


MNIST_SHAPE = (1, 28, 10)  # channels, image size, classes: MNIST's, what the specs and references are made for
MNIST_TRAIN_IMAGES = 60_000
DEFAULT_HOLDOUT = 10_000  # validation images held out of the training images: as many as MNIST's test set


@dataclass(frozen=True)
class ArchSpec:
    """A network: layers applied in order to an ``in_channels`` x ``in_size`` x ``in_size`` image."""

    layers: tuple[Layer, ...]
    in_channels: int = MNIST_SHAPE[0]
    in_size: int = MNIST_SHAPE[1]
    classes: int = MNIST_SHAPE[2]

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
        if (self.in_channels, self.in_size, self.classes) != MNIST_SHAPE:
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
        check_keys("arch", d, {"layers", "in_channels", "in_size", "classes"}, required={"layers"})
        if not isinstance(d["layers"], list):
            raise ValueError("arch.layers must be a list of layer objects")
        layers = []
        for i, item in enumerate(d["layers"]):
            try:
                layers.append(Layer.from_dict(item))
            except (ValueError, TypeError) as e:
                raise ValueError(f"layer {i}: {e}") from None
        return cls(tuple(layers), **{k: v for k, v in d.items() if k != "layers"})


