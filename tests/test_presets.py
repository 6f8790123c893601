import json

import pytest

from nas.presets import PRESETS_DIR, load_preset, preset_names, preset_path

EXPECTED = ["ref-10066", "ref-18520", "ref-19712", "ref-19750", "ref-19970"]


def test_the_five_references_ship_as_readable_spec_files():
    assert preset_names() == EXPECTED
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
    with pytest.raises(ValueError, match="unknown preset 'ref-1'; known presets: ref-10066"):
        preset_path("ref-1")
