import json

import pytest

from nas.arch.presets import load_preset, preset_names
from nas.arch.spec import ArchSpec, conv, gap, Layer, linear, relu
from nas.arch.candidate import Candidate, load_spec_file
from nas.arch.recipe import Recipe


def test_every_preset_round_trips_through_json():
    for name in preset_names():
        candidate = load_preset(name)
        again = Candidate.from_json(candidate.to_json())
        assert again == candidate
        assert again.key == candidate.key
        assert Candidate.from_json(candidate.to_json(pretty=True)) == candidate


def test_layer_dicts_carry_only_their_own_fields():
    assert conv(16, pad=1, bias=False).to_dict() == {"op": "conv", "out": 16, "k": 3, "pad": 1, "bias": False}
    assert relu().to_dict() == {"op": "relu"}
    assert Layer.from_dict({"op": "dropout2d", "p": 0.1}) == Layer("dropout2d", p=0.1)


def test_key_tells_architectures_apart():
    a = ArchSpec((conv(10), gap()))
    assert a.key == ArchSpec((conv(10), gap())).key
    assert a.key != ArchSpec((conv(10, bias=False), gap())).key
    assert a.key != ArchSpec((conv(10, pad=1), gap())).key
    assert Candidate(a, Recipe(lr=0.01)).key != Candidate(a, Recipe(lr=0.02)).key
    assert Candidate(a, name="x").key == Candidate(a, name="y").key  # the name is not part of identity


@pytest.mark.parametrize("layer, message", [
    (dict(op="conv", out=-8), "channel count must be an integer from 1 to 4096"),
    (dict(op="conv", out=0), "channel count must be an integer from 1 to 4096"),
    (dict(op="conv", out=10**9), "channel count must be an integer from 1 to 4096"),
    (dict(op="conv", out=8, k=2), "kernel size must be an odd integer from 1 to 31"),
    (dict(op="conv", out=8, pad=-1), "padding must be an integer from 0 to 15"),
    (dict(op="dropout", p=float("nan")), "rate must be in"),
    (dict(op="deformable_conv", out=8), "unknown layer kind 'deformable_conv'"),
    (dict(op="dropout", p=1.5), "rate must be in [0, 1)"),
    (dict(op="dropout"), "needs field 'p'"),
    (dict(op="relu", p=0.1), "takes no field 'p'"),
    (dict(op="linear", out=10, k=3), "takes no field 'k'"),
    (dict(op="shared"), "needs field 'times'"),
    (dict(op="shared", times=0), "times must be an integer from 1 to 16"),
    (dict(op="shared", times=3, sep="yes"), "sep must be true or false"),
    (dict(op="conv", out=8, times=2), "takes no field 'times'"),
])
def test_bad_layers_are_refused_with_a_clear_message(layer, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        ArchSpec.from_dict({"layers": [layer, {"op": "gap"}]})


def test_bad_layer_error_names_its_position():
    with pytest.raises(ValueError, match="layer 1: unknown layer kind"):
        ArchSpec.from_dict({"layers": [{"op": "conv", "out": 10}, {"op": "swish"}]})


@pytest.mark.parametrize("fields, message", [
    (dict(optimizer="lion"), "optimizer must be one of"),
    (dict(lr=0), "lr must be > 0"),
    (dict(schedule="multistep"), "multistep needs milestones"),
    (dict(milestones=(15, 10)), "milestones must be increasing"),
    (dict(nesterov=True, momentum=0.0), "nesterov needs"),
    (dict(optimizer="adam", nesterov=True), "nesterov needs"),
    (dict(batch_size=0), "batch_size must be an integer from 1 to 4096"),
    (dict(batch_size=10**9), "batch_size must be an integer from 1 to 4096"),
    (dict(lr=float("inf")), "lr must be > 0"),
    (dict(epochs=2.5), "epochs must be an integer from 1 to 1000"),
    (dict(translate=0.9), "translate must be in"),
    (dict(crop=1.0), "crop must be in"),
    (dict(init="he"), "init must be one of"),
])
def test_bad_recipes_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**fields)


def test_recipe_round_trips_and_rejects_unknown_keys():
    r = Recipe(optimizer="adamw", lr=3e-3, schedule="multistep", milestones=(5, 9), rotation=7.5)
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert "crop" not in r.to_dict() and "init" not in r.to_dict()  # earlier recipes keep their keys
    published = Recipe(optimizer="adam", lr=0.01, schedule="piecewise", crop=0.15, init="xavier", epochs=12)
    assert Recipe.from_dict(json.loads(json.dumps(published.to_dict()))) == published
    with pytest.raises(ValueError, match="unknown key 'warmup'"):
        Recipe.from_dict({"warmup": 3})


def test_spec_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_spec_file(bad)
    with pytest.raises(ValueError, match="cannot read spec file"):
        load_spec_file(tmp_path / "missing.json")
    good = tmp_path / "net.json"
    good.write_text(Candidate(ArchSpec((conv(8), relu(), gap(), linear(10)))).to_json())
    assert load_spec_file(good).arch.layers[-1] == linear(10)


def test_specs_are_immutable():
    a = ArchSpec((conv(10), gap()))
    with pytest.raises(AttributeError):
        a.layers = ()
    with pytest.raises(AttributeError):
        a.layers[0].out = 3
