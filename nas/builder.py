"""The builder: a pure function from :class:`ArchSpec` to ``nn.Module``, plus exact, cheap counts.

:func:`plan` walks the spec once without torch, checking that every layer fits the shape it
receives, and returns per-layer output shapes, parameter counts and FLOPs. Parameter counts and
FLOPs come from that walk, so counting never builds or trains anything. FLOPs follow fvcore's
conventions (one multiply-add is one FLOP; BatchNorm at inference costs 2 per element; global
average pooling 1 per input element; activations, dropout and max-pool are free);
:func:`fvcore_flops` is the reference they are tested against.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas.spec import ArchSpec, Layer

# op name -> constructor(layer, input channels). The one place that maps spec to torch modules.
OPS: dict[str, Callable[[Layer, int], nn.Module]] = {
    "conv": lambda layer, c: nn.Conv2d(c, layer.out, layer.k, padding=layer.pad, bias=layer.bias),
    "relu": lambda layer, c: nn.ReLU(inplace=True),
    "leaky_relu": lambda layer, c: nn.LeakyReLU(layer.slope, inplace=True),
    "bn": lambda layer, c: nn.BatchNorm2d(c),
    "dropout": lambda layer, c: nn.Dropout(layer.p),
    "dropout2d": lambda layer, c: nn.Dropout2d(layer.p),
    "maxpool": lambda layer, c: nn.MaxPool2d(2),
    "gap": lambda layer, c: nn.AdaptiveAvgPool2d(1),
    "linear": lambda layer, c: FlatLinear(c, layer.out, bias=layer.bias),
}


class FlatLinear(nn.Linear):
    """``nn.Linear`` that first flattens a (N, C, 1, 1) map to (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


class Net(nn.Sequential):
    """The layers in order; the output is log-probabilities over the classes, shape (N, classes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(super().forward(x).flatten(1), dim=1)


@dataclass(frozen=True)
class LayerInfo:
    index: int
    layer: Layer
    out_shape: tuple[int, ...]  # (C, H, W), or (C,) after a linear layer
    params: int
    flops: int


def _describe(i: int, layer: Layer) -> str:
    return f"layer {i} ({layer.token})"


def plan(arch: ArchSpec) -> list[LayerInfo]:
    """Check the spec's shapes and return what each layer outputs, holds and costs.

    Raises ``ValueError`` naming the offending layer when a feature map would shrink below 1x1,
    a layer gets an input it cannot take, or the network does not end in ``classes`` scores.
    """
    shape: tuple[int, ...] = (arch.in_channels, arch.in_size, arch.in_size)
    infos = []
    for i, layer in enumerate(arch.layers):
        where = _describe(i, layer)
        flat = len(shape) == 1
        c = shape[0]
        params = flops = 0
        if layer.op in ("conv", "bn", "dropout2d", "maxpool", "gap") and flat:
            raise ValueError(f"{where}: needs a feature map but follows a linear layer")
        if layer.op == "conv":
            h = shape[1] + 2 * layer.pad - layer.k + 1
            if h < 1:
                raise ValueError(f"{where}: a {shape[1]}x{shape[1]} map with padding {layer.pad} is too small "
                                 f"for a {layer.k}x{layer.k} conv (output would be {h}x{h})")
            params = c * layer.out * layer.k**2 + (layer.out if layer.bias else 0)
            flops = c * layer.out * layer.k**2 * h * h
            shape = (layer.out, h, h)
        elif layer.op == "bn":
            params = 2 * c
            flops = 2 * math.prod(shape)
        elif layer.op == "maxpool":
            if shape[1] < 2:
                raise ValueError(f"{where}: cannot max-pool a {shape[1]}x{shape[1]} map (needs at least 2x2)")
            shape = (c, shape[1] // 2, shape[2] // 2)
        elif layer.op == "gap":
            flops = math.prod(shape)
            shape = (c, 1, 1)
        elif layer.op == "linear":
            if not flat and shape[1:] != (1, 1):
                raise ValueError(f"{where}: a linear layer needs a 1x1 map (put 'gap' before it), "
                                 f"got {shape[1]}x{shape[2]}")
            params = c * layer.out + (layer.out if layer.bias else 0)
            flops = c * layer.out
            shape = (layer.out,)
        infos.append(LayerInfo(i, layer, shape, params, flops))
    if shape[0] != arch.classes or (len(shape) == 3 and shape[1:] != (1, 1)):
        got = f"{shape[0]} channels" + (f" at {shape[1]}x{shape[2]}" if len(shape) == 3 else "")
        raise ValueError(f"{_describe(len(arch.layers) - 1, arch.layers[-1])}: the network must end in "
                         f"{arch.classes} class scores at 1x1 but ends in {got}; "
                         f"finish with 'gap' and a conv or linear layer to {arch.classes}")
    return infos


def count_params(arch: ArchSpec) -> int:
    """Exact number of trainable parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(info.params for info in plan(arch))


def count_flops(arch: ArchSpec) -> int:
    """FLOPs of one forward pass of one image, in fvcore's convention (see module docstring)."""
    return sum(info.flops for info in plan(arch))


MAX_PARAMS = 10_000_000  # far above any network this tool searches; checked before building
MAX_ACTIVATIONS = 10_000_000  # values per image summed over the layers (memory of a forward pass)


def check_size(infos: list[LayerInfo]) -> None:
    params = sum(i.params for i in infos)
    activations = sum(math.prod(i.out_shape) for i in infos)
    if params > MAX_PARAMS:
        raise ValueError(f"the network has {params:,} parameters; this tool builds at most {MAX_PARAMS:,}")
    if activations > MAX_ACTIVATIONS:
        raise ValueError(f"the network's layers output {activations:,} values per image; this tool builds at most "
                         f"{MAX_ACTIVATIONS:,} (use fewer channels or a smaller input)")


def build_model(arch: ArchSpec) -> Net:
    """Build the network a spec describes. Shapes and size are checked first; see :func:`plan`."""
    infos = plan(arch)
    check_size(infos)
    modules = []
    channels = arch.in_channels
    for info in infos:
        modules.append(OPS[info.layer.op](info.layer, channels))
        channels = info.out_shape[0]
    return Net(*modules)


def fvcore_flops(arch: ArchSpec) -> int:
    """FLOPs of one image as fvcore counts them on the built model (eval mode). Slow: traces."""
    with warnings.catch_warnings():  # fvcore uses torch.jit, which warns of its deprecation
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

        model = build_model(arch).eval()
        x = torch.zeros(1, arch.in_channels, arch.in_size, arch.in_size)
        analysis = FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analysis.total())
