"""nas-report: a self-contained page whose figures carry the search's data, and a CSV of every trial."""

import json
import re

import optuna
import pandas as pd
import pytest

from nas.config import SearchConfig
from nas.report import write_report
from nas.results import open_study
from nas.search import run_search


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
    for title in ("Optimization history", "Validation accuracy against parameters", "Validation accuracy against FLOPs",
                  "Learning curves", "Parameter importances", "Trials per rung", "Share of the 20,000-parameter"):
        assert title in page, title
    # each figure holds the trials it plots: e.g. the references, by name, in the accuracy figures
    calls = re.findall(r'Plotly\.newPlot\(\s*"figure-(\d+)",\s*(\[.*?\]),\s*\{', page, flags=re.S)
    data = {int(i): json.loads(d) for i, d in calls}
    assert sorted(data) == list(range(figures))
    for i, traces in data.items():  # every figure plots points of this study, not an empty frame
        assert any(len(trace.get("x") or trace.get("y") or []) for trace in traces), f"figure {i} is empty"
    size = data[1]
    assert {trace["name"] for trace in size} >= {"candidates", "references", "Pareto front"}
    refs = next(trace for trace in size if trace["name"] == "references")
    assert sorted(refs["text"]) == sorted(["ref-19970", "ref-10066", "ref-19712", "ref-19750", "ref-18520"])
    curves = data[3]
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
