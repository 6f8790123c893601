"""Which sampler screens a front search best: multi-objective TPE, NSGA-II or random search, each at
screening fidelity with the same budgets, trials, seed and data, on one CPU thread.

    python benchmarks/samplers.py --data-dir ../shared/data/mnist [--trials 60] [--out results/samplers.csv]

For each sampler it prints, per budget, the best validation accuracy among the screened candidates
under it and how many candidates fell in that budget's band (what promotion has to choose from), and
the hypervolume of (accuracy, log10 parameters) against the reference point (0.1, chance, and log10 of the
largest budget). One seed: read the differences against the spread between seeds of a screening run.
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from pathlib import Path

import optuna

from nas.results.query import usable_trials
from nas.store.record import TrialRecord
from nas.search.rungs import bucket_of
from nas.search.run import run_search
from nas.search.settings import SearchConfig

BUDGETS = (2000, 4000, 8000, 20_000)


FLOOR = 0.1  # the hypervolume's reference accuracy: chance for 10 classes (a screening rung can sit far below 0.9)


def hypervolume(points: list[tuple[float, int]], budget: int) -> float:
    """Area dominated by (accuracy up, log parameters down) above accuracy FLOOR and under the budget."""
    front, best = [], FLOOR
    for params, acc in sorted((p, a) for a, p in points if a > FLOOR and p < budget):
        if acc > best:
            front.append((math.log10(params), acc))
            best = acc
    area, right = 0.0, math.log10(budget)
    for i, (x, y) in enumerate(front):
        nxt = front[i + 1][0] if i + 1 < len(front) else right
        area += (nxt - x) * (y - FLOOR)
    return area


def screen(sampler: str, args: argparse.Namespace, folder: Path) -> dict:
    config = SearchConfig(storage=f"sqlite:///{folder}/{sampler}.db", study=sampler, space="mnist_front",
                          trials=args.trials, sampler=sampler, threads=1, seed=args.seed, device="cpu",
                          data_dir=args.data_dir,
                          settings=dict(budgets=BUDGETS, epochs=args.epochs, subset=args.images, rungs=(),
                                        references=False))
    start = time.time()
    summary = run_search(config)
    seconds = time.time() - start
    points = [(TrialRecord.of(t).val_acc, TrialRecord.of(t).params) for t in usable_trials(summary.study)]
    row = {"sampler": sampler, "trials": len(points), "seconds": round(seconds), "hypervolume": 0.0}
    for i, budget in enumerate(BUDGETS):
        band = [acc for acc, p in points if bucket_of(p, BUDGETS) == i and p < budget]
        under = [acc for acc, p in points if p < budget]
        row[f"best<{budget}"] = max(under, default=None)
        row[f"band<{budget}"] = len(band)
    row["hypervolume"] = round(hypervolume(points, BUDGETS[-1]), 5)
    return row, points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--images", type=int, default=5000, help="training images of the screening fidelity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samplers", default="tpe,nsga2,random")
    parser.add_argument("--out", default="results/samplers.csv")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows, screened = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in args.samplers.split(","):
            row, points = screen(sampler, args, Path(tmp))
            rows.append(row)
            screened += [{"sampler": sampler, "params": p, "val_acc": a} for a, p in points]
            print(rows[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(Path(args.out).with_name(Path(args.out).stem + "-trials.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["sampler", "params", "val_acc"])
        writer.writeheader()
        writer.writerows(screened)  # every screened candidate, to redraw the fronts or rescore them
    print(f"| sampler | trials | s | {' | '.join(f'best < {b:,} (band)' for b in BUDGETS)} | hypervolume |")
    for r in rows:
        cells = " | ".join(f"{r[f'best<{b}']:.2%} ({r[f'band<{b}']})" if r[f"best<{b}"] is not None else "-"
                           for b in BUDGETS)
        print(f"| {r['sampler']} | {r['trials']} | {r['seconds']} | {cells} | {r['hypervolume']} |")


if __name__ == "__main__":
    main()
