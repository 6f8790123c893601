"""``nas-train``: train one network once per seed and report each final-epoch test accuracy, their
mean and spread; for a trial of a search, the results go back to the trial."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import replace
from typing import Any

from nas.cli.common import (Parser, add_candidate_args, add_data_args, check_epochs, check_seed, load_candidate,
                            entry_point, parse_seeds, run_cli)


def pick_candidate(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The network to train: a preset, a spec file, a trial of a search (with its study), or a row of
    a search's trials CSV."""
    if args.csv is not None:
        if args.row is None or args.storage is not None or args.budget is not None:
            raise ValueError("--csv FILE goes with --row N (and --study NAME for a screening rung's row), "
                             "not --storage or --budget")
        from nas.results.query import candidate_from_csv

        return candidate_from_csv(args.csv, args.row, args.study), None, None
    if args.row is not None:
        raise ValueError("--row N goes with --csv FILE")
    if args.trial is None:
        if args.study is not None or args.storage is not None or args.budget is not None:
            raise ValueError("--storage, --study and --budget go with --trial N (or --trial best)")
        return load_candidate(args), None, None
    from nas.results.query import find_trial, open_study, retrain_candidate
    from nas.store.urls import DEFAULT_STORAGE

    study = open_study(args.storage or DEFAULT_STORAGE, args.study, mode="write")
    trial = find_trial(study, args.trial, args.budget)
    return replace(retrain_candidate(study, trial), name=f"{study.study_name} trial {trial.number}"), study, trial


