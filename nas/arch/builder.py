"""The builder: a pure function from :class:`ArchSpec` to ``nn.Module``, plus exact, cheap counts.

:func:`plan` walks the spec once without torch, checking with each op's shape rule
(:mod:`nas.arch.ops`) that every layer fits the shape it receives, and returns per-layer output
shapes, parameter counts and FLOPs. Counting never builds or trains anything; FLOPs follow
fvcore's conventions, and :func:`fvcore_flops` is the reference they are tested against.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nas.arch.spec import ArchSpec, Layer
from nas.arch.ops import OPS

if TYPE_CHECKING:
    from nas.arch.layers import Net


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
        op = OPS[layer.op]
        if op.needs_map and len(shape) == 1:
            raise ValueError(f"{_describe(i, layer)}: needs a feature map but follows a linear layer")
        try:
            shape, params, flops = op.shape(layer, shape)
        except ValueError as e:
            raise ValueError(f"{_describe(i, layer)}: {e}") from None
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
    from nas.arch.layers import Net

    infos = plan(arch)
    check_size(infos)
    modules = []
    channels = arch.in_channels
    for info in infos:
        modules.append(OPS[info.layer.op].module(info.layer, channels))
        channels = info.out_shape[0]
    return Net(*modules)


def fvcore_flops(arch: ArchSpec) -> int:
    """FLOPs of one image as fvcore counts them on the built model (eval mode). Slow: traces."""
    import torch

    with warnings.catch_warnings():  # fvcore uses torch.jit, which warns of its deprecation
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

        model = build_model(arch).eval()
        x = torch.zeros(1, arch.in_channels, arch.in_size, arch.in_size)
        analysis = FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analysis.total())
