import optuna
import pytest
import yaml

from nas.arch.builder import plan
from nas.arch.presets import load_preset
from nas.space.audit import audit
from nas.space.space import SearchSpace, space_file

from conftest import REPO_SPACE, SPACE_FILES

REFERENCES = ["ref-19970", "ref-10066", "ref-19712", "ref-19750", "ref-18520"]


@pytest.fixture(scope="module")
def space():
    return SearchSpace.from_file(REPO_SPACE)


@pytest.mark.parametrize("name", REFERENCES)
def test_fixed_trial_rebuilds_each_reference_exactly(space, name):
    candidate = space.sample(optuna.trial.FixedTrial(space.references[name]))
    preset = load_preset(name)
    assert candidate.arch == preset.arch
    assert candidate.recipe == preset.recipe


def test_a_missing_parameter_is_asked_for(space):
    params = dict(space.references["ref-19712"])
    del params["s2_c4_ch"]
    with pytest.raises(ValueError, match="s2_c4_ch"):
        space.sample(optuna.trial.FixedTrial(params))


def test_changing_one_parameter_changes_the_spec(space):
    params = dict(space.references["ref-19712"], s1_c1_ch=12)
    assert space.sample(optuna.trial.FixedTrial(params)).arch != load_preset("ref-19712").arch


@pytest.mark.parametrize("path", SPACE_FILES, ids=lambda p: p.name)
def test_every_space_file_loads_and_samples_only_buildable_specs(path):
    space = SearchSpace.from_file(path)
    report = audit(space, 300, seed=1)
    assert report["failed"] == 0, report["first_failure"]
    assert report["accepted"] >= 150  # at least half of random samples fit the budget
    for name in space.references:
        plan(space.reference(name).arch)


def test_an_audit_asked_for_enough_fitting_candidates_stops_there(space):
    whole = audit(space, 300, seed=1, budget=12_000)
    some = audit(space, 300, seed=1, budget=12_000, enough=3)
    assert some["accepted"] == 3 and some["sampled"] < whole["sampled"] == 300
    # the same random stream, stopped right after its third fitting sample
    assert audit(space, some["sampled"], seed=1, budget=12_000)["accepted"] == 3
    assert audit(space, some["sampled"] - 1, seed=1, budget=12_000)["accepted"] == 2
    none = audit(space, 50, seed=1, budget=500, enough=1)  # nothing fits: every sample is drawn
    assert none["accepted"] == 0 and none["sampled"] == 50 and none["smallest"] > 500


def test_padding_is_forced_where_an_unpadded_conv_would_not_leave_room(space):
    # Three blocks of four convs and a 3x3 head: unpadded everywhere would collapse the map.
    params = dict(space.references["ref-19750"], s1_convs=4, s2_convs=4, s3_convs=4, head_pool=True)
    for i in (1, 2, 3):
        for j in range(1, 5):
            params.update({f"s{i}_c{j}_ch": 8, f"s{i}_c{j}_pad": 0, f"s{i}_c{j}_bn": True, f"s{i}_c{j}_drop": False})
    arch = space.sample(optuna.trial.FixedTrial(params)).arch
    plan(arch)  # builds
    assert any(layer.op == "conv" and layer.k == 3 and layer.pad == 1 for layer in arch.layers)


def test_sampling_uses_the_trial_and_names_positions(space):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    space.sample(trial)
    assert "s1_convs" in trial.params and "s1_c1_ch" in trial.params and "optimizer" in trial.params
    assert isinstance(study.trials[0].distributions["s1_c1_ch"], optuna.distributions.IntDistribution)


def write_space(tmp_path, mutate):
    data = yaml.safe_load(REPO_SPACE.read_text())
    mutate(data)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["arch"].update(kernel={"choices": [3, 5]}), "unknown role 'kernel'"),
    (lambda d: d["arch"].pop("head"), "missing role 'head'"),
    (lambda d: d["arch"].update(head={"choices": ["gap_linear", "attention"]}), r"head: values must be among"),
    (lambda d: d["arch"].update(stages={"choices": [2, 5]}), "do not fit a 28x28 image"),
    (lambda d: d["recipe"].update(lr_sgd={"low": 0.1, "high": 0.01}), "lr_sgd"),
    (lambda d: d["arch"].update(channels={"low": 0, "high": 8}), "channels must be at least 1"),
    (lambda d: d["arch"].update(convs={"min": 1}), "convs: expected"),
])
def test_bad_space_files_are_refused_with_the_file_and_role(tmp_path, mutate, message):
    with pytest.raises(ValueError, match=message) as info:
        SearchSpace.from_file(write_space(tmp_path, mutate))
    assert "space.yaml" in str(info.value)


def test_fixed_values_are_not_searched(tmp_path):
    space = SearchSpace.from_file(write_space(tmp_path, lambda d: d["arch"].update(order="bn_relu", stages=2)))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    arch = space.sample(trial).arch
    assert "order" not in trial.params and "stages" not in trial.params
    assert sum(layer.op == "maxpool" for layer in arch.layers) in (1, 2)  # one transition (+ head pool)
    first_conv = arch.layers.index(next(l for l in arch.layers if l.op == "conv"))
    following = [l.op for l in arch.layers[first_conv + 1:first_conv + 3]]
    assert following[0] in ("bn", "relu", "leaky_relu")
    if "bn" in following:  # bn_relu: BatchNorm right after the conv
        assert following[0] == "bn"


def test_the_digest_ignores_references_and_tracks_distributions(tmp_path):
    base = SearchSpace.from_file(REPO_SPACE).digest
    assert SearchSpace.from_file(write_space(tmp_path, lambda d: d.pop("references"))).digest == base
    assert SearchSpace.from_file(write_space(tmp_path, lambda d: d["recipe"].update(epochs=10))).digest != base


def test_a_space_is_found_by_its_shipped_name_or_by_its_path(tmp_path):
    from nas.space.space import shipped_spaces, space_file

    assert space_file() == space_file("mnist_20k") == REPO_SPACE and "mnist_20k" in shipped_spaces()
    mine = tmp_path / "mnist_20k"  # a file of that name where the user stands wins over the shipped one
    mine.write_text(REPO_SPACE.read_text())
    assert space_file(str(mine)) == mine and space_file(str(tmp_path / "x.yaml")) == tmp_path / "x.yaml"


def test_the_front_space_offers_the_shared_conv_and_reads_it_back():
    from pathlib import Path

    from nas.arch import load_spec_file
    from nas.space.inverse import Inexpressible, params_of

    spec = load_spec_file(Path(__file__).resolve().parents[2] / "docs" / "reference" / "found-2k-shared3.json")
    assert params_of(SearchSpace.from_file(space_file("mnist_front")), spec)["shared"] == 3  # layer for layer
    with pytest.raises(Inexpressible):  # the default space has no shared conv (nor 18-channel convs)
        params_of(SearchSpace.from_file(space_file("mnist_20k")), spec)
