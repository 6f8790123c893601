"""One record per layer kind: everything the tool knows of an op, in one place.

An :class:`Op` says which fields a layer of its kind takes (with their defaults), its short token
for canonical keys, its words for layer tables, its shape rule (output shape, parameters and FLOPs
from the input shape, without torch) and how to build its torch module. Adding a kind of layer is
one record here; the spec, the builder and the layer tables all read :data:`OPS`.

FLOPs follow fvcore's conventions (one multiply-add is one FLOP; BatchNorm at inference costs 2 per
element, 1 without its affine; global average pooling 1 per input element; activations, dropout and max-pool are free).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from torch import nn

Layer = Any  # a nas.arch.spec.Layer: the ops are what the spec's layers are checked against, so they come first
Shape = tuple[int, ...]  # (C, H, W), or (C,) after a linear layer


@dataclass(frozen=True)
class Op:
    name: str
    fields: dict[str, Any]  # field -> default (None: required)
    token: Callable[[Layer], str]
    words: Callable[[Layer, int], str]  # the layer and its input channels
    shape: Callable[[Layer, Shape], tuple[Shape, int, int]]  # -> (output shape, params, flops); ValueError if it can't
    module: Callable[[Layer, int], nn.Module]  # torch is imported only when a model is built
    needs_map: bool = True  # takes a (C, H, W) feature map, not the output of a linear layer
    quiet: tuple[str, ...] = ()  # fields left out of the JSON at their default (added after files were written)


def _no_bias(layer: Layer) -> str:
    return "" if layer.bias in (None, True) else "nb"


def _free(layer: Layer, shape: Shape) -> tuple[Shape, int, int]:
    return shape, 0, 0


def _conv_size(layer: Layer, size: int, what: str = "conv") -> int:
    h = size + 2 * layer.pad - layer.k + 1
    if h < 1:
        raise ValueError(f"a {size}x{size} map with padding {layer.pad} is too small for a {layer.k}x{layer.k} {what} "
                         f"(output would be {h}x{h})")
    return h


def _conv_shape(layer: Layer, shape: Shape) -> tuple[Shape, int, int]:
    c, h = shape[0], _conv_size(layer, shape[1])
    weights = c * layer.out * layer.k**2
    return (layer.out, h, h), weights + (layer.out if layer.bias else 0), weights * h * h


def _conv_words(layer: Layer, c: int) -> str:
    extras = ", ".join(x for x in (f"pad {layer.pad}" if layer.pad else "", "" if layer.bias else "no bias") if x)
    return f"conv {layer.k}x{layer.k} {c}->{layer.out}" + (f" ({extras})" if extras else "")


def _conv_module(layer: Layer, c: int) -> nn.Module:
    from torch import nn

    return nn.Conv2d(c, layer.out, layer.k, padding=layer.pad, bias=layer.bias)


def _dwconv_shape(layer: Layer, shape: Shape) -> tuple[Shape, int, int]:
    c, h = shape[0], _conv_size(layer, shape[1], "depthwise conv")
    return (c, h, h), c * layer.k**2 + (c if layer.bias else 0), c * layer.k**2 * h * h


def _dwconv_module(layer: Layer, c: int) -> nn.Module:
    from torch import nn

    return nn.Conv2d(c, c, layer.k, padding=layer.pad, groups=c, bias=layer.bias)


def _shared_shape(layer: Layer, shape: Shape) -> tuple[Shape, int, int]:
    """One conv's weights (counted once, as they are stored once), each use's BatchNorm and FLOPs."""
    c, h, k = shape[0], shape[1], layer.k
    weights = c * k**2 + c * c if layer.sep else c * c * k**2
    norm_params, norm_flops = _bn_shape(layer, shape)[1:]
    return shape, weights + (c if layer.bias else 0) + layer.times * norm_params, \
        layer.times * (weights * h * h + norm_flops)


def _shared_module(layer: Layer, c: int) -> nn.Module:
    from nas.arch.layers import SharedConv

    return SharedConv(c, layer.times, layer.k, layer.sep, layer.bias, layer.affine)


def _bn_shape(layer: Layer, shape: Shape) -> tuple[Shape, int, int]:
    per = 2 if layer.affine else 1  # as fvcore counts: the normalization, and the affine where there is one
    return shape, 2 * shape[0] if layer.affine else 0, per * math.prod(shape)


def _maxpool_shape(layer: Layer, shape: Shape) -> tuple[Shape, int, int]:
    if shape[1] < 2:
        raise ValueError(f"cannot max-pool a {shape[1]}x{shape[1]} map (needs at least 2x2)")
    return (shape[0], shape[1] // 2, shape[2] // 2), 0, 0


def _linear_shape(layer: Layer, shape: Shape) -> tuple[Shape, int, int]:
    if len(shape) == 3 and shape[1:] != (1, 1):
        raise ValueError(f"a linear layer needs a 1x1 map (put 'gap' before it), got {shape[1]}x{shape[2]}")
    c = shape[0]
    return (layer.out,), c * layer.out + (layer.out if layer.bias else 0), c * layer.out


def _linear_module(layer: Layer, c: int) -> nn.Module:
    from nas.arch.layers import FlatLinear

    return FlatLinear(c, layer.out, bias=layer.bias)


def _torch(name: str, *args: Callable[[Layer, int], Any]) -> Callable[[Layer, int], nn.Module]:
    """A module of ``torch.nn`` by name, its arguments read from the layer and its input channels."""
    def make(layer: Layer, c: int) -> nn.Module:
        from torch import nn

        return getattr(nn, name)(*(arg(layer, c) for arg in args))
    return make


OPS: dict[str, Op] = {op.name: op for op in (
    Op("conv", {"out": None, "k": 3, "pad": 0, "bias": True},
       token=lambda l: f"c{l.k}x{l.out}" + (f"p{l.pad}" if l.pad else "") + _no_bias(l),
       words=_conv_words, shape=_conv_shape, module=_conv_module),
    Op("relu", {}, token=lambda l: "r", words=lambda l, c: "relu", shape=_free,
       module=_torch("ReLU", lambda l, c: True), needs_map=False),
    Op("leaky_relu", {"slope": 0.01}, token=lambda l: f"lr{l.slope:g}", words=lambda l, c: f"leaky_relu {l.slope:g}",
       shape=_free, module=_torch("LeakyReLU", lambda l, c: l.slope, lambda l, c: True), needs_map=False),
    # A depthwise conv (one k x k filter per channel); with a 1x1 conv after it, a depthwise-separable conv.
    Op("dwconv", {"k": 3, "pad": 0, "bias": True},
       token=lambda l: f"dw{l.k}" + (f"p{l.pad}" if l.pad else "") + _no_bias(l),
       words=lambda l, c: f"depthwise conv {l.k}x{l.k} {c}->{c}" + (f" (pad {l.pad})" if l.pad else "")
       + ("" if l.bias else " (no bias)"), shape=_dwconv_shape, module=_dwconv_module),
    # BatchNorm; without its affine scale and shift (2 parameters per channel) where a budget is tight.
    Op("bn", {"affine": True}, token=lambda l: "bn" if l.affine else "bnna",
       words=lambda l, c: "batchnorm" if l.affine else "batchnorm (no affine)", shape=_bn_shape,
       module=_torch("BatchNorm2d", lambda l, c: c, lambda l, c: 1e-5, lambda l, c: 0.1, lambda l, c: l.affine),
       quiet=("affine",)),
    # One conv applied `times` times, C -> C at the same size, each use followed by ReLU and its own
    # BatchNorm: depth that costs only the norms (the public 1,936-parameter net reuses one separable conv 3x).
    Op("shared", {"times": None, "k": 3, "sep": True, "bias": True, "affine": True},
       token=lambda l: f"sh{l.times}x{l.k}" + ("s" if l.sep else "") + _no_bias(l) + ("" if l.affine else "na"),
       words=lambda l, c: f"{'separable ' if l.sep else ''}conv {l.k}x{l.k} {c}->{c} (pad {l.k // 2}) shared "
       f"{l.times}x, each + relu + batchnorm" + ("" if l.affine else " (no affine)") + ("" if l.bias else " (no bias)"),
       shape=_shared_shape, module=_shared_module),
    Op("dropout", {"p": None}, token=lambda l: f"d{l.p:g}", words=lambda l, c: f"dropout {l.p:g}", shape=_free,
       module=_torch("Dropout", lambda l, c: l.p), needs_map=False),  # element-wise
    Op("dropout2d", {"p": None}, token=lambda l: f"dd{l.p:g}", words=lambda l, c: f"dropout2d {l.p:g}", shape=_free,
       module=_torch("Dropout2d", lambda l, c: l.p)),  # whole channels
    Op("maxpool", {}, token=lambda l: "mp", words=lambda l, c: "maxpool 2x2", shape=_maxpool_shape,
       module=_torch("MaxPool2d", lambda l, c: 2)),  # 2x2, stride 2
    Op("gap", {}, token=lambda l: "gap", words=lambda l, c: "global avg pool",
       shape=lambda l, s: ((s[0], 1, 1), 0, math.prod(s)), module=_torch("AdaptiveAvgPool2d", lambda l, c: 1)),
    Op("linear", {"out": None, "bias": True}, token=lambda l: f"fc{l.out}{_no_bias(l)}",
       words=lambda l, c: f"linear {c}->{l.out}" + ("" if l.bias else " (no bias)"), shape=_linear_shape,
       module=_linear_module, needs_map=False),
)}
