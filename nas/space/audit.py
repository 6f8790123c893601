"""Auditing a space without training: how many random samples fit a budget, and their sizes."""

from __future__ import annotations

from typing import Any

import optuna

from nas.space.space import SearchSpace
from nas.arch.budget import DEFAULT_BUDGET

AUDIT_SAMPLES = 1000  # random samples of a space audit (nas-show --space)


def audit(space: SearchSpace, samples: int = AUDIT_SAMPLES, seed: int = 0,
          budget: int = DEFAULT_BUDGET, enough: int | None = None) -> dict[str, Any]:
    """Sample ``samples`` candidates at random (no training) and summarize them against the budget;
    with ``enough``, stop as soon as that many fit (``sampled`` says how many were drawn).

    ``failed`` counts specs the builder refuses; a correct space has none.
    """
    import statistics

    from nas.arch.builder import plan

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    built, failures = [], []  # (params, flops) of each buildable sample; builder errors
    fitting = 0
    for _ in range(samples):
        if enough is not None and fitting >= enough:
            break
        trial = study.ask()
        try:
            infos = plan(space.sample(trial).arch)
        except ValueError as e:
            failures.append(str(e))
        else:
            built.append((sum(i.params for i in infos), sum(i.flops for i in infos)))
            fitting += built[-1][0] < budget
        study.tell(trial, 0.0)
    accepted = [(p, f) for p, f in built if p < budget]
    smallest = min((p for p, _ in built), default=None)

    def spread(values: list[int]) -> dict[str, float] | None:
        return {"min": min(values), "median": statistics.median(values), "max": max(values)} if values else None

    return {"space": space.name, "budget": budget, "sampled": len(built) + len(failures), "accepted": len(accepted),
            "rejected": len(built) - len(accepted), "failed": len(failures),
            "params": spread([p for p, _ in accepted]), "flops": spread([f for _, f in accepted]),
            "smallest": smallest, "first_failure": failures[0] if failures else None}
