"""What optuna-dashboard shows of a search, written into the study as the search runs: each trial's
note (its layer table, recipe and result, or why it was rejected) and, on the study's page, the
figure of validation accuracy against parameters with the references named.

Notes and figures are optuna-dashboard's own mechanisms (``save_note``,
``save_plotly_graph_object``); both live in the study's system attributes, so they can be written
after a trial has finished (a promotion, a retraining).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nas.store.record import TrialRecord, candidate_of
from nas.arch.describe import layer_markdown, recipe_line

FIGURE_ID = "accuracy-vs-params"


def trial_note(trial: FrozenTrial) -> str:
    """Markdown: what the trial is, its outcome, its layer table and its recipe."""
    r = TrialRecord.of(trial)
    title = f"### {r.name + ' · ' if r.name else ''}rung {r.rung} ({r.fidelity}) · {r.outcome}"
    lines = [title, ""]
    if r.outcome == "rejected":
        lines.append(f"**Rejected before training:** {r.reason}.")
    elif r.val_acc is not None:
        test = f", test {r.test_acc:.2%} (reported, never used to select)" if r.test_acc is not None else ""
        lines.append(f"**Validation accuracy {r.val_acc:.2%}** after {r.epochs} epochs{test}; "
                     f"{r.seconds or 0:.0f} s, seed {r.seed}.")
    if r.duplicate_of is not None:
        lines.append(f"Same candidate as trial {r.duplicate_of}: its result is reused.")
    if r.promoted_from is not None:
        lines.append(f"Promoted from trial {r.promoted_from} of the rung below.")
    if r.promoted_to is not None:
        lines.append(f"**Promoted** to the next rung as its trial {r.promoted_to}.")
    if r.retrain_test_acc:
        accs = ", ".join(f"{a:.2%}" for a in r.retrain_test_acc)
        lines.append(f"**Retrained** on all training images, {r.retrain_epochs} epochs, seeds "
                     f"{r.retrain_seeds}: test {accs}; mean {r.retrain_mean:.2%} ± {r.retrain_std:.2%}.")
    if r.reason and r.outcome not in ("rejected",):
        lines.append(f"Note: {r.reason}")
    try:
        candidate = candidate_of(trial)
    except ValueError:
        return "\n".join(lines)
    lines += ["", f"**Recipe:** {recipe_line(candidate.recipe)}", "", f"`{candidate.arch.key}`", "",
              layer_markdown(candidate.arch)]
    return "\n".join(lines)


def save_trial_note(study: optuna.Study, trial: FrozenTrial) -> None:
    """(Re)write a trial's note from what the storage holds now; running or finished."""
    from optuna_dashboard import save_note

    save_note(optuna.Trial(study, trial._trial_id), trial_note(study._storage.get_trial(trial._trial_id)))


def accuracy_figure(study: optuna.Study, title: str) -> Any:
    """Validation accuracy against parameters of the study's trained trials, references named,
    the Pareto front (most accurate for its size) drawn."""
    import plotly.graph_objects as go

    points = []
    for t in study.get_trials(deepcopy=False):
        r = TrialRecord.of(t)
        if r.is_point and r.params is not None:
            points.append((r.params, r.val_acc, t.number, r.name))
    fig = go.Figure()
    if not points:
        return fig.update_layout(title=title)
    others = [p for p in points if not p[3]]
    refs = [p for p in points if p[3]]
    fig.add_trace(go.Scatter(x=[p[0] for p in others], y=[p[1] for p in others], mode="markers", name="candidates",
                             text=[f"trial {p[2]}" for p in others], marker={"size": 6, "opacity": 0.6}))
    fig.add_trace(go.Scatter(x=[p[0] for p in refs], y=[p[1] for p in refs], mode="markers+text", name="references",
                             text=[p[3] for p in refs], textposition="top center",
                             marker={"size": 11, "symbol": "diamond", "color": "crimson"}))
    front = pareto_front([(p[0], p[1]) for p in points])
    fig.add_trace(go.Scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines", name="Pareto front",
                             line={"shape": "hv", "dash": "dot"}))
    return fig.update_layout(title=title, xaxis_title="parameters", yaxis_title="validation accuracy",
                             yaxis_tickformat=".2%")


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by a smaller-or-equal one with higher accuracy, by size."""
    front, best = [], float("-inf")
    for size, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((size, acc))
            best = acc
    return front


def refresh_figure(study: optuna.Study, title: str) -> None:
    from optuna_dashboard import save_plotly_graph_object

    save_plotly_graph_object(study, accuracy_figure(study, title), graph_object_id=FIGURE_ID)
