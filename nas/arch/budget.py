"""The budget filter: a candidate is trained only if it has fewer parameters than the budget."""

from __future__ import annotations

from dataclasses import dataclass

from nas.arch.spec import ArchSpec
from nas.arch.builder import count_params

DEFAULT_BUDGET = 20_000  # the rule is "fewer than 20K parameters"


@dataclass(frozen=True)
class BudgetVerdict:
    params: int
    budget: int

    @property
    def accepted(self) -> bool:
        return self.params < self.budget

    @property
    def excess(self) -> int:
        """How far over the budget (> 0 means rejected); Optuna's constraint value."""
        return self.params - self.budget + 1

    @property
    def reason(self) -> str:
        relation = "fewer than" if self.accepted else "not fewer than"
        return f"{self.params:,} parameters, {relation} the budget of {self.budget:,}"


def check_budget(arch: ArchSpec, budget: int = DEFAULT_BUDGET) -> BudgetVerdict:
    """Count the spec's parameters (no data, no training) and compare with the budget."""
    return BudgetVerdict(count_params(arch), budget)
