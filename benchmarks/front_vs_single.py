"""One front search against separate single-budget searches at equal CPU time: for each budget, the best
full-fidelity validation accuracy each found under it, what it screened, and its wall time.

    python benchmarks/front_vs_single.py --front sqlite:///studies/cmp.db:front \\
        --single sqlite:///studies/cmp.db:single-{budget} [--out results/front-vs-single.csv]

``--single`` names each budget's study with ``{budget}``. The searches should have run side by side
on one thread each, the front search for as long as the single ones together.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import optuna

from nas.results.query import best_under, open_study, rung_studies, settings_of
from nas.search.record import TrialRecord
from nas.search.run import runs_of


def screened(study: optuna.Study, high: int) -> int:
    """Trained screening candidates with fewer than ``high`` parameters."""
    rung0 = next((s for r, s in rung_studies(study) if r.index == 0 and s is not None), study)
    return sum(1 for t in rung0.get_trials(deepcopy=False)
               if TrialRecord.of(t).trained and (TrialRecord.of(t).params or 0) < high)


def wall(study: optuna.Study) -> float:
    return sum(r["seconds"] for r in runs_of(study))


def row(label: str, study: optuna.Study, budget: int) -> dict:
    winner = best_under(study, budget)
    r = TrialRecord.of(winner) if winner is not None else None
    return {"search": label, "budget": budget, "wall_s": round(wall(study)), "screened_under": screened(study, budget),
            "best_val_acc": r.val_acc if r else None, "params": r.params if r else None,
            "test_acc_one_run": r.test_acc if r else None, "trial": winner.number if winner is not None else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--front", required=True, help="STORAGE:STUDY of the front search")
    parser.add_argument("--single", required=True, help="STORAGE:STUDY of the single searches, with {budget}")
    parser.add_argument("--out", default="results/front-vs-single.csv")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url, name = args.front.rsplit(":", 1)
    front = open_study(url, name)
    budgets = settings_of(front).buckets
    rows = []
    single_url, single_name = args.single.rsplit(":", 1)
    for budget in budgets:
        rows.append(row("front", front, budget))
        rows.append(row("single", open_study(single_url, single_name.format(budget=budget)), budget))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    singles = sum(r["wall_s"] for r in rows if r["search"] == "single")
    print(f"front search: {rows[0]['wall_s']:,} s; single searches together: {singles:,} s")
    print("| budget | front: best val (params), screened under it | single: best val (params), screened |")
    print("|---|---|---|")
    for f_row, s_row in zip(rows[::2], rows[1::2]):
        cell = (lambda r: f"{r['best_val_acc']:.2%} ({r['params']:,}), {r['screened_under']}"
                if r["best_val_acc"] is not None else f"none, {r['screened_under']}")
        print(f"| < {f_row['budget']:,} | {cell(f_row)} | {cell(s_row)} |")


if __name__ == "__main__":
    main()
