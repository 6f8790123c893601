"""``nas-export``: a network as a folder of model files that run without this package."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nas.cli.common import (Parser, add_candidate_args, add_device_args, check_epochs, check_seed, entry_point,
                            load_candidate, run_cli)

def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("nas-mnist", "torch", "optuna", "onnx", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass
class Source:
    """What is exported: a candidate, and the trial of a search it comes from (if it does)."""

    candidate: Any
    where: dict[str, Any]
    study: Any = None
    trial: Any = None

    @property
    def label(self) -> str:
        return f"trial {self.trial.number} of {self.study.study_name!r}" if self.trial is not None else self.candidate.name


def pick_source(args: argparse.Namespace) -> Source:
    from nas.store.record import WITH_RESULT, TrialRecord, candidate_of
    from nas.store.urls import redact

    if args.preset or args.spec:
        if args.budget is not None:
            raise ValueError("--budget picks a trial of a search; a preset or spec is what it is")
        if args.no_retrain:
            raise ValueError("--no-retrain needs a trial of a search (its stored weights); a preset or spec is trained")
        return Source(load_candidate(args), {"preset": args.preset} if args.preset else {"spec": str(args.spec)})
    from nas.results.query import find_trial, open_study, retrain_candidate

    study = open_study(args.storage, args.study)
    trial = find_trial(study, args.trial, args.budget)
    record = TrialRecord.of(trial)
    if record.outcome not in WITH_RESULT:
        raise ValueError(f"trial {trial.number} of {study.study_name!r} is {record.outcome}, not trained; "
                         "pick a trained trial (--trial N) or leave --trial out for the best")
    candidate = retrain_candidate(study, trial) if not args.no_retrain else candidate_of(trial)
    candidate = replace(candidate, name=candidate.name or f"{study.study_name}-trial{trial.number}")
    return Source(candidate, {"storage": redact(args.storage), "study": study.study_name, "trial": trial.number},
                  study, trial)


def stored_weights(args: argparse.Namespace, source: Source, data: Any) -> tuple[Any, dict[str, Any]]:
    """The trial's own weights from the search's artifact store, scored on the test set."""
    from nas.arch.builder import count_params
    from nas.results.export import stored_model
    from nas.store.artifacts import artifact_dir
    from nas.store.record import TrialRecord

    r = TrialRecord.of(source.trial)
    model, trained = stored_model(source.study, source.trial, artifact_dir(args.storage, args.artifacts), data)
    print(f"{source.label}: {count_params(source.candidate.arch):,} params; its weights from the search ({r.fidelity}, "
          f"seed {r.seed}), not retrained")
    return model, trained


def retrained(args: argparse.Namespace, source: Source, data: Any, seed: int) -> tuple[Any, dict[str, Any]]:
    """The candidate trained again on all training images, with a progress bar and a line per epoch."""
    from tqdm import tqdm

    from nas.engine.device import place
    from nas.engine.trainer import train
    from nas.arch.builder import count_params

    placement = place(args.device, args.precision)  # resolved once, here
    device, precision = placement.device, placement.precision
    data = data.to(device)
    recipe = source.candidate.recipe
    print(f"{source.label}: {count_params(source.candidate.arch):,} params; training {recipe.epochs} epochs on all "
          f"{len(data.train_labels):,} training images, seed {seed}, device {device}, {precision}")
    bar = tqdm(total=len(data.train_labels), unit="img", leave=False, disable=None, file=sys.stderr,
               desc=f"epoch 1/{recipe.epochs}")

    def on_epoch(m) -> None:
        bar.write(f"epoch {m.epoch:2d}/{recipe.epochs}  loss {m.train_loss:.4f}  {m.seconds:.1f} s")
        bar.reset()
        bar.set_description(f"epoch {min(m.epoch + 1, recipe.epochs)}/{recipe.epochs}")

    result = train(source.candidate.arch, recipe, data, device, seed, on_epoch=on_epoch, on_batch=bar.update,
                   precision=precision)
    bar.close()
    if result.stopped:
        raise ValueError(f"training did not finish ({result.stopped}); nothing written")
    return result.model, {"weights": f"retrained on all {len(data.train_labels):,} training images", "retrained": True,
                          "seed": seed,
                          "epochs": recipe.epochs, "precision": precision, "test_acc": result.test_acc}


def check_export_paths(args: argparse.Namespace, out: Path) -> None:
    """The folder written is none of the files read, nor the search's database or artifact store."""
    from nas.engine.data import data_files
    from nas.outputs import check_outputs
    from nas.store.artifacts import stores

    inputs = {"spec file": Path(args.spec) if args.spec else None, **data_files(args.data_dir)}
    check_outputs({"out": out}, inputs, stores(args.storage, args.artifacts))


