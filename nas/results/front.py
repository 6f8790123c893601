"""The trade-off a search found: the best network under each budget, as rows and as a figure beside the
reference networks and the best public results (``public_results.csv``, figures with their sources).

A budget's winner is chosen on validation accuracy at full fidelity; its test accuracy is the
3-seed mean of a retraining on all 60,000 images where one was run (``nas-train --trial best
--budget N --seeds 0,1,2``), the search run's own test accuracy (one run, reported only) otherwise.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable

import optuna
import plotly.graph_objects as go

from nas.results.query import usable_trials, winners_by_budget
from nas.store.record import TrialRecord

PUBLIC_RESULTS = Path(__file__).parent / "public_results.csv"
FRONT_COLUMNS = ("budget", "trial", "params", "flops", "val_acc", "test_acc", "retrain_mean", "retrain_std", "seeds",
                 "epochs")


def front_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per budget: its winner's size, validation accuracy and (where retrained) test accuracy."""
    rows = []
    for budget, trial in winners_by_budget(study):
        row: dict[str, Any] = dict.fromkeys(FRONT_COLUMNS)
        row["budget"] = budget
        if trial is not None:
            r = TrialRecord.of(trial)
            row.update(trial=trial.number, params=r.params, flops=r.flops, val_acc=r.val_acc, test_acc=r.test_acc,
                       retrain_mean=r.retrain_mean, retrain_std=r.retrain_std, epochs=r.retrain_epochs or r.epochs,
                       seeds=",".join(map(str, r.retrain_seeds)) if r.retrain_seeds else None)
        rows.append(row)
    return rows


def front_csv_writer(study: optuna.Study) -> Callable[[Path], None]:
    """What writes the front as CSV (one row per budget) to a path."""
    rows = front_rows(study)

    def write(path: Path) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FRONT_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    return write


def write_front_csv(study: optuna.Study, path: Path) -> int:
    """The front as CSV, written whole; returns the number of rows."""
    from nas.system import atomic_write

    atomic_write(path, front_csv_writer(study))
    return len(front_rows(study))


def public_results() -> list[dict[str, Any]]:
    """The reference networks' stated results and the best public ones, as committed with their sources."""
    with open(PUBLIC_RESULTS, newline="") as f:
        return [{**row, "params": int(row["params"]), "test_acc": float(row["test_acc"]) / 100}
                for row in csv.DictReader(f)]


def winner_labels(rows: list[dict[str, Any]]) -> list[str]:
    """Each winner's budgets, once: a network that wins under several budgets gets one label naming them."""
    labels = []
    for row in rows:
        same = [r for r in rows if r["trial"] == row["trial"]]
        labels.append(", ".join(f"< {r['budget']:,}" for r in same) if same[0] is row else "")
    return labels


def front_figure(study: optuna.Study) -> go.Figure:
    """Accuracy against parameters (log axis): every full-fidelity trial, each budget's winner, and the
    references and public results as labelled points."""
    fig = go.Figure()
    trials = [TrialRecord.of(t) for t in usable_trials(study)]
    fig.add_trace(go.Scatter(x=[r.params for r in trials], y=[r.val_acc for r in trials], mode="markers",
                             name="full-fidelity trials (validation)", marker={"size": 6, "opacity": 0.4}))
    rows = [row for row in front_rows(study) if row["trial"] is not None]
    accuracy = [row["retrain_mean"] if row["retrain_mean"] is not None else row["val_acc"] for row in rows]
    fig.add_trace(go.Scatter(
        x=[row["params"] for row in rows], y=accuracy, mode="lines+markers+text", name="winner per budget",
        text=winner_labels(rows), textposition="bottom right", line={"shape": "hv"},
        marker={"size": 12, "symbol": "star"},
        hovertext=[f"trial {row['trial']}: {'test, mean of seeds ' + row['seeds'] if row['seeds'] else 'validation'}"
                   for row in rows]))
    published = public_results()
    for p in (p for p in published if p["kind"] == "reference"):  # side by side near 20K: named in the legend
        fig.add_trace(go.Scatter(x=[p["params"]], y=[p["test_acc"]], mode="markers", name=p["name"],
                                 legendgroup="references", legendgrouptitle_text="references (test, as published)",
                                 hovertext=f"{p['name']}: {p['how']} ({p['source']})",
                                 marker={"size": 10, "symbol": "diamond", "line": {"width": 1, "color": "black"}}))
    public = [p for p in published if p["kind"] == "public"]
    fig.add_trace(go.Scatter(x=[p["params"] for p in public], y=[p["test_acc"] for p in public], mode="markers+text",
                             name="public results (test, as published)",
                             text=[f"{p['params']:,}" for p in public], textposition="top center",
                             hovertext=[f"{p['params']:,} params, {p['epochs'] or '?'} epochs: {p['how']} "
                                        f"({p['source']})" for p in public],
                             marker={"size": 10, "symbol": "circle-open", "line": {"width": 2}}))
    for row in front_rows(study):
        fig.add_vline(x=row["budget"], line={"dash": "dot", "width": 1, "color": "grey"})
    shown = [a for a in accuracy if a is not None] + [p["test_acc"] for p in published]
    low = max(0.95, min(shown, default=0.985) - 0.003)
    return fig.update_layout(title="The trade-off: accuracy against parameters (winners: 3-seed test mean where "
                             "retrained, else validation; dotted: the budgets)", xaxis_title="parameters",
                             xaxis_type="log", yaxis_title="accuracy", yaxis_tickformat=".2%",
                             yaxis_range=[low, 0.998])
