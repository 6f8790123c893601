"""``nas-report``: one self-contained HTML page of a search (plotly.js inline, so it opens offline),
and optionally a CSV with one row per trial.

Figures come from ``optuna.visualization`` where it has them (optimization history, parameter
importances) and from plotly directly where it has not (accuracy against size with the Pareto
front and the references, learning curves, the rungs, the budget).
"""

from __future__ import annotations

import html
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
import plotly.io as pio

from nas.results.front import front_figure
from nas.results.query import TOP_TRIALS, best_trials, rung_studies, settings_of, winners_by_budget
from nas.store.dashboard import pareto_front
from nas.store.record import ENDED, TrialRecord, candidate_of, curve_of
from nas.arch.budget import DEFAULT_BUDGET
from nas.arch.describe import recipe_line


def _points(study: optuna.Study) -> list[tuple[optuna.trial.FrozenTrial, TrialRecord]]:
    return [(t, r) for t in study.get_trials(deepcopy=False)
            for r in [TrialRecord.of(t)] if r.is_point]


REFERENCE_COLOURS = plotly.colors.qualitative.Dark2


def _accuracy(study: optuna.Study) -> Any:
    """Optuna's figures need the objective named where there are several (a front search ranks on two)."""
    return (lambda t: t.values[0]) if len(study.directions) > 1 else None


def _add_references(fig: go.Figure, refs: list[tuple[float, float, str]]) -> None:
    """One legend entry per known network (a reference or shipped preset the search started from): text
    labels on the points overlap, as they sit side by side.
    Colours follow the names' order, so a reference has the same colour in every figure."""
    for i, (x, y, name) in enumerate(sorted(refs, key=lambda r: r[2])):
        fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=name, legendgroup="known",
                                 legendgrouptitle_text="known networks", hovertext=name,
                                 marker={"size": 12, "symbol": "diamond",
                                         "color": REFERENCE_COLOURS[i % len(REFERENCE_COLOURS)],
                                         "line": {"width": 1, "color": "black"}}))


def history_figure(study: optuna.Study, label: str) -> go.Figure:
    fig = optuna.visualization.plot_optimization_history(study, target=_accuracy(study),
                                                         target_name="validation accuracy")
    _add_references(fig, [(t.number, r.val_acc, r.name) for t, r in _points(study) if r.name])
    return fig.update_layout(title=f"Optimization history ({label})", yaxis_tickformat=".2%")


def size_figure(study: optuna.Study, label: str, size: str) -> go.Figure:
    """Validation accuracy against ``size`` (params or flops), Pareto front drawn, references named."""
    pts = [(getattr(r, size), r.val_acc, t.number, r.name) for t, r in _points(study) if getattr(r, size) is not None]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[p[0] for p in pts if not p[3]], y=[p[1] for p in pts if not p[3]], mode="markers",
                             name="candidates", text=[f"trial {p[2]}" for p in pts if not p[3]],
                             marker={"size": 6, "opacity": 0.6}))
    _add_references(fig, [(p[0], p[1], p[3]) for p in pts if p[3]])
    front = pareto_front([(p[0], p[1]) for p in pts])
    fig.add_trace(go.Scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines+markers",
                             name="Pareto front", line={"shape": "hv", "dash": "dot"}))
    name = "parameters" if size == "params" else "FLOPs per image"
    return fig.update_layout(title=f"Validation accuracy against {name} ({label})", xaxis_title=name,
                             yaxis_title="validation accuracy", yaxis_tickformat=".2%")


def curves_figure(studies: list[tuple[Any, optuna.Study]], top: int) -> go.Figure:
    """Per-epoch validation accuracy of the best trials and of the references, where recorded."""
    fig = go.Figure()
    for rung, study in studies:
        pts = sorted(_points(study), key=lambda tr: -tr[1].val_acc)
        chosen = pts[:top] + [p for p in pts[top:] if p[1].name]
        for t, r in chosen:
            curve = curve_of(t)
            if len(curve) < 2:
                continue
            steps = sorted(curve)
            fig.add_trace(go.Scatter(x=steps, y=[curve[s] for s in steps], mode="lines+markers",
                                     name=f"r{rung.index} #{t.number} {r.name}".strip(),
                                     line={"dash": "dash" if r.name else "solid"}))
    return fig.update_layout(title="Learning curves: best trials and known networks (validation accuracy per epoch)",
                             xaxis_title="epoch", yaxis_title="validation accuracy", yaxis_tickformat=".2%")


IMPORTANCES_SHOWN = 15  # the default space has about 85 parameters; more bars cannot be read


