"""nas-report: a self-contained page whose figures carry the search's data, and a CSV of every trial."""

import json
import re

import optuna
import pandas as pd
import pytest

from nas.search.settings import SearchConfig
from nas.results.report import importance_figure, IMPORTANCES_SHOWN, write_report
from nas.results.query import open_study
from nas.search.run import run_search


pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("report")]  # its tests share one module fixture: build it once


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from conftest import write_mnist

    tmp = tmp_path_factory.mktemp("r")
    config = SearchConfig(storage=f"sqlite:///{tmp}/s.db", study="t", trials=7, device="cpu",
                          data_dir=str(write_mnist(tmp / "mnist")), verify_data=False,
                          settings=dict(epochs=2, rungs=("1x100",), finalists=2, promote=2, holdout=200, subset=300))
    run_search(config)
    return open_study(config.storage, "t")


def test_the_page_is_self_contained_and_carries_each_figures_data(study, tmp_path):
    out, csv = tmp_path / "r.html", tmp_path / "t.csv"
    figures = write_report(study, out, csv)
    page = out.read_text()
    assert figures >= 5 and page.count("Plotly.newPlot(") == figures
    assert "<script src=" not in page.replace('<script src="data:', "")  # plotly.js is inline, nothing fetched
    for title in ("The trade-off", "Optimization history", "Validation accuracy against parameters", "Validation accuracy against FLOPs",
                  "Learning curves", "Parameter importances", "Trials per rung", "Share of the 20,000-parameter"):
        assert title in page, title
    # each figure holds the trials it plots: e.g. the references, by name, in the accuracy figures
    calls = re.findall(r'Plotly\.newPlot\(\s*"figure-(\d+)",\s*(\[.*?\]),\s*\{', page, flags=re.S)
    data = {int(i): json.loads(d) for i, d in calls}
    assert sorted(data) == list(range(figures))
    for i, traces in data.items():  # every figure plots points of this study, not an empty frame
        assert any(len(trace.get("x") or trace.get("y") or []) for trace in traces), f"figure {i} is empty"
    front = data[0]  # the trade-off first: the winner per budget beside every published result
    assert {"winner per budget", "public results (test, as published)"} <= {trace["name"] for trace in front}
    assert sum(trace.get("legendgroup") == "references" for trace in front) == 5
    size = data[2]
    assert {trace["name"] for trace in size} >= {"candidates", "Pareto front"}
    refs = [trace for trace in size if trace.get("legendgroup") == "known"]  # one legend entry each
    assert sorted(trace["name"] for trace in refs) == sorted(["ref-19970", "ref-10066", "ref-19712", "ref-19750",
                                                              "ref-18520", "found-20k"])
    assert all(len(trace["x"]) == 1 and "text" not in trace for trace in refs)  # no labels to overlap
    colours = {trace["name"]: trace["marker"]["color"] for trace in refs}
    assert len(set(colours.values())) == 6 and colours == {trace["name"]: trace["marker"]["color"] for trace in data[1]
                                                          if trace.get("legendgroup") == "known"}
    curves = data[4]
    assert len(curves) == 2 and all(len(trace["x"]) == 2 for trace in curves)  # the two finalists, 2 epochs each
    assert "Top trials at full fidelity" in page and "c3x" in page  # the layer string of the top trials


def test_the_csv_has_one_row_per_trial_with_the_flattened_spec(study, tmp_path):
    write_report(study, tmp_path / "r.html", tmp_path / "t.csv")
    table = pd.read_csv(tmp_path / "t.csv")
    screening = optuna.load_study(study_name="t.rung0", storage=study._storage)
    assert len(table) == len(screening.trials) + len(study.trials)
    assert set(table["study"]) == {"t", "t.rung0"} and {"arch", "recipe_lr", "recipe_optimizer",
                                                        "user_attrs_val_acc"} <= set(table.columns)
    assert table["arch"].str.startswith("c").all()


def test_the_importance_figure_shows_only_the_largest_importances(tmp_path):
    # 40 parameters, two of which decide the value: the figure keeps Optuna's 15 largest, those two among them
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/i.db", direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: 10 * t.suggest_float("p0", 0, 1) + 5 * t.suggest_float("p1", 0, 1)
                   + 0.01 * sum(t.suggest_float(f"q{i}", 0, 1) for i in range(38)), n_trials=60)
    fig = importance_figure(study, "test")
    largest = list(optuna.importance.get_param_importances(study))[:IMPORTANCES_SHOWN]
    assert IMPORTANCES_SHOWN < 40 and list(fig.data[0].y) == largest[::-1]  # the largest last, drawn at the top
    assert {"p0", "p1"} <= set(fig.data[0].y[-3:])
    assert "15 largest of 40" in fig.layout.title.text
