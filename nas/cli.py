"""Command-line entry points: thin layers over the library. Bad input is one line and exit 2."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from nas.data import DataError

if TYPE_CHECKING:
    from nas.spec import Candidate

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPACE = "search_spaces/mnist_20k.yaml"


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


def run_cli(prog: str, main: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser,
            argv: list[str] | None) -> int:
    """Parse, run, and turn the errors a user can fix into one line and a non-zero exit."""
    args = parser.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return main(args) or 0
    except (ValueError, DataError) as e:
        fail(prog, str(e))
    except KeyboardInterrupt:
        fail(prog, "interrupted", 130)


def resolve_space_path(path: str) -> Path:
    """The space file as given; the default one is also found from outside the repository."""
    p = Path(path)
    if not p.exists() and path == DEFAULT_SPACE and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return p


def load_candidate(args: argparse.Namespace) -> "Candidate":
    from nas.presets import load_preset
    from nas.spec import load_spec_file

    if args.preset:
        return load_preset(args.preset)
    candidate = load_spec_file(args.spec)
    return candidate if candidate.name else replace(candidate, name=Path(args.spec).stem)


def add_candidate_args(parser: argparse.ArgumentParser, required: bool = True) -> argparse._MutuallyExclusiveGroup:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--preset", metavar="NAME", help="a reference network (see nas-show --list)")
    group.add_argument("--spec", metavar="FILE", help="a spec file (JSON: arch and recipe), e.g. nas/presets/ref-19712.json")
    return group


# ---------------------------------------------------------------- nas-show

def describe_layer(layer, in_channels: int) -> str:
    if layer.op == "conv":
        extras = ", ".join(x for x in (f"pad {layer.pad}" if layer.pad else "", "" if layer.bias else "no bias") if x)
        return f"conv {layer.k}x{layer.k} {in_channels}->{layer.out}" + (f" ({extras})" if extras else "")
    if layer.op == "linear":
        return f"linear {in_channels}->{layer.out}" + ("" if layer.bias else " (no bias)")
    if layer.op in ("dropout", "dropout2d"):
        return f"{layer.op} {layer.p:g}"
    if layer.op == "leaky_relu":
        return f"leaky_relu {layer.slope:g}"
    return {"bn": "batchnorm", "maxpool": "maxpool 2x2", "gap": "global avg pool"}.get(layer.op, layer.op)


def layer_table(arch) -> "Any":
    import pandas as pd

    from nas.builder import plan

    rows, channels = [], arch.in_channels
    for info in plan(arch):
        rows.append({"#": info.index, "layer": describe_layer(info.layer, channels),
                     "output": "x".join(map(str, info.out_shape)), "params": info.params, "flops": info.flops})
        channels = info.out_shape[0]
    return pd.DataFrame(rows).set_index("#")


def show_main(args: argparse.Namespace) -> int:
    from nas.builder import count_flops, count_params, fvcore_flops
    from nas.presets import load_preset, preset_names

    if not (args.preset or args.spec or args.list or args.space):
        raise ValueError("give one of --preset NAME, --spec FILE, --list or --space FILE")
    if args.list:
        rows = []
        for name in preset_names():
            c = load_preset(name)
            rows.append({"name": name, "params": count_params(c.arch), "flops": count_flops(c.arch),
                         "layers": len(c.arch.layers)})
        if args.json:
            print(json.dumps(rows))
        else:
            import pandas as pd

            print(pd.DataFrame(rows).to_string(index=False))
        return 0
    if args.space:
        return show_space(args)
    candidate = load_candidate(args)
    params, flops = count_params(candidate.arch), fvcore_flops(candidate.arch)
    if args.json:
        print(json.dumps({"name": candidate.name, "params": params, "flops": flops, "key": candidate.arch.key,
                          **candidate.to_dict()}))
        return 0
    print(f"{candidate.name or 'spec'}: {candidate.arch.key}")
    print(layer_table(candidate.arch).to_string(formatters={"params": "{:,}".format, "flops": "{:,}".format}))
    print(f"total: {params:,} parameters, {flops:,} FLOPs per image (fvcore; 1 multiply-add = 1 FLOP)")
    r = candidate.recipe
    print(f"recipe: {r.optimizer} lr {r.lr:g}, batch {r.batch_size}, schedule {r.schedule}, "
          f"rotation {r.rotation:g}, translate {r.translate:g}, {r.epochs} epochs")
    return 0


def show_space(args: argparse.Namespace) -> int:
    from nas.space import SearchSpace, audit

    space = SearchSpace.from_file(resolve_space_path(args.space))
    start = time.perf_counter()
    report = audit(space, args.sample, args.seed, args.budget)
    report["seconds"] = round(time.perf_counter() - start, 2)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"space {space.name} ({space.path}): {report['sampled']} random samples, seed {args.seed}, "
          f"no training, {report['seconds']} s")
    print(f"  accepted {report['accepted']} (fewer than {args.budget:,} parameters), "
          f"rejected {report['rejected']}, failed to build {report['failed']}")
    for what in ("params", "flops"):
        s = report[what]
        if s:
            print(f"  {what} of accepted: min {s['min']:,.0f}, median {s['median']:,.0f}, max {s['max']:,.0f}")
    if report["failed"]:
        print(f"  first build failure: {report['first_failure']}")
    return 1 if report["failed"] else 0


def show(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nas-show", description="Show a network's layers, parameters and "
                                     "FLOPs, list the presets, or audit a search space without training.")
    group = add_candidate_args(parser, required=False)
    group.add_argument("--list", action="store_true", help="list the preset networks")
    group.add_argument("--space", metavar="FILE", help="audit a search space file: sample it without training")
    parser.add_argument("--sample", type=int, default=1000, metavar="N", help="samples for --space (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --space sampling (default 0)")
    parser.add_argument("--budget", type=int, default=20_000, help="parameter budget for --space (default 20000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return run_cli("nas-show", show_main, parser, argv)


# ---------------------------------------------------------------- nas-train

def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the four MNIST files, .gz or not "
                        "(default: $NAS_DATA_DIR, else download with torchvision)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, order, augmentation and split")
    parser.add_argument("--subset", type=int, metavar="N", help="train on the first N training images (stratified)")


def train_main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from nas.builder import count_flops, count_params
    from nas.data import load_mnist, make_splits
    from nas.engine import resolve_device, train

    candidate = load_candidate(args)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size))
                 if v is not None}
    recipe = replace(candidate.recipe, **overrides)
    device = resolve_device(args.device)
    params = count_params(candidate.arch)
    data = make_splits(load_mnist(args.data_dir), args.holdout, args.subset, args.seed).to(device)
    say = (lambda *a, **k: None) if args.json else print
    say(f"{candidate.name or 'spec'}: {params:,} parameters, {count_flops(candidate.arch):,} FLOPs | "
        f"{recipe.optimizer} lr {recipe.lr:g}, batch {recipe.batch_size}, {recipe.epochs} epochs | "
        f"data: {data.describe()} | device {device} | seed {args.seed}")
    held_out = data.val_images is not None
    bar = tqdm(total=len(data.train_labels), unit="img", leave=False, disable=None, file=sys.stderr)

    def on_epoch(m) -> None:
        acc_name, acc = ("val", m.val_acc) if held_out else ("test", m.test_acc)
        if not args.json:
            bar.write(f"epoch {m.epoch:2d}/{recipe.epochs}  loss {m.train_loss:.4f}  {acc_name} acc {acc:.2%}  "
                      f"{m.seconds:.1f} s")
        bar.reset()

    # Without a holdout, the per-epoch accuracy shown is the test set's: a display, never a choice.
    result = train(candidate.arch, recipe, data, device, args.seed, on_epoch=on_epoch,
                   test_every_epoch=not held_out, on_batch=bar.update)
    bar.close()
    last = result.epochs[-1]
    if result.stopped:
        print(f"stopped: {result.stopped}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "name": candidate.name, "params": params, "epochs": last.epoch, "test_acc": result.test_acc,
            "val_acc": result.val_acc, "epoch_seconds": [round(s, 3) for s in result.epoch_seconds],
            "train_loss": [m.train_loss for m in result.epochs], "device": str(device), "seed": args.seed,
            "holdout": args.holdout, "subset": args.subset, "stopped": result.stopped,
            "recipe": recipe.to_dict()}))
    else:
        val = f", val acc {result.val_acc:.2%}" if held_out else ""
        print(f"final (epoch {last.epoch}): test acc {result.test_acc:.2%}{val}; "
              f"{sum(result.epoch_seconds):.0f} s in all")
    return 0 if math.isfinite(last.train_loss) else 1


def train_cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nas-train", description="Train one network with its recipe on MNIST "
                                     "and report the final-epoch test accuracy.")
    add_candidate_args(parser)
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--lr", type=float, help="override the recipe's learning rate")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--holdout", type=int, default=0, metavar="N",
                        help="hold out N training images for validation (default 0: train on all 60,000)")
    add_data_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    return run_cli("nas-train", train_main, parser, argv)


# ---------------------------------------------------------------- nas-bench

def bench_main(args: argparse.Namespace) -> int:
    from nas.bench import run_bench
    from nas.data import load_mnist, make_splits
    from nas.engine import resolve_device

    candidate = load_candidate(args)
    device = resolve_device(args.device)
    args.data_dir = args.data_dir or os.environ.get("NAS_DATA_DIR")
    if not args.data_dir:
        raise ValueError("nas-bench needs --data-dir DIR (or NAS_DATA_DIR), a folder with the four MNIST files: "
                         "the classic loop reads the same files through torchvision")
    data = make_splits(load_mnist(args.data_dir))
    print(f"{candidate.name}: one epoch of {len(data.train_labels):,} images, batch {candidate.recipe.batch_size}, "
          f"rotation {candidate.recipe.rotation:g}, translate {candidate.recipe.translate:g}, device {device}")
    result = run_bench(candidate.arch, candidate.recipe, data, Path(args.data_dir), device)
    n = len(data.train_labels)
    print(f"engine:     {result.engine_seconds:7.2f} s  ({n / result.engine_seconds:,.0f} img/s)")
    print(f"dataloader: {result.dataloader_seconds:7.2f} s  ({n / result.dataloader_seconds:,.0f} img/s)")
    print(result.summary())
    return 0


def bench(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nas-bench", description="Time one training epoch through the engine "
                                     "and through the classic torchvision + DataLoader loop.")
    parser.add_argument("--preset", default="ref-19712", metavar="NAME", help="network (default ref-19712)")
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--data-dir", metavar="DIR", default=None, help="folder with the four MNIST files")
    return run_cli("nas-bench", bench_main, parser, argv)


# ---------------------------------------------------------------- nas-search

def trial_line(t) -> str:
    a = t.user_attrs
    head = f"#{t.number:4d} "
    tag = a.get("reference", "")
    if "rejected" in a:
        return head + f"rejected  params {a['params']:>6,}  ({a['rejected']})"
    if "val_acc" not in a:
        return head + f"{t.state.name:<9} {a.get('error', '')}"
    state = "reused" if "duplicate_of" in a else t.state.name
    if "duplicate_of" in a:
        tag = f"= #{a['duplicate_of']} {tag}".strip()
    epochs = f"{a['epochs_run']}/{a['spec']['recipe']['epochs']}"
    return (head + f"{state:<9} params {a['params']:>6,}  val {a['val_acc']:.2%}  epochs {epochs:>5}  "
            f"{sum(a['epoch_seconds']):6.0f} s  {tag}").rstrip()


def search_main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from nas.engine import resolve_device
    from nas.search import SearchConfig, best_trials, candidate_of, run_search, trials_table

    config = SearchConfig(
        space=str(resolve_space_path(args.space)), storage=args.storage, study=args.study, budget=args.budget,
        epochs=args.epochs, trials=args.trials, timeout=args.timeout, sampler=args.sampler, pruner=args.pruner,
        jobs=args.jobs, seed=args.seed, device=args.device, data_dir=args.data_dir, subset=args.subset,
        holdout=args.holdout, objectives=tuple(args.objectives.split(",")), references=not args.no_references)
    bar = tqdm(total=config.trials, desc="trained", unit="trial", disable=None, file=sys.stderr)
    best = {"val": None}

    def on_start(study, new, run_id) -> None:
        done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        what = (f"new, {len(study.get_trials(deepcopy=False))} references enqueued" if new
                else f"resumed, {done} trials so far")
        bar.write(f"study {study.study_name!r} ({what}) in {config.storage}")
        bar.write(f"space {config.space} | budget < {config.budget:,} params | up to {config.epochs} epochs | "
                  f"objectives {','.join(config.objectives)} | sampler {config.sampler}, pruner {config.pruner_name} | "
                  f"validation {config.holdout:,} held out of the training images"
                  + (f", training subset {config.subset:,}" if config.subset else "")
                  + f" | jobs {config.jobs} | device {resolve_device(config.device)} | seed {config.seed} | run {run_id}")

    def on_finished(t) -> None:
        bar.write(trial_line(t))
        if t.user_attrs.get("trained"):
            bar.update(1)
        if t.state.name == "COMPLETE":
            if best["val"] is None or t.user_attrs["val_acc"] > best["val"]:
                best["val"] = t.user_attrs["val_acc"]
                bar.set_postfix_str(f"best val {best['val']:.2%}")

    summary = run_search(config, on_finished=on_finished, on_start=on_start)
    bar.close()
    c = summary.counts
    print(f"\nthis run: trained {c['trained']} ({c['complete']} complete, {c['pruned']} pruned), "
          f"rejected {c['rejected']} over budget (never trained), reused {c['duplicates']} duplicates, "
          f"failed {c['failed']}; {summary.seconds:.0f} s wall"
          + ("" if summary.stopped == "trials" else f"; stopped: {summary.stopped}"))
    import optuna

    study = optuna.load_study(study_name=summary.study_name, storage=config.storage)
    table = trials_table(study)
    if not table.empty:
        table = table.sort_values("val_acc", ascending=False).head(args.top)
        print(f"\ntop {len(table)} trials by validation accuracy (test accuracy is reported, never used to select):")
        print(table.to_string(index=False, formatters={"val_acc": "{:.2%}".format, "test_acc": "{:.2%}".format,
                                                       "params": "{:,}".format, "flops": "{:,}".format}))
    winners = best_trials(study)
    if winners:
        title = "Pareto front (accuracy vs " + ", ".join(config.objectives[1:]) + ")" if summary.multi_objective \
            else "best trial"
        print(f"\n{title}:")
        for t in winners[: args.top]:
            a, cand = t.user_attrs, candidate_of(t)
            r = cand.recipe
            print(f"  trial {t.number}{' (' + a['reference'] + ')' if a.get('reference') else ''}: "
                  f"val {a['val_acc']:.2%}, test {a['test_acc']:.2%}, {a['params']:,} params, {a['flops']:,} FLOPs")
            print(f"    arch   {cand.arch.key}")
            print(f"    recipe {r.optimizer} lr {r.lr:.4g}, batch {r.batch_size}, schedule {r.schedule}, "
                  f"rotation {r.rotation:g}, translate {r.translate:g}, label smoothing {r.label_smoothing:g}, "
                  f"weight decay {r.weight_decay:g}")
    print("\nnext:")
    print(f"  optuna-dashboard {config.storage}")
    print(f"  nas-export --storage {config.storage} --study {summary.study_name} --out best.pt"
          + (f" --data-dir {config.data_dir}" if config.data_dir else ""))
    return 0


def search(argv: list[str] | None = None) -> int:
    from nas.search import DEFAULT_STORAGE, PRUNERS, SAMPLERS

    parser = argparse.ArgumentParser(prog="nas-search", description="Search architectures and recipes under a "
                                     "parameter budget with Optuna; every trial is stored (default SQLite).")
    parser.add_argument("--space", default=DEFAULT_SPACE, help=f"search space file (default {DEFAULT_SPACE})")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    parser.add_argument("--study", help="study name (default: the space's name); the same name resumes it")
    parser.add_argument("--budget", type=int, default=20_000, help="candidates need fewer parameters (default 20000)")
    parser.add_argument("--epochs", type=int, default=19, help="epochs per trial at most (default 19)")
    parser.add_argument("--trials", type=int, default=200, help="candidates to train in this run (default 200)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="start no trial after this long")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="default tpe (seeded)")
    parser.add_argument("--pruner", choices=PRUNERS, help="default median (none with several objectives)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes sharing the study (default 1)")
    parser.add_argument("--holdout", type=int, default=10_000, help="validation images held out (default 10000)")
    parser.add_argument("--objectives", default="accuracy",
                        help="accuracy (default), or a Pareto search: accuracy,params / accuracy,flops")
    parser.add_argument("--no-references", action="store_true", help="don't start a new study from the five references")
    parser.add_argument("--top", type=int, default=10, help="rows of the final table (default 10)")
    add_data_args(parser)
    return run_cli("nas-search", search_main, parser, argv)


# ---------------------------------------------------------------- nas-export

def export_main(args: argparse.Namespace) -> int:
    import optuna

    from nas.data import load_mnist, make_splits
    from nas.engine import resolve_device
    from nas.export import export_candidate
    from nas.search import best_trials, candidate_of, make_storage

    storage = make_storage(args.storage)
    names = optuna.get_all_study_names(storage)
    name = args.study or (names[0] if len(names) == 1 else None)
    if name not in names:
        raise ValueError(f"no study {name!r} in {args.storage}; studies there: {', '.join(names) or 'none'} (--study NAME)")
    study = optuna.load_study(study_name=name, storage=storage)
    if args.trial is not None:
        matches = [t for t in study.get_trials(deepcopy=False) if t.number == args.trial]
        if not matches:
            raise ValueError(f"study {name!r} has no trial {args.trial}")
        trial = matches[0]
    else:
        winners = best_trials(study)
        if not winners:
            raise ValueError(f"study {name!r} has no completed feasible trial yet")
        trial = winners[0]
    candidate = candidate_of(trial)
    device = resolve_device(args.device)
    data = None if args.spec_only else make_splits(load_mnist(args.data_dir)).to(device)
    seed = args.seed if args.seed is not None else trial.user_attrs.get("seed", 0)
    epochs = args.epochs or candidate.recipe.epochs
    print(f"trial {trial.number} of {name!r}: {trial.user_attrs.get('params', 0):,} params, "
          f"val {trial.user_attrs.get('val_acc', float('nan')):.2%} in the search"
          + ("" if args.spec_only else f"; training {epochs} epochs on all 60,000 images, seed {seed}, device {device}"))

    def on_epoch(m) -> None:
        print(f"epoch {m.epoch:2d}/{epochs}  loss {m.train_loss:.4f}  {m.seconds:.1f} s")

    result = export_candidate(candidate, Path(args.out), data, str(device), seed, epochs,
                              meta={"study": name, "trial": trial.number}, on_epoch=on_epoch)
    print(f"spec:  {result.spec_path}")
    if result.model_path:
        print(f"model: {result.model_path} (final-epoch test acc {result.test_acc:.2%}); "
              "load it with nas.export.load_model")
    return 0


def export(argv: list[str] | None = None) -> int:
    from nas.search import DEFAULT_STORAGE

    parser = argparse.ArgumentParser(prog="nas-export", description="Export a study's best trial (or --trial N): "
                                     "its spec file, and a model file trained on all 60,000 images.")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    parser.add_argument("--study", help="study name (default: the only study in the storage)")
    parser.add_argument("--trial", type=int, help="trial number (default: the best feasible trial)")
    parser.add_argument("--out", default="best.pt", help="model file; the spec goes beside it as .json")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--spec-only", action="store_true", help="write only the spec file, no training")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the four MNIST files")
    parser.add_argument("--seed", type=int, help="default: the trial's seed")
    return run_cli("nas-export", export_main, parser, argv)
