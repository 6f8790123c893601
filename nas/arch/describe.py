"""Words for a candidate: its layer table and recipe line, for the terminal, the trial notes in
optuna-dashboard and the report."""

from __future__ import annotations

from typing import Any

from nas.arch.spec import ArchSpec, Layer
from nas.arch.builder import plan
from nas.arch.ops import OPS
from nas.arch.recipe import Recipe


def describe_layer(layer: Layer, in_channels: int) -> str:
    return OPS[layer.op].words(layer, in_channels)


def layer_rows(arch: ArchSpec) -> list[dict[str, Any]]:
    rows, channels = [], arch.in_channels
    for info in plan(arch):
        rows.append({"#": info.index, "layer": describe_layer(info.layer, channels),
                     "output": "x".join(map(str, info.out_shape)), "params": info.params, "flops": info.flops})
        channels = info.out_shape[0]
    return rows


def layer_table(arch: ArchSpec) -> Any:
    import pandas as pd

    return pd.DataFrame(layer_rows(arch)).set_index("#")


def layer_markdown(arch: ArchSpec) -> str:
    rows = layer_rows(arch)
    lines = ["| # | layer | output | params | FLOPs |", "|---:|---|---|---:|---:|"]
    lines += [f"| {r['#']} | {r['layer']} | {r['output']} | {r['params']:,} | {r['flops']:,} |" for r in rows]
    lines.append(f"| | **total** | | **{sum(r['params'] for r in rows):,}** | **{sum(r['flops'] for r in rows):,}** |")
    return "\n".join(lines)


def recipe_line(recipe: Recipe) -> str:
    opt = f"{recipe.optimizer} lr {recipe.lr:.4g}"
    if recipe.optimizer == "sgd":
        opt += f" momentum {recipe.momentum:.3g}" + (" nesterov" if recipe.nesterov else "")
    schedule = recipe.schedule
    if schedule == "step":
        schedule += f" every {recipe.step_size:g} epochs x{recipe.gamma:.3g}"
    elif schedule == "multistep":
        schedule += f" at {', '.join(f'{m:g}' for m in recipe.milestones)} x{recipe.gamma:.3g}"
    extras = "".join([f", scale {recipe.scale:g}" if recipe.scale else "", f", crop {recipe.crop:g}" if recipe.crop else "",
                      f", {recipe.init} init" if recipe.init != "default" else ""])
    return (f"{opt}, weight decay {recipe.weight_decay:g}, batch {recipe.batch_size}, schedule {schedule}, "
            f"rotation {recipe.rotation:g}, translate {recipe.translate:g}{extras}, label smoothing "
            f"{recipe.label_smoothing:g}, {recipe.epochs} epochs")
