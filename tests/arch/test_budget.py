from nas.arch.budget import check_budget, DEFAULT_BUDGET
from nas.arch.presets import load_preset
from nas.arch.spec import ArchSpec, conv, gap


def test_the_rule_is_fewer_than_twenty_thousand():
    assert DEFAULT_BUDGET == 20_000
    v = check_budget(load_preset("ref-19970").arch)
    assert v.accepted and v.params == 19_970 and v.excess == -29


def test_budget_is_exclusive_and_says_why():
    arch = load_preset("ref-19712").arch  # 19,712 parameters
    at = check_budget(arch, 19_712)
    assert not at.accepted and at.excess == 1
    assert at.reason == "19,712 parameters, not fewer than the budget of 19,712"
    below = check_budget(arch, 19_713)
    assert below.accepted and below.excess == 0
    assert "fewer than the budget of 19,713" in below.reason


def test_rejection_needs_only_the_spec():
    big = ArchSpec((conv(64), conv(64), conv(64), conv(10), gap()))
    v = check_budget(big, 20_000)
    assert not v.accepted and v.params == 640 + 36928 * 2 + 5770 and v.excess > 0
