"""The search on real SQLite files, real Optuna studies and real (tiny) training runs."""

from dataclasses import replace

import optuna
import pytest
from optuna.trial import TrialState

from nas.data import DataError, load_mnist, make_splits
from nas.search import SearchConfig, Worker, best_trials, candidate_of, make_storage, open_study, run_search, trials_table
from nas.space import SearchSpace

from conftest import REPO_SPACE

REFERENCES = ["ref-19970", "ref-10066", "ref-19712", "ref-19750", "ref-18520"]


@pytest.fixture
def config(tiny_mnist_dir, tmp_path):
    return SearchConfig(space=str(REPO_SPACE), storage=f"sqlite:///{tmp_path}/s.db", study="t", epochs=2, trials=7,
                        holdout=200, subset=300, device="cpu", data_dir=str(tiny_mnist_dir), verify_data=False, seed=0)


def load(config):
    return optuna.load_study(study_name=config.study, storage=config.storage)


def test_a_new_study_starts_from_the_references_and_records_every_trial(config):
    finished = []
    summary = run_search(config, on_finished=finished.append)
    study = load(config)
    trials = study.get_trials()
    assert [t.user_attrs.get("reference") for t in trials[:5]] == REFERENCES
    assert [t.user_attrs["params"] for t in trials[:5]] == [19970, 10066, 19712, 19750, 18520]
    trained = [t for t in trials if t.user_attrs.get("trained")]
    assert summary.new_study and summary.counts["trained"] == len(trained) >= 7
    assert [t.number for t in finished] == [t.number for t in trials if t.state.is_finished()]
    for t in trained:
        a = t.user_attrs
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert set(t.intermediate_values) == set(range(1, a["epochs_run"] + 1))
        assert {"params", "flops", "spec", "val_acc", "test_acc", "epoch_seconds", "device", "seed"} <= set(a)
        assert a["params"] < 20_000 and t.constraints["params"] <= 0
        assert candidate_of(t).key == a["key"]  # the database alone rebuilds the candidate
        assert len(a["epoch_seconds"]) == a["epochs_run"] and a["device"] == "cpu"
    assert study.user_attrs["nas"]["budget"] == 20_000


def test_over_budget_candidates_are_rejected_untrained_and_infeasible(config):
    summary = run_search(replace(config, budget=15_000, trials=2))
    trials = load(config).get_trials()
    rejected = [t for t in trials if "rejected" in t.user_attrs]
    # four of the five references have 15,000 parameters or more
    assert {t.user_attrs["reference"] for t in rejected if "reference" in t.user_attrs} == {
        "ref-19970", "ref-19712", "ref-19750", "ref-18520"}
    assert summary.counts["rejected"] == len(rejected) >= 4 and summary.counts["trained"] >= 2
    for t in rejected:
        assert t.state == TrialState.PRUNED and t.intermediate_values == {}
        assert t.constraints["params"] == t.user_attrs["params"] - 15_000 + 1 > 0
        assert not t.user_attrs["trained"] and "val_acc" not in t.user_attrs
        assert "not fewer than the budget of 15,000" in t.user_attrs["rejected"]


def test_resume_grows_the_same_study_and_refuses_other_settings(config):
    run_search(replace(config, trials=6))
    second = run_search(replace(config, trials=2))
    study = load(config)
    assert not second.new_study and second.counts["duplicates"] == 0  # a resumed run proposes anew
    assert sum(bool(t.user_attrs.get("trained")) for t in study.get_trials()) >= 8
    assert sum("reference" in t.user_attrs for t in study.get_trials()) == 5  # enqueued once
    before = len(study.get_trials())
    for change, message in ((dict(budget=8000), "created with --budget 20000, this run asks for --budget 8000"),
                            (dict(epochs=3), "--epochs 2"), (dict(holdout=300), "--holdout 200"), (dict(subset=None), "--subset 300"),
                            (dict(objectives=("accuracy", "params")), "--objectives")):
        with pytest.raises(ValueError, match=message):
            run_search(replace(config, **change))
    assert len(load(config).get_trials()) == before  # a refused run writes nothing