def importance_figure(study: optuna.Study, label: str) -> go.Figure:
    """Optuna's parameter importances figure, cut to the ``IMPORTANCES_SHOWN`` largest."""
    try:
        with warnings.catch_warnings():  # few trials per value of a parameter: the page says how many trials
            warnings.simplefilter("ignore")
            fig = optuna.visualization.plot_param_importances(study, target=_accuracy(study),
                                                              target_name="validation accuracy")
    except (ValueError, RuntimeError) as e:  # too few trials, or no parameter shared by all of them
        fig = go.Figure().add_annotation(text=f"not enough trials for importances ({e})", showarrow=False)
        return fig.update_layout(title=f"Parameter importances ({label})")
    if not fig.data:
        return fig.update_layout(title=f"Parameter importances ({label}; no complete trial yet)")
    bar = fig.data[0]  # ascending: the largest importance is the last bar, drawn at the top
    total = len(bar.y)
    keep = slice(-IMPORTANCES_SHOWN, None)
    bar.update(x=bar.x[keep], y=bar.y[keep], text=bar.text[keep], hovertemplate=bar.hovertemplate[keep])
    shown = len(bar.y)
    which = f"the {shown} largest of {total} parameters" if shown < total else f"all {total} parameters"
    return fig.update_layout(title=f"Parameter importances ({label}; {which} every trial has)",
                             height=max(400, 160 + 28 * shown), yaxis={"automargin": True})


def funnel_figure(studies: list[tuple[Any, optuna.Study]], budget: int) -> tuple[go.Figure, dict[str, Any]]:
    """Candidates per rung and outcome; the share of the parameter budget the trained ones use."""
    fig = go.Figure()
    counts: dict[str, list[int]] = {o: [] for o in ENDED}
    labels = []
    shares = []
    for rung, study in studies:
        labels.append(f"rung {rung.index}<br>{rung.label}")
        rs = [TrialRecord.of(t) for t in study.get_trials(deepcopy=False)]
        for o in ENDED:
            counts[o].append(sum(r.outcome == o for r in rs))
        if rung.index == 0:
            shares = [r.params / budget for r in rs if r.trained and r.params]
    for o in ENDED:
        if any(counts[o]):
            fig.add_trace(go.Bar(x=labels, y=counts[o], name=o))
    fig.update_layout(barmode="stack", title=f"Trials per rung and outcome ({counts['rejected'][0] if labels else 0} "
                      "candidates rejected over the budget at screening, never trained)", yaxis_title="trials")
    summary = {"rejected": sum(counts["rejected"]), "trained_share_median": float(pd.Series(shares).median())
               if shares else None}
    return fig, summary


def budget_figure(study: optuna.Study, budget: int) -> go.Figure:
    rs = [TrialRecord.of(t) for t in study.get_trials(deepcopy=False)]
    trained = [r.params / budget for r in rs if r.trained and r.params]
    rejected = sum(r.outcome == "rejected" for r in rs)
    fig = go.Figure(go.Histogram(x=trained, nbinsx=20, name="trained candidates"))
    return fig.update_layout(title=f"Share of the {budget:,}-parameter budget used by trained candidates "
                             f"({rejected} rejected over it)", xaxis_title="parameters / budget",
                             xaxis_tickformat=".0%", yaxis_title="candidates")


def top_table(study: optuna.Study, top: int) -> str:
    rows = []
    for t, r in sorted(_points(study), key=lambda tr: (-tr[1].val_acc, tr[0].number))[:top]:
        try:
            c = candidate_of(t)
        except ValueError:
            continue
        retrain = f"{r.retrain_mean:.2%} ± {r.retrain_std:.2%} ({len(r.retrain_test_acc)} seeds)" \
            if r.retrain_mean is not None else ""
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            t.number, r.name, f"{r.val_acc:.2%}", "" if r.test_acc is None else f"{r.test_acc:.2%}", retrain,
            f"{r.params:,}", f"{r.flops:,}")) + f"<td><code>{html.escape(c.arch.key)}</code></td>"
            f"<td>{html.escape(recipe_line(c.recipe))}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("trial", "name", "val acc", "test acc", "retrained test acc", "params",
                                             "FLOPs", "layers", "recipe"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def winners_html(study: optuna.Study) -> str:
    """The winner (or a front search's winner per budget), as the page's first line."""
    settings = settings_of(study)
    rows = winners_by_budget(study) if settings is not None and settings.budgets else \
        [(None, t) for t in best_trials(study)[:1]]
    lines = []
    for budget, t in rows:
        if t is None:
            lines.append(f"under {budget:,} parameters: no full-fidelity trial yet")
            continue
        r = TrialRecord.of(t)
        retrained = (f"; retrained {r.retrain_mean:.2%} ± {r.retrain_std:.2%} over {len(r.retrain_test_acc)} seeds"
                     if r.retrain_mean is not None else "")
        lines.append(f"{f'under {budget:,} parameters: ' if budget else ''}trial {t.number} of "
                     f"<code>{html.escape(study.study_name)}</code>{' (' + html.escape(r.name) + ')' if r.name else ''}: "
                     f"validation {r.val_acc:.2%} at {html.escape(r.fidelity)}, {r.params:,} parameters, "
                     f"{r.flops:,} FLOPs{retrained}")
    title = "Winner per budget" if len(rows) > 1 else "Winner"
    return f"<p><b>{title}:</b><br>" + "<br>".join(lines) + "</p>" if lines else ""


