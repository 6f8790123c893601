"""The recipe gap on a known network: train one spec file with its recipe, and with each element of a
published recipe added to it, several seeds each, on all 60,000 training images; report the mean
final-epoch test accuracy per element.

    python benchmarks/recipe_gap.py --spec docs/reference/public-4838.json --data-dir ../shared/data/mnist \\
        [--elements baseline xavier crop piecewise all] [--seeds 0 1 2] [--csv results/recipe-gap.csv]

The elements are those of the public 4,838-parameter net's notebook (docs/reference/public-nets.md):
``xavier`` (Xavier-uniform weights, zero biases), ``crop`` (random resized crop of 85-100 % of the
area), ``piecewise`` (its per-epoch schedule: lr/10 -> lr -> lr/50 -> 0), and ``all`` of them. Each
finished run is appended to ``--csv`` at once, so runs can be split across processes (``--threads 1``
each, different ``--elements``) and an interrupted benchmark keeps what it finished; the table at the
end reads every row of the file.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from nas.arch import load_spec_file
from nas.engine.data import load_dataset
from nas.engine.splits import make_splits
from nas.engine.trainer import train
from nas.results.export import cpu_name
from rows import append_row  # benchmarks/rows.py

ELEMENTS = {
    "baseline": {},
    "xavier": {"init": "xavier"},
    "crop": {"crop": 0.15},
    "piecewise": {"schedule": "piecewise"},
    "all": {"init": "xavier", "crop": 0.15, "schedule": "piecewise"},
}
FIELDS = ["spec", "element", "seed", "epochs", "test_acc", "seconds", "threads", "cpu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--elements", nargs="+", default=list(ELEMENTS), choices=list(ELEMENTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", default="results/recipe-gap.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    candidate = load_spec_file(args.spec)
    data = make_splits(load_dataset(args.data_dir))
    out = Path(args.csv)
    cpu = cpu_name()
    for element in args.elements:
        recipe = replace(candidate.recipe, **ELEMENTS[element])
        for seed in args.seeds:
            start = time.perf_counter()
            result = train(candidate.arch, recipe, data, "cpu", seed, precision="fp32", val_every_epoch=False)
            row = {"spec": Path(args.spec).stem, "element": element, "seed": seed, "epochs": recipe.epochs,
                   "test_acc": round(result.test_acc, 4), "seconds": round(time.perf_counter() - start),
                   "threads": args.threads, "cpu": cpu}
            print(row, flush=True)
            append_row(out, FIELDS, row)
    table = pd.read_csv(out).groupby(["spec", "element"])["test_acc"].agg(["mean", "std", "count"])
    print((table * [100, 100, 1]).round(3).to_string())


if __name__ == "__main__":
    main()
