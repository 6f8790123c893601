"""Words for a candidate: its layer table and recipe line, for the terminal, the trial notes in
optuna-dashboard and the report."""

from __future__ import annotations

from typing import Any

from nas.builder import plan
from nas.spec import ArchSpec, Layer, Recipe


def describe_layer(layer: Layer, in_channels: int) -> str:
    if layer.op == "conv":
        extras = ", ".join(x for x in (f"pad {layer.pad}" if layer.pad else "", "" if layer.bias else "no bias") if x)
        return f"conv {layer.k}x{layer.k} {in_channels}->{layer.out}" + (f" ({extras})" if extras else "")
    if layer.op == "linear":
        return f"linear {in_channels}->{layer.out}" + ("" if layer.bias else " (no bias)")
    if layer.op in ("dropout", "dropout2d"):
        return f"{layer.op} {layer.p:g}"
    if layer.op == "leaky_relu":
        return f"leaky_relu {layer.slope:g}"
    return {"bn": "batchnorm", "maxpool": "maxpool 2x2", "gap": "global avg pool"}.get(layer.op, layer.op)


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
    return (f"{opt}, weight decay {recipe.weight_decay:g}, batch {recipe.batch_size}, schedule {schedule}, "
            f"rotation {recipe.rotation:g}, translate {recipe.translate:g}, label smoothing {recipe.label_smoothing:g}, "
            f"{recipe.epochs} epochs")
