"""A front search: one run over several budgets returns the best network under each, on tiny data."""

from dataclasses import replace

import pytest
from optuna.trial import TrialState

from nas.errors import SettingError
from nas.results.front import front_rows, public_results, write_front_csv
from nas.results.query import find_trial, open_study, usable_trials, winners_by_budget
from nas.store.record import TrialRecord
from nas.search.rungs import bucket_of
from nas.search.run import run_search
from nas.search.settings import SearchConfig, StudySettings

BUDGETS = (1_500, 20_000)


pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("front")]  # its tests share one module fixture: build it once


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    from conftest import write_mnist

    tmp = tmp_path_factory.mktemp("front")
    # Random sampling: each proposal the equal time share turns away costs a TPE fit otherwise (0.5 s
    # here), and on tiny data the share turns away anywhere from 60 to 250 of them, by timing noise.
    config = SearchConfig(storage=f"sqlite:///{tmp}/f.db", study="f", space="mnist_front", trials=12, device="cpu",
                          data_dir=str(write_mnist(tmp / "mnist")), verify_data=False, seed=3, sampler="random",
                          settings=dict(budgets=BUDGETS, epochs=1, rungs=("1x100",), finalists=1, promote=2,
                                        holdout=200, subset=300, references=False))
    summary = run_search(config)
    return config, summary


def test_budgets_imply_two_objectives_and_the_largest_budget():
    s = SearchConfig(settings={"budgets": (2000, 8000)}).new_settings()
    assert s.objectives == ("accuracy", "params") and s.budget == 8000 and s.buckets == (2000, 8000)
    assert s.rungs  # a front search screens in rungs, unlike a Pareto search at one fidelity
    with pytest.raises(SettingError, match="budgets"):
        StudySettings(budgets=(8000, 2000), budget=2000)
    with pytest.raises(SettingError, match="largest of `budgets`"):
        StudySettings(budgets=(2000, 8000), budget=20_000, objectives=("accuracy", "params"))
    assert [bucket_of(p, (2000, 8000)) for p in (10, 1999, 2000, 7999)] == [0, 0, 1, 1]
    flops = SearchConfig(settings={"budgets": (2000, 8000), "objectives": ("accuracy", "flops")}).new_settings()
    assert flops.objectives == ("accuracy", "flops") and flops.budget == 8000  # --cost flops: budgets stay params
    with pytest.raises(SettingError, match="one cost"):
        StudySettings(budgets=(2000, 8000), budget=8000, objectives=("accuracy", "params", "flops"))


def test_every_budget_gets_finalists_of_its_own_size_and_a_winner_under_it(front):
    config, summary = front
    study = open_study(config.storage, "f")
    assert len(study.directions) == 2  # the dashboard draws the study's Pareto front
    finals = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert sorted({bucket_of(TrialRecord.of(t).params, BUDGETS) for t in finals}) == [0, 1]  # one per band
    winners = dict(winners_by_budget(study))
    assert set(winners) == set(BUDGETS)
    usable = [TrialRecord.of(t) for t in usable_trials(study)]
    for budget, t in winners.items():
        r = TrialRecord.of(t)
        assert r.params < budget
        dominated = [o for o in usable if o.params <= r.params and o.val_acc >= r.val_acc
                     and (o.params < r.params or o.val_acc > r.val_acc)]
        assert dominated == []  # no trial of the study is as good with fewer parameters
        assert find_trial(study, "best", budget).number == t.number
    assert find_trial(study, "best").number == winners[20_000].number  # the best overall: the largest budget
    rows = front_rows(study)
    assert [row["budget"] for row in rows] == list(BUDGETS) and all(row["params"] < row["budget"] for row in rows)


def test_the_front_csv_has_a_row_per_budget_and_the_public_results_their_sources(front, tmp_path):
    config, _ = front
    path = tmp_path / "front.csv"
    assert write_front_csv(open_study(config.storage, "f"), path) == len(BUDGETS)
    header, *lines = path.read_text().splitlines()
    assert header.startswith("budget,trial,params,flops,val_acc") and len(lines) == len(BUDGETS)
    public = public_results()
    assert {p["name"] for p in public if p["kind"] == "reference"} == {"ref-19970", "ref-10066", "ref-19712",
                                                                       "ref-19750", "ref-18520"}
    assert all(p["source"] and 0.98 < p["test_acc"] < 1 for p in public)


def test_a_budget_with_no_finalist_yet_says_where_to_look(front):
    config, _ = front
    study = open_study(config.storage, "f")
    with pytest.raises(SettingError, match="no completed full-fidelity trial under 100 parameters yet.*f.rung0"):
        find_trial(study, "best", 100)


def test_a_single_budget_search_keeps_one_band(front):
    config, _ = front
    single = replace(config, settings={"budget": 20_000}).new_settings()
    assert single.buckets == (20_000,) and all(not r.buckets for r in single.make_rungs("x"))


def test_a_network_that_wins_under_several_budgets_is_labelled_once():
    from nas.results.front import winner_labels

    rows = [{"budget": 2000, "trial": 0}, {"budget": 4000, "trial": 1}, {"budget": 8000, "trial": 1},
            {"budget": 20_000, "trial": 3}]
    assert winner_labels(rows) == ["< 2,000", "< 4,000, < 8,000", "", "< 20,000"]


def test_resuming_with_only_the_study_name_checks_the_folders_the_first_run_exported(front, tmp_path):
    # The first run (--budgets ... --export out) wrote out/under-1500 and out/under-20000; resumed with only
    # --study f --export out, the budgets come from the study, not from the command line.
    import argparse

    from nas.cli.search import check_take_away, export_folders
    from nas.results.export import MARK

    config, _ = front
    args = argparse.Namespace(report=None, export=str(tmp_path / "out"))
    first = export_folders(args, budgets=BUDGETS)
    assert [folder.name for folder, _ in first] == ["under-1500", "under-20000"]
    for folder, _ in first:
        folder.mkdir(parents=True)
        (folder / MARK).write_text('{"written_by": "nas-export"}\n')
        (folder / "metrics.json").write_text("{}")
    check_take_away(args, replace(config, settings={}, trials=1))  # was: "out is not a folder nas-export wrote"
    (first[0][0] / MARK).unlink()
    (first[0][0] / "notes.txt").write_text("the user's")  # now a folder of the user's
    with pytest.raises(SettingError, match="under-1500 is not a folder nas-export wrote"):
        check_take_away(args, replace(config, settings={}, trials=1))


def test_every_budget_band_gets_an_equal_share_of_the_screening_time(front):
    config, _ = front
    screening = open_study(config.storage, "f.rung0").get_trials()
    records = [r for r in (TrialRecord.of(t) for t in screening)]
    trained = [r for r in records if r.trained]
    per_band = [sum(r.seconds for r in trained if bucket_of(r.params, BUDGETS) == b) for b in range(len(BUDGETS))]
    assert len(trained) == 12 and max(per_band) - min(per_band) <= max(r.seconds for r in trained), per_band
    turned_away = [r for r in records if r.outcome == "rejected" and "equal share" in (r.reason or "")]
    assert turned_away and all(r.params < BUDGETS[-1] for r in turned_away)  # under budget, yet never trained