def build_report(study: optuna.Study, top: int = TOP_TRIALS) -> tuple[str, list[go.Figure]]:
    """The page's HTML and its figures, for the search whose main study is ``study``."""
    settings = settings_of(study)
    rungs = [(rung, s) for rung, s in rung_studies(study) if s is not None] or [(None, study)]
    budget = settings.budget if settings else DEFAULT_BUDGET
    first_rung, first = rungs[0]
    first_label = f"rung 0, {first_rung.label}" if first_rung is not None else study.study_name
    figures = [front_figure(study), history_figure(first, first_label), size_figure(first, first_label, "params"),
               size_figure(first, first_label, "flops"),
               curves_figure([(r, s) for r, s in rungs if r is not None] or [], top),
               importance_figure(first, first_label)]
    if first_rung is not None:
        funnel, summary = funnel_figure(rungs, budget)
        figures.append(funnel)
    figures.append(budget_figure(first, budget))
    winner = winners_html(study)
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>nas-report: {html.escape(study.study_name)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px} table{border-collapse:collapse;"
             "font-size:13px} td,th{border:1px solid #ccc;padding:4px;text-align:left;vertical-align:top}"
             " code{font-size:11px;word-break:break-all}</style></head><body>",
             f"<h1>Search <code>{html.escape(study.study_name)}</code></h1>"]
    if settings is not None:
        parts.append(f"<p>Space {html.escape(settings.space)}, budget &lt; {settings.budget:,} parameters, "
                     f"{settings.epochs} epochs at full fidelity, rungs: "
                     f"{html.escape(', '.join(r.label for r, _ in rungs if r is not None))}; validation "
                     f"{settings.holdout:,} images held out of the training set; the test set is reported, never "
                     "used to select.</p>")
    parts.append(winner)
    for i, fig in enumerate(figures):
        parts.append(pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False, div_id=f"figure-{i}"))
    parts.append(f"<h2>Top trials at full fidelity</h2>{top_table(study, top)}")
    if first is not study:
        parts.append(f"<h2>Top trials at screening ({html.escape(first_label)})</h2>{top_table(first, top)}")
    parts.append("</body></html>")
    return "\n".join(parts), figures


def trials_csv(study: optuna.Study) -> pd.DataFrame:
    """One row per trial of every rung: ``study.trials_dataframe()``, the flattened spec for reading,
    and ``spec``: the whole candidate as JSON, its recipe at the search's full-fidelity epochs (as
    ``nas-train --trial`` runs it), so any row retrains from the file alone (``nas-train --csv``)."""
    settings = settings_of(study)
    frames = []
    for rung, s in rung_studies(study) or [(None, study)]:
        if s is None:
            continue
        df = s.trials_dataframe(attrs=("number", "value", "datetime_start", "datetime_complete", "duration", "params",
                                       "user_attrs", "state"))
        specs = []
        for t in s.get_trials(deepcopy=False):
            try:
                c = candidate_of(t)
            except ValueError:
                specs.append({})
                continue
            full = replace(c, recipe=c.recipe.compressed(settings.epochs)) if settings else c
            specs.append({"arch": c.arch.key, "layers": len(c.arch.layers),
                          **{f"recipe_{k}": (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
                             for k, v in c.recipe.to_dict().items()}, "spec": full.to_json()})
        df = pd.concat([df.reset_index(drop=True), pd.DataFrame(specs)], axis=1)
        df.insert(0, "study", s.study_name)
        df.insert(1, "rung", rung.index if rung is not None else 0)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


WRITER = "nas-report"  # the owner its files are recorded under: it replaces only what it wrote


def check_report_paths(paths: dict[str, Path | None]) -> None:
    """Every file the report would write (parameter name -> path) can be written, replacing only a
    file this command wrote and nobody changed since."""
    from nas.outputs import check_own_file

    for name, path in paths.items():
        if path is not None:
            check_own_file(name, path, WRITER)


def write_report(study: optuna.Study, out: Path, csv: Path | None = None, top: int = TOP_TRIALS,
                 front_csv: Path | None = None) -> int:
    """Write the page (and the CSVs: every trial; one row per budget), all or nothing; returns the
    number of figures. An existing file is replaced only if this command wrote it."""
    from nas.outputs import write_own_files
    from nas.results.front import front_csv_writer

    check_report_paths({"out": out, "csv": csv, "front_csv": front_csv})
    page, figures = build_report(study, top)
    files = {out: lambda p: p.write_text(page, encoding="utf-8")}
    if csv is not None:
        table = trials_csv(study)
        files[csv] = lambda p: table.to_csv(p, index=False)
    if front_csv is not None:
        files[front_csv] = front_csv_writer(study)
    write_own_files(files, WRITER)
    return len(figures)
