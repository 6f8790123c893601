import json

import pytest

from nas.arch.presets import load_preset, preset_names, preset_path, PRESETS_DIR

EXPECTED = ["ref-10066", "ref-18520", "ref-19712", "ref-19750", "ref-19970"]


def test_the_five_references_ship_as_readable_spec_files():
    assert [n for n in preset_names() if n.startswith("ref-")] == EXPECTED
    for name in EXPECTED:
        data = json.loads((PRESETS_DIR / f"{name}.json").read_text())
        assert data["name"] == name and data["notes"]  # documented where the recipe comes from
        assert load_preset(name).name == name


def test_published_recipes():
    assert load_preset("ref-10066").recipe.lr == 0.1 and load_preset("ref-10066").recipe.batch_size == 64
    assert load_preset("ref-19712").recipe.rotation == 10
    assert load_preset("ref-18520").recipe.schedule == "multistep"
    assert all(load_preset(n).recipe.epochs == 19 for n in EXPECTED)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown preset 'ref-1'; known presets: found-2k, found-4k, found-8k, found-20k, ref-10066"):
        preset_path("ref-1")


@pytest.mark.parametrize("name, budget", [("found-20k", 20_000), ("found-8k", 8_000), ("found-4k", 4_000),
                                          ("found-2k", 2_000)])
def test_found_networks_say_how_they_were_found_and_what_they_measured(name, budget):
    from nas.arch.builder import count_params

    data = json.loads((PRESETS_DIR / f"{name}.json").read_text())
    assert "`nas-search " in data["notes"] and "seed" in data["notes"] and "min wall" in data["notes"]
    measured = data["measured"]
    assert measured["seeds"] == [0, 1, 2] and len(measured["test_acc"]) == 3 and measured["epochs"] <= 19
    assert measured["mean"] == pytest.approx(sum(measured["test_acc"]) / 3, abs=1e-4)
    candidate = load_preset(name)
    assert count_params(candidate.arch) < budget and candidate.recipe.epochs == measured["epochs"]
