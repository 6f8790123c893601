"""Words for a candidate: the layer table (terminal, dashboard notes, report) and the recipe line."""

from nas.arch.describe import layer_markdown, layer_rows, recipe_line
from nas.arch.presets import load_preset
from nas.arch.recipe import Recipe


def test_the_layer_rows_add_up_to_the_preset():
    rows = layer_rows(load_preset("ref-19712").arch)
    assert sum(r["params"] for r in rows) == 19712 and sum(r["flops"] for r in rows) == 4_591_514
    assert rows[0]["layer"] == "conv 3x3 1->16 (no bias)" and rows[0]["output"] == "16x26x26"


def test_the_markdown_table_has_a_row_per_layer_and_a_total():
    md = layer_markdown(load_preset("ref-10066").arch).splitlines()
    assert md[0] == "| # | layer | output | params | FLOPs |" and len(md) == 2 + 29 + 1
    assert md[-1] == "| | **total** | | **10,066** | **2,220,112** |"


def test_the_recipe_line_names_the_schedule():
    line = recipe_line(Recipe(schedule="multistep", milestones=(10, 15), gamma=0.1, rotation=7, epochs=15))
    assert "schedule multistep at 10, 15 x0.1" in line and "rotation 7" in line and "15 epochs" in line
    assert "momentum 0.9" in line and "adam" not in line
