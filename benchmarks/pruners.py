"""Evidence for the default pruner: the same search under each pruner, compared on what it found
(best validation accuracy) and what it cost (epochs trained, wall time), also at equal cost.

    python benchmarks/pruners.py --data-dir ../shared/data/mnist [--seeds 0 1] [--trials 16] [--epochs 6]

(Within-trial pruning at one fidelity, ``--rungs none``; the default search screens at low fidelity
instead: benchmarks/fidelity.py.)

Each run is a fresh study in a temporary SQLite file; same seed, same space, same data. Pruning
buys more trials per epoch of training, so the fair comparison is ``best_at_equal_epochs``: the
best validation accuracy each run had reached after as many epochs as the cheapest run trained.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import optuna
import pandas as pd

from nas.search.settings import SearchConfig
from nas.store.record import TrialRecord
from nas.search.run import run_search


def best_so_far_by_epochs(study: optuna.Study) -> list[tuple[int, float]]:
    """(cumulative epochs trained, best completed validation accuracy so far), in trial order."""
    curve, epochs, best = [], 0, 0.0
    for t in study.get_trials():
        r = TrialRecord.of(t)
        if not r.trained:
            continue
        epochs += r.epochs
        if r.outcome == "complete":
            best = max(best, r.val_acc)
        curve.append((epochs, best))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--holdout", type=int, default=5000)
    parser.add_argument("--no-references", action="store_true")
    parser.add_argument("--pruners", nargs="+", default=["none", "median", "hyperband"])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            curves = {}
            for pruner in args.pruners:
                config = SearchConfig(storage=f"sqlite:///{tmp}/{pruner}-{seed}.db", study="s", trials=args.trials,
                                      pruner=pruner, seed=seed, device="cpu", data_dir=args.data_dir,
                                      settings=dict(epochs=args.epochs, rungs=(), subset=args.subset,
                                                    holdout=args.holdout, references=not args.no_references))
                start = time.time()
                summary = run_search(config)
                study = optuna.load_study(study_name="s", storage=config.storage)
                curves[pruner] = best_so_far_by_epochs(study)
                rows.append({"seed": seed, "pruner": pruner, "trained": summary.counts["trained"],
                             "pruned": summary.counts["pruned"], "epochs": curves[pruner][-1][0],
                             "best_val": curves[pruner][-1][1], "seconds": round(time.time() - start)})
                print(rows[-1], flush=True)
            equal = min(curve[-1][0] for curve in curves.values())
            for row in rows[-len(args.pruners):]:
                row["best_at_equal_epochs"] = max(b for e, b in curves[row["pruner"]] if e <= equal)
                row["equal_epochs"] = equal
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    print("\nmean over seeds:")
    print(table.groupby("pruner")[["trained", "pruned", "epochs", "best_val", "best_at_equal_epochs", "seconds"]]
          .mean().round(4).to_string())


if __name__ == "__main__":
    main()
