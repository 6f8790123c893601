"""From a candidate back to a space's parameters: the assignment under which the space samples it.

A search starts from networks it already knows (the shipped presets, an earlier study's best) by
queueing them as trials (``study.enqueue_trial``), and a queued trial is a parameter assignment of
the search's space. :func:`params_of` reads the assignment off the candidate's layers (the conv
blocks, transitions and head of the space's family), then proves it: the space must sample exactly
the candidate from it. Anything else is :class:`Inexpressible`, with the reason, never a near miss.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from nas.arch import Candidate, Layer
from nas.space.space import SearchSpace

ACTS, DROPS = ("relu", "leaky_relu"), ("dropout", "dropout2d")
TAIL = (*ACTS, "bn", *DROPS)  # the layers the space puts after a conv, a pool or a 1x1 conv


class Inexpressible(ValueError):
    """The space cannot sample this candidate (its layers or its recipe are outside the space)."""


class _Answering(optuna.trial.FixedTrial):
    """Answers each question from the assignment, a role left open (it shapes nothing in this
    network, like BatchNorm's order where there is no BatchNorm) with its first value, and refuses a
    value outside its distribution."""

    def _suggest(self, name: str, distribution: BaseDistribution) -> Any:
        if name not in self._params:
            self._params[name] = (distribution.choices[0] if isinstance(distribution, CategoricalDistribution)
                                  else distribution.low)  # type: ignore[attr-defined]
        value = self._params[name]
        if (value not in distribution.choices if isinstance(distribution, CategoricalDistribution)
                else not distribution._contains(distribution.to_internal_repr(value))):
            raise Inexpressible(f"its {name} = {value!r} is outside the space's {_shown(distribution)}")
        return super()._suggest(name, distribution)


def _shown(distribution: BaseDistribution) -> str:
    if isinstance(distribution, CategoricalDistribution):
        return f"choices {list(distribution.choices)}"
    step = getattr(distribution, "step", None)
    return f"range {distribution.low}-{distribution.high}" + (f" step {step}" if step not in (None, 1) else "")


def params_of(space: SearchSpace, candidate: Candidate, shape: tuple[int, int, int] = (1, 28, 10)) -> dict[str, Any]:
    """The assignment of ``space``'s parameters that samples ``candidate`` (its recipe's epochs are
    the search's); raises :class:`Inexpressible` with the reason where there is none."""
    guess = {**_arch_params(candidate.arch.layers), **_recipe_params(candidate.recipe)}
    trial = _Answering(guess)
    try:
        sampled = space.sample(trial, shape)
    except (ValueError, TypeError) as e:
        raise Inexpressible(str(e)) from None
    if sampled.arch.layers != candidate.arch.layers:
        raise Inexpressible(f"its layers are not of space {space.name}'s family (or not within its ranges)")
    want, got = candidate.recipe.in_effect(), replace(sampled.recipe, epochs=candidate.recipe.epochs).in_effect()
    if want != got:
        differ = [k for k in want if want[k] != got.get(k)]
        raise Inexpressible(f"its recipe's {', '.join(differ)} cannot be sampled from space {space.name}")
    return trial.params


def _units(layers: tuple[Layer, ...]) -> list[tuple[list[Layer], list[Layer]]]:
    """The layers grouped as the space emits them: a conv (or depthwise + pointwise pair), a
    max-pool, GAP or linear, each with the activation, BatchNorm and dropout after it."""
    units: list[tuple[list[Layer], list[Layer]]] = []
    for layer in layers:
        if layer.op in TAIL and units:
            units[-1][1].append(layer)
        elif layer.op == "conv" and layer.k == 1 and units and units[-1][0][-1].op == "dwconv" and not units[-1][1]:
            units[-1][0].append(layer)
        else:
            units.append(([layer], []))
    return units


def _style(layers: tuple[Layer, ...], units: list[tuple[list[Layer], list[Layer]]]) -> dict[str, Any]:
    p: dict[str, Any] = {}
    act = next((l for l in layers if l.op in ACTS), None)
    if act is not None:
        p["activation"] = act.op
        if act.op == "leaky_relu":
            p["leaky_slope"] = act.slope
    drop = next((l for l in layers if l.op in DROPS), None)
    p["dropout"] = drop.op if drop is not None else "none"
    if drop is not None:
        p["dropout_rate"] = drop.p
    norm = next((l for l in layers if l.op == "bn"), None)
    if norm is not None:
        p["bn_affine"] = norm.affine
    for _, tail in units:
        ops = [l.op for l in tail]
        if "bn" in ops and any(o in ACTS for o in ops):
            p["order"] = "bn_relu" if ops.index("bn") < min(ops.index(o) for o in ACTS if o in ops) else "relu_bn"
            break
    return p


def _arch_params(layers: tuple[Layer, ...]) -> dict[str, Any]:
    units = _units(layers)
    p = _style(layers, units)
    has = lambda tail, *ops: any(l.op in ops for l in tail)  # noqa: E731
    # The head, from the end: [gap, linear], [gap, conv 1x1], [conv 1x1, gap] or [conv 3x3, gap].
    if len(units) < 3:
        raise Inexpressible("it has no conv block and head")
    (a, _), (b, _) = units[-2], units[-1]
    if b[0].op == "gap":
        p["head"], p["head_bias"] = ("conv1x1_gap" if a[0].k == 1 else "conv3x3_gap"), a[0].bias
    else:
        p["head"], p["head_bias"] = ("gap_linear" if b[0].op == "linear" else "gap_conv1x1"), b[0].bias
    body = units[:-2]
    p["head_pool"] = body[-1][0][0].op == "maxpool" and not body[-1][1]
    if p["head_pool"]:
        body = body[:-1]
    p["shared"] = body[-1][0][0].times if body[-1][0][0].op == "shared" and not body[-1][1] else 0
    if p["shared"]:
        body = body[:-1]
    blocks: list[list[tuple[list[Layer], list[Layer]]]] = []
    between = True  # after a transition (or before the first block): the next conv starts a block
    for convs, tail in body:
        first = convs[0]
        if first.op == "dwconv" or (first.op == "conv" and first.k == 3):
            if between:
                blocks.append([])
            blocks[-1].append((convs, tail))
            between = False
            continue
        if not blocks:
            raise Inexpressible(f"it starts with a {first.op} layer, not a conv block")
        between = True
        if first.op == "maxpool":
            p["pool_bn"], p["pool_dropout"] = has(tail, "bn"), has(tail, *DROPS)
            p.setdefault("transition_order", "pool_conv")
        elif first.op == "conv" and first.k == 1:
            p[f"t{len(blocks)}_ch"], p["transition_bias"] = first.out, first.bias
            p["transition_act"], p["transition_bn"] = has(tail, *ACTS), has(tail, "bn")
            p["transition_dropout"] = has(tail, *DROPS)
            p.setdefault("transition_order", "conv_pool")
        else:
            raise Inexpressible(f"its {first.op} layer has no place in the space's family")
    if between:
        raise Inexpressible("its last transition has no conv block after it")
    p["stages"] = len(blocks)
    for i, block in enumerate(blocks, 1):
        p[f"s{i}_convs"] = len(block)
        for j, (convs, tail) in enumerate(block, 1):
            q = f"s{i}_c{j}_"
            p[q + "ch"], p[q + "pad"], p[q + "sep"] = convs[-1].out, convs[0].pad, convs[0].op == "dwconv"
            p[q + "bn"], p[q + "drop"] = has(tail, "bn"), has(tail, *DROPS)
            p["conv_bias"] = convs[-1].bias
    return p


def _recipe_params(recipe: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"optimizer": recipe.optimizer, "weight_decay": recipe.weight_decay,
                         "batch_size": recipe.batch_size, "schedule": recipe.schedule, "rotation": recipe.rotation,
                         "translate": recipe.translate, "scale": recipe.scale, "crop": recipe.crop, "init": recipe.init,
                         "label_smoothing": recipe.label_smoothing}
    if recipe.optimizer == "sgd":
        p.update(lr_sgd=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    else:
        p["lr_adam"] = recipe.lr
    if recipe.schedule == "step":
        p.update(step_size=recipe.step_size, gamma=recipe.gamma)
    elif recipe.schedule == "multistep":
        p.update(milestone_1=recipe.milestones[0], milestone_2=recipe.milestones[-1], gamma=recipe.gamma)
    if float(recipe.rotation).is_integer():
        p["rotation"] = int(recipe.rotation)
    return p
