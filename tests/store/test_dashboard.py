"""What optuna-dashboard shows of a search: a real optuna-dashboard server on a free port, read through
its HTTP API."""

import json
import socket
import subprocess
import time
import urllib.request

import optuna
import pytest

from conftest import command
from nas.search.settings import SearchConfig
from nas.store.dashboard import FIGURE_ID, pareto_front, trial_note
from nas.store.record import TrialRecord
from nas.search.run import run_search

pytestmark = pytest.mark.slow  # end to end: left out of the fast loop (pytest -m "not slow")


@pytest.fixture
def search(tiny_mnist_dir, tmp_path):
    config = SearchConfig(storage=f"sqlite:///{tmp_path}/s.db", study="t", trials=3, device="cpu",
                          data_dir=str(tiny_mnist_dir), verify_data=False,
                          settings=dict(epochs=1, rungs=(), holdout=200, subset=300, budget=15_000))
    run_search(config)
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def dashboard_study(storage: str, name: str) -> dict:
    """Study ``name`` as optuna-dashboard's API serves it (a real server on a free port)."""
    port = free_port()
    server = subprocess.Popen([command("optuna-dashboard"), storage, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                studies = get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("optuna-dashboard did not answer")
        study = next(s for s in studies if s["study_name"] == name)
        return get(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}?after=0")
    finally:
        server.terminate()
        server.wait(10)


def test_the_dashboard_shows_notes_attributes_feasibility_and_the_figure(search):
    detail = dashboard_study(search.storage, "t")
    assert detail["objective_names"] == ["validation accuracy"]  # not "Objective 0"
    trials = detail["trials"]
    trained = [t for t in trials if any(a["key"] == "outcome" and a["value"] == "complete" for a in t["user_attrs"])]
    rejected = [t for t in trials if any(a["key"] == "outcome" and a["value"] == "rejected" for a in t["user_attrs"])]
    assert trained and rejected
    attrs = {a["key"]: a["value"] for a in trained[0]["user_attrs"]}
    assert {"val_acc", "params", "flops", "fidelity", "seed"} <= set(attrs) and "spec" not in attrs
    assert all(len(a["value"]) < 200 for a in trained[0]["user_attrs"])  # readable in the trial table
    note = trained[0]["note"]["body"]
    assert "| # | layer | output | params | FLOPs |" in note and "**Recipe:**" in note and "conv 3x3" in note
    assert "Validation accuracy" in note
    assert "Rejected before training" in rejected[0]["note"]["body"]
    assert all(c > 0 for c in rejected[0]["constraints"]) and all(c <= 0 for c in trained[0]["constraints"])
    names = {a["value"] for t in trials for a in t["user_attrs"] if a["key"] == "name"}
    assert "ref-10066" in names  # references are named in the trial list
    assert [g["id"] for g in detail["plotly_graph_objects"]] == [FIGURE_ID]
    figure = json.loads(detail["plotly_graph_objects"][0]["graph_object"])
    assert {trace["name"] for trace in figure["data"]} >= {"candidates", "references", "Pareto front"}


def test_a_note_says_why_a_trial_was_promoted_and_retrained(search):
    study = optuna.load_study(study_name="t", storage=search.storage)
    trial = next(t for t in study.trials if TrialRecord.of(t).outcome == "complete")
    from nas.store.record import update_record, write_retrain

    update_record(study, trial, promoted_to=7)
    write_retrain(study, trial, [0, 1], [0.995, 0.996], 15)
    fresh = optuna.load_study(study_name="t", storage=search.storage).trials[trial.number]
    note = trial_note(fresh)
    assert "**Promoted** to the next rung as its trial 7" in note
    assert "test 99.50%, 99.60%; mean 99.55%" in note and "seeds [0, 1]" in note


def test_the_pareto_front_keeps_only_points_no_smaller_one_beats():
    points = [(100, 0.90), (50, 0.95), (200, 0.97), (150, 0.96), (300, 0.96)]
    assert pareto_front(points) == [(50, 0.95), (150, 0.96), (200, 0.97)]
