"""How well does a cheap training run rank candidates? Train candidates of the default space (the
five references and random samples under the budget) at several fidelities, and print the
Spearman rank correlation of each low fidelity's validation accuracy with the full-fidelity one,
and what each fidelity costs.

    python benchmarks/fidelity.py --data-dir ../shared/data/mnist [--candidates 20] [--shard 0/2]

A fidelity is "E epochs on N training images", trained from scratch with the recipe's whole
schedule compressed into those E epochs (``Recipe.compressed``: "Budgeted Training", Li et al.,
ICLR 2020). The full-fidelity run also records its validation accuracy after every epoch, so the
table compares compressed runs with snapshots taken mid-schedule ("after 2 of 15 epochs").
Validation is the search's: 10,000 images held out of the training set; the test set is not used.

Each run is appended to ``--csv`` as it finishes: a benchmark split with ``--shard i/n`` across
processes (``OMP_NUM_THREADS=1`` each) or interrupted and started again skips what it has.
``--table`` prints the table from the CSV without training.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import optuna
import pandas as pd

from nas.arch.budget import DEFAULT_BUDGET
from nas.arch.builder import count_flops, count_params
from nas.arch.spec import DEFAULT_HOLDOUT
from nas.engine.data import load_dataset
from nas.engine.splits import make_splits
from nas.engine.trainer import train
from nas.space.space import SearchSpace
from nas.arch.candidate import Candidate

FULL = (15, None)  # 15 epochs on every training image left after the holdout
LOW = [(1, 10_000), (2, 10_000), (4, 10_000), (2, None)]
EXTRA = [(5, None)]  # measured on the first candidates only (--extra): a third of the full cost
SNAPSHOTS = (1, 2, 4, 5)  # epochs of the full run read as mid-schedule snapshots
FIELDS = ["candidate", "name", "digest", "params", "flops", "fidelity", "epochs", "subset", "images",
          "val_acc", "seconds", "val_curve"]


def label(epochs: int, subset: int | None) -> str:
    return f"{epochs}ep x {'all' if subset is None else f'{subset // 1000}k'}"


def candidates(space: SearchSpace, count: int, seed: int, budget: int) -> list[Candidate]:
    """The space's references, then random samples under the budget (distinct), ``count`` in all."""
    chosen = [space.reference(name) for name in space.references][:count]
    keys = {c.key for c in chosen}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    while len(chosen) < count:
        trial = study.ask()
        candidate = space.sample(trial)
        study.tell(trial, 0.0)
        if count_params(candidate.arch) < budget and candidate.key not in keys:
            keys.add(candidate.key)
            chosen.append(Candidate(candidate.arch, candidate.recipe, f"sample-{len(chosen)}"))
    return chosen


def run(args: argparse.Namespace) -> None:
    space = SearchSpace.from_file(args.space)
    pool = candidates(space, args.candidates, args.seed, args.budget)
    shard, shards = (int(x) for x in args.shard.split("/"))
    mnist = load_dataset(args.data_dir)
    splits = {subset: make_splits(mnist, DEFAULT_HOLDOUT, subset, seed=0)
              for subset in {s for _, s in [FULL, *LOW, *EXTRA]}}
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        done = {(r["digest"], r["fidelity"]) for r in csv.DictReader(out.open())}
    for index, candidate in enumerate(pool):
        if index % shards != shard:
            continue
        for epochs, subset in [FULL, *LOW, *(EXTRA if index < args.extra else [])]:
            fidelity = label(epochs, subset)
            if (candidate.digest, fidelity) in done:
                continue
            data = splits[subset]
            start = time.time()
            result = train(candidate.arch, candidate.recipe.compressed(epochs), data, "cpu", args.seed,
                           precision=args.precision, val_every_epoch=(epochs, subset) == FULL)
            row = {"candidate": index, "name": candidate.name, "digest": candidate.digest,
                   "params": count_params(candidate.arch), "flops": count_flops(candidate.arch),
                   "fidelity": fidelity, "epochs": epochs, "subset": subset or "", "images": len(data.train_labels),
                   "val_acc": result.val_acc, "seconds": round(time.time() - start, 2),
                   "val_curve": json.dumps([m.val_acc for m in result.epochs])}
            new = not out.exists() or out.stat().st_size == 0
            with out.open("a", newline="") as f:
                writer = csv.DictWriter(f, FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            print(f"#{index:2d} {candidate.name:<10} {fidelity:<12} val {result.val_acc:.4f}  {row['seconds']:7.1f} s",
                  flush=True)


def table(csv_path: str) -> pd.DataFrame:
    """Per fidelity: Spearman correlation with the full fidelity, cost, and where the full-fidelity
    winner ranks."""
    rows = pd.read_csv(csv_path)
    full_label = label(*FULL)
    wide = rows.pivot_table(index="digest", columns="fidelity", values="val_acc")
    seconds = rows.pivot_table(index="digest", columns="fidelity", values="seconds")
    full_rows = rows[rows["fidelity"] == full_label].set_index("digest")
    for epoch in SNAPSHOTS:  # the full run's own reading after `epoch` of its epochs
        wide[f"snapshot {epoch}/{FULL[0]}"] = full_rows["val_curve"].map(lambda c, e=epoch: json.loads(c)[e - 1])
    wide = wide.dropna(subset=[full_label])
    full = wide[full_label]
    best = full.idxmax()
    out = []
    for column in wide.columns:
        if column == full_label:
            continue
        ok = wide[column].notna()
        low = wide.loc[ok, column]
        ranks = low.rank(ascending=False)
        snapshot = column.startswith("snapshot")
        cost = seconds.loc[ok, full_label] * int(column.split()[1].split("/")[0]) / FULL[0] if snapshot \
            else seconds.loc[ok, column]
        out.append({"fidelity": column, "candidates": int(ok.sum()),
                    "spearman": low.rank().corr(full[ok].rank()),
                    "winner_rank": int(ranks.get(best, 0)),  # where the full-fidelity best ranks here
                    "top3_of_full_in_top_third": int(sum(ranks.get(d, 99) <= len(low) / 3
                                                         for d in full[ok].nlargest(3).index)),
                    "seconds_per_candidate": cost.mean(),
                    "share_of_full": cost.mean() / seconds.loc[ok, full_label].mean()})
    out.append({"fidelity": full_label, "candidates": len(full), "spearman": 1.0, "winner_rank": 1,
                "top3_of_full_in_top_third": 3, "seconds_per_candidate": seconds[full_label].mean(),
                "share_of_full": 1.0})
    return pd.DataFrame(out).sort_values("share_of_full")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder with the four MNIST files (not needed with --table)")
    parser.add_argument("--space", default="mnist_20k")
    parser.add_argument("--candidates", type=int, default=20, help="references first, then random samples (default 20)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET)
    parser.add_argument("--seed", type=int, default=0, help="sampling and training seed (default 0)")
    parser.add_argument("--precision", default="auto", help="auto (default), fp32 or bf16")
    parser.add_argument("--extra", type=int, default=6, help="candidates also trained at 5 epochs on all images")
    parser.add_argument("--shard", default="0/1", metavar="I/N", help="train every N-th candidate from the I-th")
    parser.add_argument("--csv", default="results/fidelity.csv")
    parser.add_argument("--table", action="store_true", help="only print the table of what --csv holds")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not args.table:
        if not args.data_dir:
            parser.error("--data-dir is required (or --table)")
        run(args)
    print(table(args.csv).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
