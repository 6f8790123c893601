"""Reading a search: the study, the trial, the winner and the table."""

import pytest

from nas.errors import SettingError
from nas.search.settings import SearchConfig
from nas.store.record import TrialRecord
from nas.results.query import best_trials, find_trial, open_study, rung_studies, trials_table
from nas.search.run import run_search


pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("results")]  # its tests share one module fixture: build it once


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    from conftest import write_mnist

    tmp = tmp_path_factory.mktemp("res")
    config = SearchConfig(storage=f"sqlite:///{tmp}/s.db", study="one", trials=3, device="cpu",
                          data_dir=str(write_mnist(tmp / "mnist")), verify_data=False,
                          settings=dict(epochs=1, rungs=("1x100",), finalists=1, promote=2, holdout=200, subset=300,
                                        budget=15_000))
    run_search(config)
    return config.storage


def test_the_only_search_is_found_without_its_name_and_rung_studies_are_not_searches(url):
    study = open_study(url)
    assert study.study_name == "one"
    assert [(r.index, s.study_name) for r, s in rung_studies(study)] == [(0, "one.rung0"), (1, "one")]
    with pytest.raises(SettingError, match="no study 'two'"):
        open_study(url, "two")


def test_the_winner_is_the_best_full_fidelity_trial(url):
    study = open_study(url)
    best = best_trials(study)
    assert len(best) == 1 and TrialRecord.of(best[0]).outcome == "complete"
    assert find_trial(study, "best").number == find_trial(study, None).number == best[0].number
    with pytest.raises(SettingError, match="must be a trial number or 'best'"):
        find_trial(study, "first")
    with pytest.raises(SettingError, match="has no trial 7"):
        find_trial(study, 7)


def test_a_rejected_trial_cannot_be_chosen(url):
    study = [s for r, s in rung_studies(open_study(url)) if r.index == 0][0]
    rejected = next(t for t in study.trials if TrialRecord.of(t).outcome == "rejected")
    with pytest.raises(SettingError, match="was rejected"):
        find_trial(study, rejected.number)


def test_the_table_has_a_row_per_trained_trial(url):
    study = [s for r, s in rung_studies(open_study(url)) if r.index == 0][0]
    table = trials_table(study)
    trained = [t for t in study.trials if TrialRecord.of(t).has_result]
    assert len(table) == len(trained) and table["val_acc"].notna().all()
    assert set(table["outcome"]) <= {"complete", "pruned", "diverged", "duplicate"}
    assert len(trials_table(study, include_untrained=True)) == len(study.trials)