def export_main(args: argparse.Namespace) -> int:
    from nas.engine.data import load_dataset
    from nas.engine.splits import make_splits
    from nas.results.export import LATENCY_RUNS, PARITY_IMAGES, check_destination, export_folder
    from nas.store.record import TrialRecord
    from nas.store.urls import redact
    from nas.arch.builder import count_flops, count_params

    out = Path(args.out)
    check_export_paths(args, out)
    check_destination(out, args.force)  # before any training
    if args.no_retrain and args.epochs is not None:
        raise ValueError("--epochs sets the retraining; with --no-retrain the trial's own weights are exported as "
                         "they are (leave out one of the two)")
    source = pick_source(args)
    seed = args.seed if args.seed is not None else (TrialRecord.of(source.trial).seed if source.trial else 0) or 0
    check_seed(seed)
    if args.epochs is not None:
        source.candidate = replace(source.candidate, recipe=source.candidate.recipe.compressed(check_epochs(args.epochs)))
    # All the training images (or the first --subset, for a quick look); the test set checks the formats.
    data = make_splits(load_dataset(args.data_dir), subset=args.subset)
    candidate = source.candidate
    metrics: dict[str, Any] = {"name": candidate.name, "params": count_params(candidate.arch),
                               "flops": count_flops(candidate.arch), "source": source.where}
    if source.trial is not None:
        r = TrialRecord.of(source.trial)
        metrics.update(search_val_acc=r.val_acc, search_test_acc=r.test_acc, search_fidelity=r.fidelity)
    if args.no_retrain:
        model, trained = stored_weights(args, source, data)
    else:
        model, trained = retrained(args, source, data, seed)
    metrics.update(trained, settings={k: (redact(v) if k == "storage" and v else v) for k, v in vars(args).items()},
                   versions=versions())
    result = export_folder(model, candidate, metrics, out, data.test_images[:PARITY_IMAGES], force=args.force,
                           info=data.info)
    for p in result.parity:
        print(p.line())
    print(f"onnxruntime, batch 1, one thread: {result.latency['median_ms']:.3f} ms per image (median of "
          f"{LATENCY_RUNS}; {result.latency['cpu']})")
    print(f"final-epoch test acc {trained['test_acc']:.2%}; wrote {out}/: model.pt, model.pt2, model.onnx, spec.json, "
          "metrics.json")
    print(f"  load: torch.export.load('{out}/model.pt2').module(), or onnxruntime.InferenceSession('{out}/model.onnx')")
    return 0


def export_winner(study: Any, trial: Any, out: Path, storage: str, artifacts: str | None, data: Any) -> float:
    """A trial's own weights as model files (what ``nas-search --export`` leaves); returns its test accuracy."""
    from nas.arch.builder import count_flops, count_params
    from nas.results.export import PARITY_IMAGES, export_folder, stored_model
    from nas.store.artifacts import artifact_dir
    from nas.store.record import TrialRecord, candidate_of
    from nas.store.urls import redact

    r = TrialRecord.of(trial)
    candidate = replace(candidate_of(trial), name=f"{study.study_name}-trial{trial.number}")
    model, trained = stored_model(study, trial, artifact_dir(storage, artifacts), data)
    metrics = {"name": candidate.name, "params": count_params(candidate.arch), "flops": count_flops(candidate.arch),
               "source": {"storage": redact(storage), "study": study.study_name, "trial": trial.number},
               "search_val_acc": r.val_acc, "search_test_acc": r.test_acc, "search_fidelity": r.fidelity, **trained,
               "versions": versions()}
    export_folder(model, candidate, metrics, out, data.test_images[:PARITY_IMAGES], force=True, info=data.info)
    return trained["test_acc"]


@entry_point("nas-export")
def main(argv: list[str] | None = None) -> int:
    from nas.results.export import PARITY_IMAGES
    from nas.store.urls import DEFAULT_STORAGE

    parser = Parser(prog="nas-export", description="Export a network as a folder that runs without "
                                     "this package: model.pt, model.pt2 (torch.export), model.onnx, spec.json, "
                                     f"metrics.json; every format is checked against PyTorch on {PARITY_IMAGES:,} "
                                     "test images before anything is written. Default: the best trial, retrained on "
                                     "all 60,000 training images.")
    group = add_candidate_args(parser, required=False)
    group.add_argument("--trial", metavar="N", help="trial number of the search (default: the best)")
    parser.add_argument("--budget", type=int, metavar="N", help="the best trial with fewer than N parameters (a "
                        "front search's winner at that budget)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    parser.add_argument("--study", help="study name (default: the storage's only search)")
    parser.add_argument("--out", default="best", help="output folder (default best)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    parser.add_argument("--no-retrain", action="store_true", help="export the trial's weights from the search "
                        "(stored as an Optuna artifact) instead of retraining")
    parser.add_argument("--artifacts", metavar="DIR", help="the search's artifact folder (default: beside the storage)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (its schedule is compressed)")
    add_device_args(parser)
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the four MNIST files")
    parser.add_argument("--seed", type=int, help="default: the trial's seed (0 for a preset or spec)")
    parser.add_argument("--subset", type=int, metavar="N", help="retrain on the first N training images only (a quick "
                        "look; metrics.json says so)")
    return run_cli("nas-export", export_main, parser, argv)
