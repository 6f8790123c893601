"""Does bf16 autocast keep accuracy? Train presets at fp32 and bf16 with several seeds on all
60,000 training images (their recipes, final epoch) and compare the mean final test accuracy.

    python benchmarks/precision.py --data-dir ../shared/data/mnist [--presets ref-19712 ref-19970]
        [--seeds 0 1 2] [--precisions fp32 bf16] [--csv results/precision.csv]

Each finished run is appended to ``--csv`` at once, so runs can be split across processes (one
thread each: ``OMP_NUM_THREADS=1``) and an interrupted benchmark keeps what it finished; the
table at the end reads every row of the file.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from nas.engine.data import load_dataset
from nas.engine.splits import make_splits
from nas.engine.trainer import train
from nas.arch.presets import load_preset
from rows import append_row  # benchmarks/rows.py

FIELDS = ["preset", "precision", "seed", "threads", "epochs", "test_acc", "seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--presets", nargs="+", default=["ref-19712", "ref-19970"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--csv", default="results/precision.csv")
    args = parser.parse_args()
    data = make_splits(load_dataset(args.data_dir))
    out = Path(args.csv)
    for preset in args.presets:
        candidate = load_preset(preset)
        for seed in args.seeds:
            for precision in args.precisions:
                start = time.time()
                result = train(candidate.arch, candidate.recipe, data, "cpu", seed, precision=precision)
                row = {"preset": preset, "precision": precision, "seed": seed, "threads": torch.get_num_threads(),
                       "epochs": len(result.epochs), "test_acc": result.test_acc,
                       "seconds": round(time.time() - start, 1)}
                append_row(out, FIELDS, row)
                print(row, flush=True)
    table = pd.read_csv(out)
    summary = table.groupby(["preset", "precision"])["test_acc"].agg(["mean", "std", "count"])
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    means = table.groupby(["preset", "precision"])["test_acc"].mean().unstack()
    if {"fp32", "bf16"} <= set(means.columns):
        print("\nbf16 - fp32, points of test accuracy (mean over seeds):")
        print((100 * (means["bf16"] - means["fp32"])).round(3).to_string())


if __name__ == "__main__":
    main()
