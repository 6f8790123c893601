"""The space file's vocabulary: the roles a space file gives a distribution for, what values each takes,
and how one YAML entry becomes an Optuna distribution (or a fixed value)."""

from __future__ import annotations

import math
from typing import Any

import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

ARCH_ROLES: dict[str, str] = {
    "stages": "number of conv blocks (a transition between consecutive blocks)",
    "convs": "3x3 convs in block i (s{i}_convs)",
    "channels": "output channels of conv j in block i (s{i}_c{j}_ch)",
    "padding": "padding of conv j in block i, 0 or 1 (s{i}_c{j}_pad); asked only where 0 fits",
    "batchnorm": "BatchNorm after conv j in block i (s{i}_c{j}_bn)",
    "conv_dropout": "dropout after conv j in block i (s{i}_c{j}_drop); asked unless dropout is none",
    "conv_bias": "bias on the 3x3 convs",
    "activation": "relu or leaky_relu, after every conv but the head's",
    "leaky_slope": "negative slope of leaky_relu",
    "order": "relu_bn (conv, act, BN) or bn_relu (conv, BN, act)",
    "dropout": "none, dropout (element-wise) or dropout2d (whole channels)",
    "dropout_rate": "rate of every dropout layer",
    "transition_order": "pool_conv (max-pool then 1x1 conv) or conv_pool",
    "transition_channels": "output channels of the 1x1 conv of transition i (t{i}_ch)",
    "transition_act": "activation after the transition's 1x1 conv",
    "transition_bn": "BatchNorm after the transition's 1x1 conv",
    "transition_dropout": "dropout after the transition's 1x1 conv",
    "transition_bias": "bias on the transition's 1x1 conv",
    "pool_bn": "BatchNorm right after the transition's max-pool",
    "pool_dropout": "dropout right after the transition's max-pool",
    "head": "gap_linear, gap_conv1x1, conv1x1_gap or conv3x3_gap (the conv or linear layer outputs 10)",
    "head_pool": "a max-pool between the last block and the head",
    "head_bias": "bias on the head's conv or linear layer",
    "separable": "conv j of block i as a depthwise 3x3 and a 1x1 conv (s{i}_c{j}_sep); never the first conv",
    "bn_affine": "BatchNorm with its scale and shift (2 parameters per channel), or without",
    "shared": "uses of one separable 3x3 conv with shared weights after the last block (0: none)",
}
RECIPE_ROLES: dict[str, str] = {
    "optimizer": "sgd, adam or adamw",
    "lr_sgd": "learning rate with sgd (peak rate for onecycle)",
    "lr_adam": "learning rate with adam and adamw (peak rate for onecycle)",
    "momentum": "SGD momentum",
    "nesterov": "SGD Nesterov momentum",
    "weight_decay": "weight decay",
    "batch_size": "batch size",
    "schedule": "none, step, multistep, onecycle, cosine or piecewise",
    "step_size": "epochs between decays (step)",
    "gamma": "decay factor (step, multistep)",
    "milestone_1": "first decay epoch (multistep)",
    "milestone_2": "second decay epoch (multistep)",
    "rotation": "random rotation, +- degrees",
    "translate": "random translation, +- fraction of the image side",
    "scale": "random zoom, +- fraction (0.1: a factor in [0.9, 1.1])",
    "crop": "random resized crop: 0.15 keeps a random 85-100 % of the image's area",
    "init": "starting weights: default (PyTorch's) or xavier",
    "label_smoothing": "label smoothing",
    "epochs": "training epochs (nas-search --epochs overrides)",
}
# Roles whose values are names, and the names they accept.
ALLOWED_VALUES: dict[str, tuple[Any, ...]] = {
    "activation": ("relu", "leaky_relu"),
    "order": ("relu_bn", "bn_relu"),
    "dropout": ("none", "dropout", "dropout2d"),
    "transition_order": ("pool_conv", "conv_pool"),
    "head": ("gap_linear", "gap_conv1x1", "conv1x1_gap", "conv3x3_gap"),
    "padding": (0, 1),
    "optimizer": ("sgd", "adam", "adamw"),
    "schedule": ("none", "step", "multistep", "onecycle", "cosine", "piecewise"),
    "init": ("default", "xavier"),
}
# What each numeric or yes/no role takes (the named ones are in ALLOWED_VALUES).
ROLE_KINDS: dict[str, str] = {
    **dict.fromkeys(("stages", "convs", "channels", "transition_channels", "batch_size", "milestone_1", "milestone_2",
                     "epochs", "shared"), "int"),
    **dict.fromkeys(("batchnorm", "conv_dropout", "conv_bias", "transition_act", "transition_bn",
                     "transition_dropout", "transition_bias", "pool_bn", "pool_dropout", "head_pool", "head_bias",
                     "nesterov", "separable", "bn_affine"), "bool"),
    **dict.fromkeys(("leaky_slope", "dropout_rate", "lr_sgd", "lr_adam", "momentum", "weight_decay", "step_size",
                     "gamma", "rotation", "translate", "scale", "crop", "label_smoothing"), "number"),
}
# Roles added after space files were written: a file that leaves one out gets this fixed value.
OPTIONAL_ROLES: dict[str, Any] = {"separable": False, "bn_affine": True, "scale": 0.0, "crop": 0.0, "init": "default",
                                  "shared": 0}


class NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a few KB of nested aliases expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (*name) are not allowed in a space file",
                                              event.start_mark)
        return super().compose_node(parent, index)

Entry = BaseDistribution | Any  # a distribution, or a fixed value


def parse_entry(role: str, raw: Any) -> Entry:
    """Turn one YAML entry into an optuna distribution, or keep it as a fixed value."""
    if not isinstance(raw, dict):
        entry = raw
    elif set(raw) == {"choices"}:
        if not isinstance(raw["choices"], list) or not raw["choices"]:
            raise ValueError(f"{role}: choices must be a non-empty list")
        entry = CategoricalDistribution(raw["choices"])
    elif {"low", "high"} <= set(raw) <= {"low", "high", "step", "log"}:
        bounds = [raw["low"], raw["high"]] + ([raw["step"]] if "step" in raw else [])
        is_int = all(isinstance(v, int) and not isinstance(v, bool) for v in bounds)
        try:
            if is_int:
                entry = IntDistribution(raw["low"], raw["high"], log=raw.get("log", False), step=raw.get("step", 1))
            else:
                entry = FloatDistribution(raw["low"], raw["high"], log=raw.get("log", False), step=raw.get("step"))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{role}: {e}") from None
    else:
        raise ValueError(f"{role}: expected {{choices: [...]}}, {{low: L, high: H[, step: S][, log: true]}} "
                         f"or a plain value, got {raw!r}")
    kind = ROLE_KINDS.get(role)
    if kind is not None:
        for v in values_of(entry):
            ok = {"int": isinstance(v, int) and not isinstance(v, bool),
                  "bool": isinstance(v, bool),
                  "number": isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}[kind]
            if not ok:
                what = {"int": "whole numbers", "bool": "true or false", "number": "numbers"}[kind]
                raise ValueError(f"{role}: values must be {what}, got {v!r}")
    allowed = ALLOWED_VALUES.get(role)
    if allowed is not None:
        values = entry.choices if isinstance(entry, CategoricalDistribution) else (entry,)
        bad = [v for v in values if v not in allowed]
        if bad or isinstance(entry, (IntDistribution, FloatDistribution)):
            raise ValueError(f"{role}: values must be among {list(allowed)}, got {bad or raw}")
    return entry


def values_of(entry: Entry) -> list[Any]:
    """Every value an entry can take (numeric ranges: their two ends)."""
    if isinstance(entry, CategoricalDistribution):
        return list(entry.choices)
    if isinstance(entry, (IntDistribution, FloatDistribution)):
        return [entry.low, entry.high]
    return [entry]
