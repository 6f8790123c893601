"""One front search against separate single-budget searches at equal CPU time: for each budget, the best
full-fidelity validation accuracy each found under it, what it screened, and its wall time.

    python benchmarks/front_vs_single.py --front sqlite:///studies/cmp-front.db:front-s{seed} \\
        --single "sqlite:///studies/cmp-single.db:single-s{seed}-{budget}" --seeds 0,1 \\
        [--out results/front-vs-single.csv]

``--single`` names each budget's study with ``{budget}``, both name each seed's with ``{seed}``
(single runs differ by chance, so the table is per seed and their mean). The searches should have
run side by side on one thread each, the front search for as long as the single ones together.
Two front searches (two spaces, say) compare the same way: ``--single`` without ``{budget}`` and
``--labels cut,full``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import optuna

from nas.results.query import best_under, open_study, rung_studies, settings_of
from nas.store.record import TrialRecord
from nas.store.study import runs_of


def screened(study: optuna.Study, high: int) -> int:
    """Trained screening candidates with fewer than ``high`` parameters."""
    rung0 = next((s for r, s in rung_studies(study) if r.index == 0 and s is not None), study)
    return sum(1 for t in rung0.get_trials(deepcopy=False)
               if TrialRecord.of(t).trained and (TrialRecord.of(t).params or 0) < high)


def wall(study: optuna.Study) -> float:
    return sum(r["seconds"] for r in runs_of(study))


def row(label: str, study: optuna.Study, budget: int, seed: int) -> dict:
    winner = best_under(study, budget)
    r = TrialRecord.of(winner) if winner is not None else None
    return {"seed": seed, "search": label, "study": study.study_name, "budget": budget, "wall_s": round(wall(study)), "screened_under": screened(study, budget),
            "best_val_acc": r.val_acc if r else None, "params": r.params if r else None,
            "test_acc_one_run": r.test_acc if r else None, "trial": winner.number if winner is not None else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--front", required=True, help="STORAGE:STUDY of the front search")
    parser.add_argument("--single", required=True, help="STORAGE:STUDY of the single searches, with {budget}")
    parser.add_argument("--seeds", default="0", help="A,B,... the seeds, where the study names hold {seed}")
    parser.add_argument("--labels", default="front,single", help="A,B: the two arms' names in the table and CSV")
    parser.add_argument("--out", default="results/front-vs-single.csv")
    args = parser.parse_args()
    labels = args.labels.split(",")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = []
    for seed in (int(x) for x in args.seeds.split(",")):
        url, name = args.front.format(seed=seed, budget="{budget}").rsplit(":", 1)
        front = open_study(url, name)
        single_url, single_name = args.single.rsplit(":", 1)
        for budget in settings_of(front).buckets:
            rows.append(row(labels[0], front, budget, seed))
            rows.append(row(labels[1], open_study(single_url, single_name.format(budget=budget, seed=seed)), budget,
                            seed))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print_table(rows, labels)


def print_table(rows: list[dict], labels: list[str]) -> None:
    seeds = sorted({r["seed"] for r in rows})
    for seed in seeds:
        walls = [sum({r["study"]: r["wall_s"] for r in rows if r["seed"] == seed and r["search"] == arm}.values())
                 for arm in labels]  # each study once: one front study serves every budget
        print(f"seed {seed}: {labels[0]} {walls[0]:,} s; {labels[1]} {walls[1]:,} s")
    cell = (lambda r: f"{r['best_val_acc']:.2%} ({r['params']:,}), {r['screened_under']}"
            if r["best_val_acc"] is not None else f"none, {r['screened_under']}")
    print(f"| budget | seed | {labels[0]}: best val (params), screened under it | {labels[1]}: best val (params), "
          "screened |")
    print("|---|---|---|---|")
    for f_row, s_row in zip(rows[::2], rows[1::2]):
        print(f"| < {f_row['budget']:,} | {f_row['seed']} | {cell(f_row)} | {cell(s_row)} |")
    for budget in dict.fromkeys(r["budget"] for r in rows):
        means = {arm: [r["best_val_acc"] for r in rows if r["budget"] == budget and r["search"] == arm
                       and r["best_val_acc"] is not None] for arm in labels}
        shown = [f"{sum(v) / len(v):.2%}" if len(v) == len(seeds) else "n/a" for v in means.values()]
        print(f"| < {budget:,} | mean | {shown[0]} | {shown[1]} |")


if __name__ == "__main__":
    main()