def test_a_duplicate_candidate_reuses_the_earlier_result(config):
    space = SearchSpace.from_file(REPO_SPACE)
    study, _ = open_study(replace(config, references=False), space, make_storage(config.storage))
    a, b = space.references["ref-10066"], dict(space.references["ref-10066"], s2_c2_ch=24)
    for params in (a, a, b):
        study.enqueue_trial(params)
    summary = run_search(replace(config, trials=2, references=False))
    t0, t1, t2 = load(config).get_trials()[:3]
    assert t0.user_attrs["trained"] and t2.user_attrs["trained"]
    assert t1.user_attrs["duplicate_of"] == 0 and not t1.user_attrs["trained"]
    assert t1.value == t0.value and t1.user_attrs["test_acc"] == t0.user_attrs["test_acc"]
    assert t1.intermediate_values == t0.intermediate_values
    assert summary.counts == {"trained": 2, "complete": 2, "pruned": 0, "rejected": 0, "duplicates": 1, "failed": 0}


def test_pruned_trials_stop_early_and_keep_their_curve(config, tiny_mnist_dir):
    space = SearchSpace.from_file(REPO_SPACE)
    storage = make_storage(config.storage)
    cfg = replace(config, epochs=4, trials=1, references=False)
    open_study(cfg, space, storage)
    study = optuna.load_study(study_name="t", storage=storage, pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    study.enqueue_trial(space.references["ref-10066"])
    data = make_splits(load_mnist(tiny_mnist_dir, verify=False), 200)
    Worker(cfg, "run", study, space, data, "cpu", storage).run(deadline=None)
    t = study.get_trials()[0]
    assert t.state == TrialState.PRUNED and t.user_attrs["epochs_run"] == 1
    assert list(t.intermediate_values) == [1] and t.user_attrs["trained"]
    assert "stopped by the caller after epoch 1" in t.user_attrs["stopped"]


def test_two_worker_processes_share_one_sqlite_file(config):
    summary = run_search(replace(config, jobs=2, trials=6))
    trials = load(config).get_trials()
    assert all(t.state != TrialState.FAIL for t in trials)
    refs = [t.user_attrs["reference"] for t in trials if "reference" in t.user_attrs]
    assert sorted(refs) == sorted(REFERENCES)  # each enqueued reference ran exactly once
    assert summary.counts["trained"] >= 6 and summary.counts["failed"] == 0
    seeds = {t.user_attrs["seed"] for t in trials if t.user_attrs.get("trained")}
    assert len(seeds) == summary.counts["trained"]


def test_multi_objective_search_ends_with_a_pareto_front(config):
    cfg = replace(config, objectives=("accuracy", "params"), sampler="nsga2", trials=6)
    run_search(cfg)
    study = load(cfg)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    front = best_trials(study)
    assert front and all(t.values[1] == t.user_attrs["params"] for t in front)
    assert all(t.intermediate_values == {} for t in study.get_trials())  # no pruning, no reports
    assert trials_table(study)["val_acc"].notna().all()


@pytest.mark.parametrize("change, message", [
    (dict(objectives=("params",)), "--objectives must be accuracy"),
    (dict(objectives=("accuracy", "params"), pruner="median"), "cannot prune trials with several objectives"),
    (dict(sampler="cmaes"), "--sampler must be one of"),
    (dict(trials=0), "--trials must be at least 1"),
])
def test_bad_settings(config, change, message):
    with pytest.raises(ValueError, match=message):
        replace(config, **change)


def test_bad_storage_and_data_fail_before_any_write(config, tmp_path):
    with pytest.raises(ValueError, match="cannot open storage"):
        run_search(replace(config, storage="nosuchdb://x"))
    with pytest.raises(DataError, match="does not exist"):
        run_search(replace(config, data_dir=str(tmp_path / "nowhere")))
    assert not (tmp_path / "s.db").exists()


def test_a_dead_workers_trial_is_retried_by_the_next_run(config, monkeypatch):
    import time

    from nas import search

    monkeypatch.setattr(search, "HEARTBEAT_SECONDS", 1)  # stale after 4 s instead of 2 minutes
    space = SearchSpace.from_file(REPO_SPACE)
    storage = make_storage(config.storage)
    study, _ = open_study(replace(config, references=False), space, storage)
    study.enqueue_trial(space.references["ref-10066"], user_attrs={"reference": "ref-10066"})
    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna expects optimize(); our loop beats itself
        taken = study.ask()  # a worker took it, beat once, and was killed
    storage.record_heartbeat(taken._trial_id)
    time.sleep(5)
    summary = run_search(replace(config, trials=1, references=False))
    first, retry = load(config).get_trials()[:2]
    assert first.state == TrialState.FAIL
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["params"] == 10066  # the same candidate
    assert retry.user_attrs["reference"] == "ref-10066" and retry.user_attrs["trained"]
    assert summary.counts["trained"] == 1
