"""Compare finished searches run at equal CPU time (e.g. rungs against within-trial median pruning):
what each trained, what it cost, and the best full-fidelity candidate each found.

    nas-search --study mf  --hours 2 --threads 1 ...                         # successive halving (default)
    nas-search --study med --hours 2 --threads 1 --rungs none --pruner median ...
    python benchmarks/schemes.py --storage sqlite:///studies/compare.db --studies mf med

Validation accuracy is the search's own (10,000 held-out training images, full fidelity for both);
the test accuracy of each winner is reported, never used to choose.
"""

from __future__ import annotations

import argparse

import optuna
import pandas as pd

from nas.store.record import TrialRecord
from nas.results.query import best_trials, rung_studies


def describe(study: optuna.Study) -> dict:
    rungs = rung_studies(study)
    trained, image_epochs, starts, ends = [], 0, [], []
    for rung, s in rungs:
        if s is None:
            continue
        count = 0
        for t in s.get_trials(deepcopy=False):
            r = TrialRecord.of(t)
            if t.datetime_start:
                starts.append(t.datetime_start)
            if t.datetime_complete:
                ends.append(t.datetime_complete)
            if r.trained:
                count += 1
                image_epochs += (r.epochs or 0) * rung.images
        trained.append(count)
    winners = best_trials(study)
    row = {"study": study.study_name, "trained per rung": " / ".join(map(str, trained)),
           "full-data epochs": round(image_epochs / 50_000, 1),
           "wall (min)": round((max(ends) - min(starts)).total_seconds() / 60, 1) if starts and ends else None}
    if winners:
        r = TrialRecord.of(winners[0])
        row.update({"best val (full fidelity)": f"{r.val_acc:.2%}", "its test": f"{r.test_acc:.2%}",
                    "params": r.params, "winner": f"#{winners[0].number} {r.name}".strip()})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--studies", nargs="+", required=True)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = [describe(optuna.load_study(study_name=name, storage=args.storage)) for name in args.studies]
    print(pd.DataFrame(rows).to_markdown(index=False) if _has_tabulate() else pd.DataFrame(rows).to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
