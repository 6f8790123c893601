"""Which knobs decide screening accuracy, per budget band: PED-ANOVA importances over every trained
screening candidate of the studies given, one band at a time.

    python benchmarks/importance.py --studies sqlite:///studies/cmp-front.db:front-s0 \\
        "sqlite:///studies/cmp-single.db:single-s0-{budget}" --budgets 2000,4000,8000,20000 \\
        [--out results/importance.csv]

The space asks most architecture roles per position (``s1_c2_ch``, ...), so no two networks of
different depth share those parameters, and Optuna's importances see only the parameters every
trial has. Each trial is therefore read as one value per *role*: a per-position role becomes its mean
over the positions (channels, padding, BatchNorm, dropout and separable convs per conv; transition
widths), depth is the number of 3x3 convs, the learning rate is one log-scaled knob for every
optimizer, and a role that a trial does not use takes a neutral value for the cross-check (no dropout: rate
0; momentum of an Adam trial: 0; schedule parameters of a schedule that has none: 0; padding not
asked: 1, padded); PED-ANOVA sees only the roles every candidate of the band asked. The values are
written to an in-memory study and Optuna's PED-ANOVA (``PedAnovaImportanceEvaluator``: how differently
a knob is distributed among the best 20 % of the band than among all of it; fANOVA would need
scikit-learn, which nothing else here uses) ranks them against the rung's validation accuracy.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution

from nas.results.query import open_study, rung_studies
from nas.store.record import TrialRecord
from nas.search.rungs import bucket_of

PER_POSITION = {"ch": "channels", "pad": "padding", "bn": "batchnorm", "drop": "conv_dropout", "sep": "separable"}
TOP_SHARE = 0.2  # PED-ANOVA's "good" trials: the best 20 % (at 60 candidates a band, the best 10 % is 6)
NEUTRAL = {"padding": 1.0, "dropout_rate": 0.0, "leaky_slope": 0.0, "momentum": 0.0, "nesterov": 0.0, "step_size": 0.0,
           "gamma": 0.0, "milestone_1": 0.0, "milestone_2": 0.0}


def roles_of(params: dict) -> dict[str, float | str]:
    """One value per role of the space (see the module's text)."""
    out: dict[str, float | str] = {}
    per_role: dict[str, list[float]] = {}
    for name, value in params.items():
        parts = name.split("_")
        if name.startswith("s") and len(parts) == 3 and parts[1].startswith("c") and parts[0][1:].isdigit():
            per_role.setdefault(PER_POSITION[parts[2]], []).append(float(value))
        elif name.startswith("t") and name.endswith("_ch") and name[1:-3].isdigit():
            per_role.setdefault("transition_channels", []).append(float(value))
        elif name.endswith("_convs") and name[1:-6].isdigit():
            per_role.setdefault("convs", []).append(float(value))
        elif name in ("lr_sgd", "lr_adam"):
            out["log10_lr"] = math.log10(value)
        else:
            out[name] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
    for role, values in per_role.items():
        out[role] = sum(values) if role == "convs" else statistics.fmean(values)
    return out


def band_importances(rows: list[tuple[dict, float]]) -> dict[str, float]:
    """PED-ANOVA over the roles every candidate of the band asked: a role filled with a neutral value
    (a spike at 0 beside a range) is a distribution PED-ANOVA's density estimate misreads (milestones,
    asked by one schedule in five, came out on top in every band)."""
    names = sorted(set.intersection(*(set(r) for r, _ in rows)))
    study = optuna.create_study(direction="maximize")
    dists = {}
    for name in names:
        values = [r.get(name) for r, _ in rows]
        if all(isinstance(v, float) for v in values):
            low, high = min(values), max(values)
            dists[name] = FloatDistribution(low, high if high > low else low + 1e-9)
        else:
            dists[name] = CategoricalDistribution(sorted({str(v) for v in values}))
    for r, acc in rows:
        params = {n: (r[n] if isinstance(dists[n], FloatDistribution) else str(r[n])) for n in names}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=acc))
    return optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=TOP_SHARE))


def variance_explained(rows: list[tuple[dict, float]]) -> dict[str, float]:
    """Each knob alone: the share of the band's accuracy variance between its values (one-way eta
    squared; a number knob in quartiles) - a cross-check that needs no model."""
    import pandas as pd

    frame = pd.DataFrame([{**r, "_acc": acc} for r, acc in rows])
    total = frame["_acc"].var(ddof=0)
    out = {}
    for name in frame.columns.drop("_acc"):
        column = frame[name]
        groups = pd.qcut(column, 4, duplicates="drop") if column.dtype.kind == "f" and column.nunique() > 4 else column
        means = frame.groupby(groups, observed=True)["_acc"].agg(["mean", "size"])
        out[name] = float((means["size"] * (means["mean"] - frame["_acc"].mean()) ** 2).sum() / len(frame) / total)
    return out


def screened(url_study: str, budgets: tuple[int, ...]) -> list[tuple[dict, float, int]]:
    """(role values, validation accuracy at screening, band) of each trained screening candidate."""
    url, name = url_study.rsplit(":", 1)
    names = [name.format(budget=b) for b in budgets] if "{budget}" in name else [name]
    out = []
    for n in names:
        study = open_study(url, n)
        rung0 = next((s for r, s in rung_studies(study) if r.index == 0 and s is not None), study)
        for t in rung0.get_trials(deepcopy=False):
            r = TrialRecord.of(t)
            if r.is_point and r.outcome != "diverged" and t.params:
                out.append((roles_of(t.params), r.val_acc, bucket_of(r.params, budgets)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", nargs="+", required=True, help="STORAGE:STUDY, {budget} for one study per budget")
    parser.add_argument("--budgets", required=True, help="A,B,... the bands")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--out", default="results/importance.csv")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    budgets = tuple(int(b) for b in args.budgets.split(","))
    rows = [row for s in args.studies for row in screened(s, budgets)]
    table = []
    for band, budget in enumerate(budgets):
        mine = [(r, acc) for r, acc, b in rows if b == band]
        low = budgets[band - 1] if band else 0
        if len(mine) < 10:
            print(f"band {low:,}-{budget:,}: {len(mine)} trained candidates, too few for importances")
            continue
        importances = band_importances([(r, acc) for r, acc in mine])
        every = sorted({k for r, _ in mine for k in r})
        alone = variance_explained([({n: r.get(n, NEUTRAL.get(n, 0.0)) for n in every}, acc) for r, acc in mine])
        table += [{"band": f"{low}-{budget}", "candidates": len(mine), "role": k, "ped_anova": importances.get(k),
                   "variance_explained": round(v, 4)} for k, v in sorted(alone.items(), key=lambda kv: -kv[1])]
        shown = ", ".join(f"{k} {v:.2f} ({alone[k]:.2f})" for k, v in list(importances.items())[: args.top])
        print(f"band {low:,}-{budget:,} ({len(mine)} candidates), PED-ANOVA (variance explained alone): {shown}")
        shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(alone.items(), key=lambda kv: -kv[1])[: args.top])
        print(f"  variance explained alone, every role: {shown}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["band", "candidates", "role", "ped_anova", "variance_explained"])
        writer.writeheader()
        writer.writerows(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