def train_main(args: argparse.Namespace) -> int:
    from nas.engine.data import load_dataset
    from nas.engine.splits import make_splits
    from nas.engine.device import place
    from nas.arch.builder import count_flops, count_params

    if args.seeds is not None and args.seed is not None:
        raise ValueError("give --seed N or --seeds A,B,..., not both")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [check_seed(args.seed or 0)]
    if args.threads is not None:
        from nas.search.settings import MAX_THREADS

        if not 1 <= args.threads <= MAX_THREADS:
            raise ValueError(f"--threads must be between 1 and {MAX_THREADS:,}, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    candidate, study, trial = pick_candidate(args)
    recipe = candidate.recipe if args.epochs is None else candidate.recipe.compressed(check_epochs(args.epochs))
    recipe = replace(recipe, **{k: v for k, v in (("lr", args.lr), ("batch_size", args.batch_size)) if v is not None})
    placement = place(args.device, args.precision)  # resolved once, here
    device, precision = placement.device, placement.precision
    data = make_splits(load_dataset(args.data_dir), args.holdout, args.subset, seeds[0]).to(device)
    say = (lambda *a, **k: None) if args.json else print
    say(f"{candidate.name or 'spec'}: {count_params(candidate.arch):,} parameters, {count_flops(candidate.arch):,} "
        f"FLOPs | {recipe.optimizer} lr {recipe.lr:g}, batch {recipe.batch_size}, schedule {recipe.schedule}, "
        f"{recipe.epochs} epochs | data: {data.describe()} | device {device}, {precision} | "
        f"seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}")
    results = [train_seed(candidate, recipe, data, device, precision, seed, len(seeds) > 1, args.json, say)
               for seed in seeds]
    accs = [r.test_acc for r in results]
    mean, std = statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0
    if len(seeds) > 1:
        say(f"final test acc over {len(seeds)} seeds: mean {mean:.2%} +- {std:.2%} (std), min {min(accs):.2%}, "
            f"max {max(accs):.2%}")
    if trial is not None:
        from nas.store.record import write_retrain

        write_retrain(study, trial, seeds, accs, recipe.epochs)
        say(f"written to trial {trial.number} of {study.study_name!r}: retrain_test_acc, retrain_mean, retrain_std")
    if args.json:
        print(json.dumps(summary(args, candidate, recipe, seeds, results, str(device), precision, study, trial)))
    return 0 if all(math.isfinite(r.epochs[-1].train_loss) for r in results) else 1


def train_seed(candidate, recipe, data, device, precision: str, seed: int, several: bool, quiet: bool, say):
    """One training run with its progress bar and epoch lines; the final line says its test accuracy."""
    from tqdm import tqdm

    from nas.engine.trainer import train

    held_out = data.val_images is not None
    bar = tqdm(total=len(data.train_labels), unit="img", leave=False, disable=None, file=sys.stderr,
               desc=f"seed {seed} epoch 1/{recipe.epochs}")

    def on_epoch(m) -> None:
        acc_name, acc = ("val", m.val_acc) if held_out else ("test", m.test_acc)
        if not quiet:
            bar.write(f"{'seed %d ' % seed if several else ''}epoch {m.epoch:2d}/{recipe.epochs}  "
                      f"loss {m.train_loss:.4f}  {acc_name} acc {acc:.2%}  {m.seconds:.1f} s")
        bar.reset()
        bar.set_description(f"seed {seed} epoch {min(m.epoch + 1, recipe.epochs)}/{recipe.epochs}")

    # Without a holdout, the per-epoch accuracy shown is the test set's: a display, never a choice.
    result = train(candidate.arch, recipe, data, device, seed, on_epoch=on_epoch, test_every_epoch=not held_out,
                   on_batch=bar.update, precision=precision)
    bar.close()
    last = result.epochs[-1]
    if result.stopped:
        print(f"seed {seed} stopped: {result.stopped}", file=sys.stderr)
    val = f", val acc {result.val_acc:.2%}" if held_out else ""
    say(f"{'seed %d: ' % seed if several else ''}final (epoch {last.epoch}): test acc "
        f"{result.test_acc:.2%}{val}; {sum(result.epoch_seconds):.0f} s in all")
    return result


def summary(args, candidate, recipe, seeds, results, device: str, precision: str, study, trial) -> dict[str, Any]:
    from nas.arch.builder import count_flops, count_params

    accs = [r.test_acc for r in results]
    return {
        "name": candidate.name, "params": count_params(candidate.arch), "flops": count_flops(candidate.arch),
        "epochs": recipe.epochs, "seeds": seeds, "test_acc": accs, "mean": statistics.fmean(accs),
        "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "min": min(accs), "max": max(accs),
        "val_acc": [r.val_acc for r in results] if args.holdout else None,
        "epochs_run": [r.epochs[-1].epoch for r in results],
        "seconds": [round(sum(r.epoch_seconds), 1) for r in results],
        "train_loss": [[m.train_loss for m in r.epochs] for r in results],
        "device": device, "precision": precision, "holdout": args.holdout, "subset": args.subset,
        "stopped": [r.stopped for r in results], "recipe": recipe.to_dict(),
        **({"study": study.study_name, "trial": trial.number} if trial is not None else {})}


@entry_point("nas-train")
def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="nas-train", description="Train one network with its recipe on MNIST "
                                     "(all 60,000 training images by default) and report the final-epoch test "
                                     "accuracy; with several seeds, their mean and spread.")
    group = add_candidate_args(parser)
    group.add_argument("--trial", metavar="N", help="the candidate of trial N (or 'best') of a search: with --storage "
                       "and --study; the results are written back to the trial")
    group.add_argument("--csv", metavar="FILE", help="a search's trials CSV (nas-report --csv): with --row N, trial N "
                       "of its full-fidelity rung (or of --study NAME.rung0), retrained from the file alone")
    parser.add_argument("--row", type=int, metavar="N", help="with --csv: the trial number of the row")
    parser.add_argument("--storage", help="Optuna storage URL of the search (with --trial; default "
                        "sqlite:///studies/mnist.db)")
    parser.add_argument("--study", help="study name of the search (with --trial; default: the only one), or of the "
                        "rows (with --csv; default: the full-fidelity rung)")
    parser.add_argument("--budget", type=int, metavar="N", help="with --trial best: the best trial with fewer than N "
                        "parameters (a front search's winner at that budget)")
    parser.add_argument("--seeds", metavar="A,B,...", help="train once per seed and report each final test accuracy "
                        "and their mean +- std (e.g. 0,1,2)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (its schedule is compressed to them)")
    parser.add_argument("--lr", type=float, help="override the recipe's learning rate")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--holdout", type=int, default=0, metavar="N",
                        help="hold out N training images for validation (default 0: train on all 60,000)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: every core, or OMP_NUM_THREADS where set)")
    add_data_args(parser)
    parser.set_defaults(seed=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    return run_cli("nas-train", train_main, parser, argv)
