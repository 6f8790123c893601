"""Settings: each default in one place, each bad value named by its parameter."""

import dataclasses

import pytest

from nas.errors import SettingError
from nas.search.settings import ASKABLE_SETTINGS, SearchConfig, StudySettings


def test_defaults_live_in_the_dataclasses_and_the_cli_shows_them(capsys):
    from nas.cli import search

    with pytest.raises(SystemExit):
        search.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    d = StudySettings()
    assert f"(default {d.budget})" in help_text and f"(default {d.epochs})" in help_text
    assert f"(default {','.join(d.rungs)})" in help_text and f"(default {d.finalists})" in help_text
    assert f"(default {SearchConfig().jobs})" in help_text


def test_only_explicit_settings_are_compared_with_a_stored_study():
    config = SearchConfig(settings={"budget": 8000})
    assert config.new_settings(space="x").budget == 8000 and config.new_settings().epochs == StudySettings().epochs
    assert set(ASKABLE_SETTINGS) == {f.name for f in dataclasses.fields(StudySettings)} - {"space", "space_digest"}


def test_several_objectives_imply_one_fidelity_unless_rungs_are_asked():
    assert SearchConfig(settings={"objectives": ("accuracy", "params")}).new_settings().rungs == ()
    with pytest.raises(SettingError) as caught:
        SearchConfig(settings={"objectives": ("accuracy", "params"), "rungs": ("1x100",)})
    assert caught.value.name == "rungs"


@pytest.mark.parametrize("kwargs, name", [
    ({"settings": {"holdout": 60_000}}, "holdout"), ({"settings": {"subset": 0}}, "subset"),
    ({"settings": {"finalists": 0}}, "finalists"), ({"settings": {"epochs": 1001}}, "epochs"),
    ({"settings": {"references": "yes"}}, "references"), ({"jobs": 65}, "jobs"), ({"threads": 0}, "threads"),
    ({"timeout": float("inf")}, "timeout"), ({"pruner": "bogus"}, "pruner"),
])
def test_each_bad_value_is_named(kwargs, name):
    with pytest.raises(SettingError) as caught:
        SearchConfig(**kwargs)
    assert caught.value.name == name and str(caught.value).startswith(f"{name}: ")


def test_pruning_needs_one_fidelity():
    with pytest.raises(SettingError, match="works only at one fidelity"):
        SearchConfig(pruner="median").pruner_for(StudySettings())
    assert SearchConfig().pruner_for(StudySettings(rungs=())) == "median"
    assert SearchConfig().pruner_for(StudySettings()) == "none"


def test_default_rungs_shrink_to_fit_a_small_study_and_explicit_ones_do_not():
    assert SearchConfig().new_settings().rungs == StudySettings().rungs
    assert SearchConfig(settings={"epochs": 4, "subset": 10_000}).new_settings().rungs == ("2x10000",)
    small = SearchConfig(settings={"epochs": 1, "subset": 300}).new_settings()
    assert small.rungs == ()  # nothing is cheaper than 1 epoch on 300 images: one fidelity
    with pytest.raises(SettingError):
        SearchConfig(settings={"epochs": 1, "subset": 300, "rungs": ("2x10000",)})
