"""Ship what a search found: its winner as a preset file, and its trials as a small CSV.

    nas-train --storage URL --study NAME --trial best --seeds 0,1,2 --data-dir DIR   # first: the retraining
    python tools/make_preset.py --storage URL --study NAME --name found-20k [--budget N] [--csv NAME]

A front search ships one preset per budget: ``--budget N`` takes its winner under N (retrained with
``nas-train --trial best --budget N``), and ``--csv`` names the trials CSV they share.

The preset is the search's own choice (its best full-fidelity trial on validation accuracy, the
candidate exactly as the database holds it); its ``notes`` say which ``nas-search`` command and
seed found it and in what wall time, and ``measured`` holds the retraining's final test accuracy
per seed, read from the trial (``retrain_*``, written by ``nas-train --trial``). Nothing is
edited by hand. The CSV (``results/<name>-trials.csv``) has one row per trial of every rung.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from nas.arch.presets import PRESETS_DIR
from nas.store.record import candidate_of, TrialRecord
from nas.results.report import trials_csv
from nas.results.query import best_trials, find_trial, open_study
from nas.store.study import runs_of

COLUMNS = ["study", "rung", "number", "state", "user_attrs_outcome", "user_attrs_val_acc", "user_attrs_test_acc",
           "user_attrs_params", "user_attrs_flops", "user_attrs_epochs", "user_attrs_seconds", "user_attrs_seed",
           "user_attrs_name", "user_attrs_promoted_from", "user_attrs_promoted_to", "arch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--name", required=True, help="preset name, e.g. found-20k")
    parser.add_argument("--results", default="results", help="folder of the trials CSV (default results)")
    parser.add_argument("--budget", type=int, help="a front search: its winner under this many parameters")
    parser.add_argument("--csv", help="name of the trials CSV (default: the preset's name)")
    args = parser.parse_args()
    study = open_study(args.storage, args.study)
    winner = find_trial(study, "best", args.budget) if args.budget else best_trials(study)[0]
    record = TrialRecord.of(winner)
    if not record.retrain_test_acc:
        raise SystemExit(f"trial {winner.number} has no retraining yet: nas-train --storage {args.storage} "
                         f"--study {args.study} --trial best --seeds 0,1,2 --data-dir DIR")
    candidate = candidate_of(winner)
    runs = [r for r in runs_of(study) if r.get("command")]
    first = runs[0]
    wall = sum(r["seconds"] for r in runs) / 60
    started = datetime.datetime.fromtimestamp(first["started"]).strftime("%Y-%m-%d")
    accs = ", ".join(f"{a:.2%}" for a in record.retrain_test_acc)
    notes = (f"Found by `{first['command']}` (seed {first['seed']}, {first['threads']} CPU thread(s), "
             f"{first['device']}, {started}): {wall:.0f} min wall over {len(runs)} run(s); the search's winner, trial "
             f"{winner.number} of study '{study.study_name}'"
             + (f" (the best under {args.budget:,} parameters)" if args.budget else "")
             + f", validation accuracy {record.val_acc:.2%} at "
             f"{record.fidelity} ({record.params:,} parameters), chosen on validation accuracy only, not edited. "
             f"Retrained on all 60,000 training images for {record.retrain_epochs} epochs "
             f"(nas-train --trial best{' --budget ' + str(args.budget) if args.budget else ''} --seeds "
             f"{','.join(map(str, record.retrain_seeds))}): final-epoch test accuracy "
             f"{accs}; mean {record.retrain_mean:.2%} +- {record.retrain_std:.2%} (std).")
    measured = {"test_acc": record.retrain_test_acc, "seeds": record.retrain_seeds,
                "mean": round(record.retrain_mean, 5), "std": round(record.retrain_std, 5),
                "epochs": record.retrain_epochs, "trained_on": "all 60,000 training images",
                "how": f"nas-train --storage ... --study {study.study_name} --trial best"
                       + (f" --budget {args.budget}" if args.budget else "")
                       + f" --seeds {','.join(map(str, record.retrain_seeds))}"}
    named = type(candidate)(candidate.arch, candidate.recipe, args.name)
    path = PRESETS_DIR / f"{args.name}.json"
    path.write_text(named.to_json(pretty=True, notes=notes, measured=measured))
    table = trials_csv(study)
    out = Path(args.results) / f"{args.csv or args.name}-trials.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table[[c for c in COLUMNS if c in table.columns]].to_csv(out, index=False)
    print(f"wrote {path} and {out} ({len(table)} trials)")
    print(notes)


if __name__ == "__main__":
    main()
