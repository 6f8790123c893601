"""A search starts from what is known: the references and shipped presets that fit its budgets, and
on request an earlier study's best per band; a network the space cannot express is said, not dropped."""

import optuna
import pytest

from nas.arch.presets import load_preset, preset_names
from nas.results.query import open_study
from nas.search.opening import known_networks, read_search
from nas.store.record import TrialRecord, candidate_of
from nas.search.rungs import bucket_of, ranked_by_bucket
from nas.search.run import run_search
from nas.search.settings import SearchConfig
from nas.store.storage import make_storage
from nas.space.inverse import Inexpressible, params_of
from nas.space.space import SearchSpace, space_file

BUDGETS = (2_000, 4_000, 8_000, 20_000)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("warm")]


def config_for(tmp, **kw):
    from conftest import write_mnist

    settings = dict(budgets=BUDGETS, epochs=1, rungs=("1x100",), finalists=1, promote=2, holdout=200, subset=300)
    return SearchConfig(**{**dict(storage=f"sqlite:///{tmp}/w.db", study="w", space="mnist_front", trials=12,
                                  device="cpu", data_dir=str(write_mnist(tmp / "mnist")), verify_data=False, seed=3,
                                  settings=settings), **kw})


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("warm")
    config = config_for(tmp)
    run_search(config)
    return tmp, config


def test_every_preset_is_the_space_assignment_it_is_queued_as():
    space = SearchSpace.from_file(space_file("mnist_front"))
    for name in preset_names():
        candidate = load_preset(name)
        again = space.sample(optuna.trial.FixedTrial(params_of(space, candidate)))
        assert again.arch.layers == candidate.arch.layers, name
        assert again.recipe.in_effect() == {**candidate.recipe.in_effect(), "epochs": again.recipe.epochs}, name
        if name in space.references:
            assert params_of(space, candidate) == space.reference_params(name)  # the hand-written assignment


def test_a_network_outside_the_space_is_said_with_its_reason():
    narrow = SearchSpace.from_file(space_file("mnist_20k"))  # channels 4-32 in steps of 4
    with pytest.raises(Inexpressible, match="s1_c1_ch = 6 is outside the space.s range 4-32 step 4"):
        params_of(narrow, load_preset("found-2k"))


def test_a_front_search_starts_from_the_known_networks_of_every_band(searched):
    _, config = searched
    space = SearchSpace.from_file(space_file("mnist_front"))
    known = [*space.references, "found-2k", "found-4k", "found-8k", "found-20k"]  # each band's best preset
    first = open_study(config.storage, "w.rung0").get_trials()[: len(known)]
    assert [TrialRecord.of(t).name for t in first] == known
    for t in first:  # each trained as the preset itself
        assert candidate_of(t).arch.layers == load_preset(TrialRecord.of(t).name).arch.layers
    bands = {bucket_of(TrialRecord.of(t).params, BUDGETS) for t in first}
    assert bands == set(range(len(BUDGETS)))  # every band begins from a strong candidate


def test_a_space_that_cannot_express_a_preset_says_so(searched, tmp_path):
    tmp, config = searched
    narrow = config_for(tmp, study="narrow", space="mnist_20k")
    known = known_networks(narrow, read_search(narrow), make_storage(narrow.storage))
    assert "found-2k" not in [n for n, _ in known.queue]
    assert any(n.startswith("preset found-2k is not queued: space mnist_20k cannot express it") for n in known.notes)


def test_warm_start_queues_the_earlier_studys_best_of_each_band(searched):
    tmp, config = searched
    later = config_for(tmp, study="later", warm_start="w", trials=len(BUDGETS),
                       settings={**config.settings, "references": False})
    run_search(later)
    earlier = open_study(config.storage, "w")
    best = [band[0] for band in ranked_by_bucket(earlier.get_trials(), BUDGETS) if band]
    first = open_study(config.storage, "later.rung0").get_trials()[: len(best)]
    assert [TrialRecord.of(t).name for t in first] == [f"w#{t.number}" for t in best]
    assert [candidate_of(t).arch.layers for t in first] == [candidate_of(t).arch.layers for t in best]
    with pytest.raises(Exception, match="no earlier study 'nope'"):
        run_search(config_for(tmp, study="later2", warm_start="nope"))
