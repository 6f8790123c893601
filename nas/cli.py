"""Command-line entry points: thin layers over the library. Bad input is one line and exit 2."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn

if TYPE_CHECKING:
    from nas.spec import Candidate


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block): what is wrong and where to look."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see {self.prog} --help)")


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


FLAGS = {"references": "--no-references", "settings": "--settings"}


def flag(name: str) -> str:
    """The command-line flag of a library parameter."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def run_cli(prog: str, main: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser,
            argv: list[str] | None) -> int:
    """Parse, run, and turn the errors a user can fix into one line and a non-zero exit."""
    args = parser.parse_args(argv)
    import optuna

    from nas.config import SettingError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return main(args) or 0
    except SettingError as e:
        message = re.sub(r"`(\w+)`", lambda m: flag(m.group(1)), e.message)  # the other parameters it names
        fail(prog, f"{flag(e.name)}: {message}")
    except (ValueError, OSError) as e:
        fail(prog, str(e))
    except KeyboardInterrupt:
        fail(prog, "interrupted", 130)


def space_path(path: str) -> Path:
    """A space file as given; the default one is also found outside the repository (packaged)."""
    from nas.config import DEFAULT_SPACE
    from nas.search import default_space_path

    return default_space_path() if path == DEFAULT_SPACE and not Path(path).exists() else Path(path)


def load_candidate(args: argparse.Namespace) -> "Candidate":
    from nas.presets import load_preset
    from nas.spec import load_spec_file

    if args.spec:  # before the preset: nas-bench has a default preset
        candidate = load_spec_file(args.spec)
        return candidate if candidate.name else replace(candidate, name=Path(args.spec).stem)
    return load_preset(args.preset)


def add_candidate_args(parser: argparse.ArgumentParser, required: bool = True) -> argparse._MutuallyExclusiveGroup:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--preset", metavar="NAME", help="a reference network (see nas-show --list)")
    group.add_argument("--spec", metavar="FILE", help="a spec file (JSON: arch and recipe), e.g. nas/presets/ref-19712.json")
    return group


# ---------------------------------------------------------------- nas-show

def show_main(args: argparse.Namespace) -> int:
    from nas.builder import count_flops, count_params, fvcore_flops
    from nas.presets import load_preset, preset_names

    if not (args.preset or args.spec or args.list or args.space):
        raise ValueError("give one of --preset NAME, --spec FILE, --list or --space FILE")
    if args.list:
        from nas.presets import preset_file

        rows = []
        for name in preset_names():
            c = load_preset(name)
            m = preset_file(name).get("measured") or {}
            rows.append({"name": name, "params": count_params(c.arch), "flops": count_flops(c.arch),
                         "layers": len(c.arch.layers), "epochs": c.recipe.epochs,
                         "test_acc_mean": m.get("mean"), "test_acc_std": m.get("std"), "seeds": m.get("seeds")})
        if args.json:
            print(json.dumps(rows))
        else:
            import pandas as pd

            table = pd.DataFrame(rows)
            table["measured (final test acc)"] = [
                f"{r['test_acc_mean']:.2%} +- {r['test_acc_std']:.2%} ({len(r['seeds'])} seeds)"
                if r["test_acc_mean"] is not None else "-" for r in rows]
            print(table.drop(columns=["test_acc_mean", "test_acc_std", "seeds"]).to_string(
                index=False, formatters={"params": "{:,}".format, "flops": "{:,}".format}))
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
    from nas.describe import layer_table

    print(layer_table(candidate.arch).to_string(formatters={"params": "{:,}".format, "flops": "{:,}".format}))
    print(f"total: {params:,} parameters, {flops:,} FLOPs per image (fvcore; 1 multiply-add = 1 FLOP)")
    r = candidate.recipe
    print(f"recipe: {r.optimizer} lr {r.lr:g}, batch {r.batch_size}, schedule {r.schedule}, "
          f"rotation {r.rotation:g}, translate {r.translate:g}, {r.epochs} epochs")
    return 0


def show_space(args: argparse.Namespace) -> int:
    from nas.space import SearchSpace, audit

    if not 1 <= args.sample <= 100_000:
        raise ValueError(f"--sample must be between 1 and 100000, got {args.sample}")
    if args.budget < 1 or args.seed < 0:
        raise ValueError("--budget must be at least 1 and --seed at least 0")

    space = SearchSpace.from_file(space_path(args.space))
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
    from nas.budget import DEFAULT_BUDGET
    from nas.config import AUDIT_SAMPLES

    parser = Parser(prog="nas-show", description="Show a network's layers, parameters and "
                                     "FLOPs, list the presets, or audit a search space without training.")
    group = add_candidate_args(parser, required=False)
    group.add_argument("--list", action="store_true", help="list the preset networks")
    group.add_argument("--space", metavar="FILE", help="audit a search space file: sample it without training")
    parser.add_argument("--sample", type=int, default=AUDIT_SAMPLES, metavar="N",
                        help=f"samples for --space (default {AUDIT_SAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="seed for --space sampling (default 0)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help=f"parameter budget for --space (default {DEFAULT_BUDGET})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return run_cli("nas-show", show_main, parser, argv)


# ---------------------------------------------------------------- nas-train

def add_data_args(parser: argparse.ArgumentParser, subset: bool = True) -> None:
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the four MNIST files, .gz or not "
                        "(default: $NAS_DATA_DIR, else download with torchvision)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, order, augmentation and split")
    if subset:
        parser.add_argument("--subset", type=int, metavar="N", help="train on the first N training images (stratified)")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--seeds takes seeds separated by commas (e.g. 0,1,2), got {text!r}") from None
    if not seeds or len(seeds) > 100 or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds takes 1 to 100 different seeds >= 0, got {text!r}")
    return seeds


def train_main(args: argparse.Namespace) -> int:
    import statistics

    from tqdm import tqdm

    from nas.builder import count_flops, count_params
    from nas.data import load_mnist, make_splits
    from nas.engine import resolve_device, resolve_precision, train

    if args.seeds is not None and args.seed is not None:
        raise ValueError("give --seed N or --seeds A,B,..., not both")
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed must be at least 0, got {args.seed}")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [args.seed or 0]
    if args.threads is not None:
        if not 1 <= args.threads <= 1024:
            raise ValueError(f"--threads must be between 1 and 1024, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    study = trial = None
    if args.trial is not None:
        from nas.results import candidate_of, find_trial, open_study

        from nas.config import DEFAULT_STORAGE

        study = open_study(args.storage or DEFAULT_STORAGE, args.study)
        trial = find_trial(study, args.trial)
        candidate = replace(candidate_of(trial), name=f"{study.study_name} trial {trial.number}")
    else:
        if args.study is not None:
            raise ValueError("--storage and --study go with --trial N (or --trial best)")
        candidate = load_candidate(args)
    recipe = candidate.recipe if args.epochs is None else candidate.recipe.compressed(check_epochs(args.epochs))
    recipe = replace(recipe, **{k: v for k, v in (("lr", args.lr), ("batch_size", args.batch_size)) if v is not None})
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    params = count_params(candidate.arch)
    data = make_splits(load_mnist(args.data_dir), args.holdout, args.subset, seeds[0]).to(device)
    say = (lambda *a, **k: None) if args.json else print
    say(f"{candidate.name or 'spec'}: {params:,} parameters, {count_flops(candidate.arch):,} FLOPs | "
        f"{recipe.optimizer} lr {recipe.lr:g}, batch {recipe.batch_size}, schedule {recipe.schedule}, "
        f"{recipe.epochs} epochs | data: {data.describe()} | device {device}, {precision} | "
        f"seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}")
    held_out = data.val_images is not None
    results = []
    for seed in seeds:
        bar = tqdm(total=len(data.train_labels), unit="img", leave=False, disable=None, file=sys.stderr,
                   desc=f"seed {seed} epoch 1/{recipe.epochs}")

        def on_epoch(m, bar=bar, seed=seed) -> None:
            acc_name, acc = ("val", m.val_acc) if held_out else ("test", m.test_acc)
            if not args.json:
                bar.write(f"{'seed %d ' % seed if len(seeds) > 1 else ''}epoch {m.epoch:2d}/{recipe.epochs}  "
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
        say(f"{'seed %d: ' % seed if len(seeds) > 1 else ''}final (epoch {last.epoch}): test acc "
            f"{result.test_acc:.2%}{val}; {sum(result.epoch_seconds):.0f} s in all")
        results.append(result)
    accs = [r.test_acc for r in results]
    mean = statistics.fmean(accs)
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    if len(seeds) > 1:
        say(f"final test acc over {len(seeds)} seeds: mean {mean:.2%} +- {std:.2%} (std), min {min(accs):.2%}, "
            f"max {max(accs):.2%}")
    if trial is not None:
        from nas.record import write_retrain

        write_retrain(study._storage, trial._trial_id, seeds, accs, recipe.epochs)
        say(f"written to trial {trial.number} of {study.study_name!r}: retrain_test_acc, retrain_mean, retrain_std")
    if args.json:
        print(json.dumps({
            "name": candidate.name, "params": params, "flops": count_flops(candidate.arch), "epochs": recipe.epochs,
            "seeds": seeds, "test_acc": accs, "mean": mean, "std": std, "min": min(accs), "max": max(accs),
            "val_acc": [r.val_acc for r in results] if held_out else None,
            "epochs_run": [r.epochs[-1].epoch for r in results],
            "seconds": [round(sum(r.epoch_seconds), 1) for r in results],
            "train_loss": [[m.train_loss for m in r.epochs] for r in results],
            "device": str(device), "precision": precision, "holdout": args.holdout, "subset": args.subset,
            "stopped": [r.stopped for r in results], "recipe": recipe.to_dict(),
            **({"study": study.study_name, "trial": trial.number} if trial is not None else {})}))
    return 0 if all(math.isfinite(r.epochs[-1].train_loss) for r in results) else 1


def check_epochs(epochs: int) -> int:
    from nas.config import MAX_EPOCHS

    if not 1 <= epochs <= MAX_EPOCHS:
        raise ValueError(f"--epochs must be between 1 and {MAX_EPOCHS}, got {epochs}")
    return epochs


def train_cli(argv: list[str] | None = None) -> int:
    parser = Parser(prog="nas-train", description="Train one network with its recipe on MNIST "
                                     "(all 60,000 training images by default) and report the final-epoch test "
                                     "accuracy; with several seeds, their mean and spread.")
    group = add_candidate_args(parser)
    group.add_argument("--trial", metavar="N", help="the candidate of trial N (or 'best') of a search: with --storage "
                       "and --study; the results are written back to the trial")
    parser.add_argument("--storage", help="Optuna storage URL of the search (with --trial; default "
                        "sqlite:///studies/mnist.db)")
    parser.add_argument("--study", help="study name of the search (with --trial; default: the only one)")
    parser.add_argument("--seeds", metavar="A,B,...", help="train once per seed and report each final test accuracy "
                        "and their mean +- std (e.g. 0,1,2)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (its schedule is compressed to them)")
    parser.add_argument("--lr", type=float, help="override the recipe's learning rate")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--holdout", type=int, default=0, metavar="N",
                        help="hold out N training images for validation (default 0: train on all 60,000)")
    parser.add_argument("--precision", default="auto", help="auto (default: fp32 on the CPU, bf16 on CUDA), fp32, bf16")
    parser.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    add_data_args(parser)
    parser.set_defaults(seed=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    return run_cli("nas-train", train_main, parser, argv)


# ---------------------------------------------------------------- nas-bench

def bench_main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from nas.bench import run_bench
    from nas.data import load_mnist, make_splits
    from nas.engine import resolve_device, resolve_precision

    candidate = load_candidate(args)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    args.data_dir = args.data_dir or os.environ.get("NAS_DATA_DIR")
    if not args.data_dir:
        raise ValueError("nas-bench needs --data-dir DIR (or NAS_DATA_DIR), a folder with the four MNIST files: "
                         "the classic loop reads the same files through torchvision")
    data = make_splits(load_mnist(args.data_dir), subset=args.subset)
    n = len(data.train_labels)
    print(f"{candidate.name}: one epoch of {n:,} images, batch {candidate.recipe.batch_size}, "
          f"rotation {candidate.recipe.rotation:g}, translate {candidate.recipe.translate:g}, device {device}, "
          f"engine {precision} (classic loop fp32)", flush=True)
    bars: dict[str, Any] = {}

    def on_batch(path: str, images: int) -> None:
        if path not in bars:
            for bar in bars.values():
                bar.close()
            bars[path] = tqdm(total=n, unit="img", desc=path, leave=False, disable=None, file=sys.stderr)
        bars[path].update(images)

    result = run_bench(candidate.arch, candidate.recipe, data, Path(args.data_dir), device, precision, on_batch)
    for bar in bars.values():
        bar.close()
    print(f"engine:     {result.engine_seconds:7.2f} s  ({n / result.engine_seconds:,.0f} img/s)")
    print(f"dataloader: {result.dataloader_seconds:7.2f} s  ({n / result.dataloader_seconds:,.0f} img/s)")
    print(result.summary())
    return 0


def bench(argv: list[str] | None = None) -> int:
    parser = Parser(prog="nas-bench", description="Time one training epoch through the engine "
                                     "and through the classic torchvision + DataLoader loop.")
    add_candidate_args(parser, required=False)
    parser.set_defaults(preset="ref-19712")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", help="of the engine: auto (default: fp32 on the CPU, bf16 on "
                        "CUDA), fp32 or bf16")
    parser.add_argument("--subset", type=int, metavar="N", help="time an epoch of the first N training images "
                        "(default: all 60,000)")
    parser.add_argument("--data-dir", metavar="DIR", default=None, help="folder with the four MNIST files")
    return run_cli("nas-bench", bench_main, parser, argv)


# ---------------------------------------------------------------- nas-search


def pct(value: float | None) -> str:
    return "  -   " if value is None else f"{value:.2%}"


def trial_line(rung, t) -> str:
    from nas.record import TrialRecord

    r = TrialRecord.of(t)
    head = f"r{rung.index} #{t.number:<4d}"
    if r.outcome == "rejected":
        return head + f" rejected  params {r.params:>6,}  ({r.reason})"
    if r.outcome in ("failed", "interrupted", "running") or r.val_acc is None:
        return head + f" {r.outcome:<9} {r.reason or ''}".rstrip()
    tag = r.name
    if r.outcome == "duplicate":
        tag = f"= #{r.duplicate_of} {tag}".strip()
    if r.promoted_from is not None:
        tag = f"from r{rung.index - 1} #{r.promoted_from} {tag}".strip()
    seconds = f"{r.seconds:6.0f} s" if r.seconds is not None else "        "
    return (head + f" {r.outcome:<9} params {r.params:>6,}  val {pct(r.val_acc)}  epochs {r.epochs:>2}/{rung.epochs:<2} "
            f"{seconds}  {tag}").rstrip()


class CliReporter:
    """Lines for finished trials and messages; a status bar with the rung, the running trial's epoch,
    and the best validation accuracy so far at each rung."""

    def __init__(self, planned: dict[int, int | None]) -> None:
        from tqdm import tqdm

        self.planned = planned
        self.bar = tqdm(total=planned.get(0), unit="trial", disable=None, file=sys.stderr, leave=False,
                        bar_format="{desc} {n_fmt}/{total_fmt} [{elapsed}]{postfix}")
        self.rung = -1
        self.best: dict[int, float] = {}
        self.running: dict[int, str] = {}

    def _switch(self, rung) -> None:
        if rung.index != self.rung:
            self.rung = rung.index
            self.bar.reset(total=self.planned.get(rung.index))
            self.bar.set_description_str(f"rung {rung.index} ({rung.label})")

    def _postfix(self) -> None:
        best = " ".join(f"r{k} {v:.2%}" for k, v in sorted(self.best.items()))
        running = ", ".join(self.running.values())
        self.bar.set_postfix_str(f"{running} | best val {best}" if best else running, refresh=True)

    def trial_started(self, rung, number, record) -> None:
        self._switch(rung)
        self.running[number] = f"#{number} epoch 0/{rung.epochs}"
        self._postfix()

    def epoch(self, rung, number, epoch, of, val_acc) -> None:
        self._switch(rung)
        self.running[number] = f"#{number} epoch {epoch}/{of}"
        self._postfix()

    def trial_finished(self, rung, t) -> None:
        from nas.record import TrialRecord

        self._switch(rung)
        self.running.pop(t.number, None)
        r = TrialRecord.of(t)
        self.bar.write(trial_line(rung, t))
        if r.trained or r.outcome == "duplicate":
            self.bar.update(1)
        if r.outcome == "complete" and r.val_acc is not None and r.val_acc > self.best.get(rung.index, -1):
            self.best[rung.index] = r.val_acc
        self._postfix()

    def message(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()


STUDY_FLAGS = ("budget", "epochs", "rungs", "promote", "finalists", "holdout", "subset", "objectives")


def search_main(args: argparse.Namespace) -> int:
    from nas.config import SearchConfig
    from nas.fidelity import parse_rungs, plan_lines
    from nas.results import best_trials, candidate_of, trials_table
    from nas.search import run_search

    if args.hours is not None and args.timeout is not None:
        raise ValueError("give --timeout SECONDS or --hours H, not both")
    if args.top < 0:
        raise ValueError(f"--top must be at least 0, got {args.top}")
    if args.hours is not None and not 0 < args.hours <= 720:
        raise ValueError(f"--hours must be between 0 and 720, got {args.hours}")
    timeout = args.timeout if args.hours is None else args.hours * 3600
    settings = {k: getattr(args, k) for k in STUDY_FLAGS if getattr(args, k) is not None}
    if "rungs" in settings:
        settings["rungs"] = parse_rungs(settings["rungs"])
    if "objectives" in settings:
        settings["objectives"] = tuple(settings["objectives"].split(","))
    if args.no_references:
        settings["references"] = False
    config = SearchConfig(storage=args.storage, study=args.study, space=args.space, settings=settings,
                          trials=args.trials, timeout=timeout, sampler=args.sampler, pruner=args.pruner, jobs=args.jobs,
                          threads=args.threads, artifacts=args.artifacts,
                          seed=args.seed, device=args.device, precision=args.precision, data_dir=args.data_dir)
    state: dict[str, Any] = {}

    def on_start(search, new, estimate) -> None:
        from nas.engine import resolve_precision

        s = search.settings
        final = resolve_precision(config.precision, search.device)
        screening = resolve_precision(config.precision, search.device, ranking_only=True)
        precision = final if final == screening or len(search.rungs) == 1 else f"{final}, screening {screening}"
        done = sum(t.state.is_finished() for st in search.studies for t in st.get_trials(deepcopy=False))
        what = "new" if new else f"resumed, {done} trials so far"
        print(f"study {search.name!r} ({what}) in {_redacted(config.storage)}")
        print(f"space {s.space} | budget < {s.budget:,} params | objectives {','.join(s.objectives)} | "
              f"validation {s.holdout:,} held out" + (f", training subset {s.subset:,}" if s.subset else "")
              + f" | sampler {config.sampler}, pruner {config.pruner_for(s)} | jobs {config.jobs} | "
              f"device {search.device}, {precision} | seed {config.seed} | "
              f"run {search.run_id}")
        print("plan:")
        for line in plan_lines(search.rungs, estimate, len(search.data.val_labels), config.jobs,
                               config.stop_on_trials, timeout):
            print(line)
        planned = {r.index: r.keep for r in search.rungs}
        planned[0] = config.stop_on_trials
        state["reporter"].planned = planned
        sys.stdout.flush()

    reporter = CliReporter({})
    state["reporter"] = reporter
    try:
        summary = run_search(config, reporter=reporter, on_start=on_start,
                             command=_command_line())
    finally:
        reporter.close()
    c = summary.counts
    print(f"\nthis run: trained {c['trained']} ({c['complete']} complete, {c['pruned']} pruned, "
          f"{c['diverged']} diverged), rejected {c['rejected']} over budget (never trained), reused "
          f"{c['duplicate']} duplicates, failed {c['failed']}, interrupted {c['interrupted']} (queued again); "
          f"{summary.seconds:.0f} s wall; stopped: {summary.stopped}")
    for i, rc in enumerate(summary.rung_counts):
        if len(summary.rung_counts) > 1:
            print(f"  rung {i}: trained {rc['trained']}, rejected {rc['rejected']}, duplicates {rc['duplicate']}")
    if summary.running_elsewhere:
        print(f"still running elsewhere (other workers, or dead ones not yet noticed): {summary.running_elsewhere}")
    study = summary.study
    table = trials_table(study)
    if not table.empty:
        table = table.sort_values("val_acc", ascending=False).head(args.top)
        print(f"\ntop {len(table)} full-fidelity trials by validation accuracy (test accuracy is reported, never "
              "used to select):")
        print(table.drop(columns=["rung"]).to_string(index=False, na_rep="", formatters={
            "val_acc": "{:.2%}".format, "test_acc": lambda v: "" if v != v else f"{v:.2%}",
            "params": "{:,}".format, "flops": "{:,}".format}))
    winners = best_trials(study)
    if winners:
        from nas.record import TrialRecord

        title = "Pareto front" if summary.multi_objective else "best trial"
        print(f"\n{title}:")
        for t in winners[: args.top]:
            r, cand = TrialRecord.of(t), candidate_of(t)
            rc = cand.recipe
            print(f"  trial {t.number}{' (' + r.name + ')' if r.name else ''}: val {pct(r.val_acc)}, test "
                  f"{pct(r.test_acc)}, {r.params:,} params, {r.flops:,} FLOPs, {r.epochs} epochs")
            print(f"    arch   {cand.arch.key}")
            print(f"    recipe {rc.optimizer} lr {rc.lr:.4g}, batch {rc.batch_size}, schedule {rc.schedule}, "
                  f"rotation {rc.rotation:g}, translate {rc.translate:g}, label smoothing {rc.label_smoothing:g}, "
                  f"weight decay {rc.weight_decay:g}")
    shown = _redacted(config.storage)
    data = f" --data-dir {config.data_dir}" if config.data_dir else ""
    print("\nnext:")
    from nas.artifacts import artifact_dir

    print(f"  optuna-dashboard {shown} --artifact-dir {_quote(str(artifact_dir(config.storage, config.artifacts)))}")
    print(f"  nas-report --storage {shown} --study {_quote(summary.study_name)} --out report.html")
    print(f"  nas-export --storage {shown} --study {_quote(summary.study_name)} --out best{data}")
    print(f"  nas-train --storage {shown} --study {_quote(summary.study_name)} --trial best --seeds 0,1,2{data}")
    if summary.signal is not None:
        print(f"interrupted ({summary.stopped}): the running trials were queued again; the same command resumes",
              file=sys.stderr)
        return 128 + int(summary.signal)
    return 0


def _redacted(url: str) -> str:
    from nas.study import redact

    return redact(url)


def _command_line() -> str:
    from nas.study import redact_text

    return redact_text(" ".join(_quote(a) for a in ["nas-search", *sys.argv[1:]]))


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def search(argv: list[str] | None = None) -> int:
    import dataclasses

    from nas.config import DEFAULT_SPACE, DEFAULT_TRIALS, PRUNERS, SAMPLERS, TOP_TRIALS, SearchConfig, StudySettings

    d = {f.name: f.default for f in dataclasses.fields(StudySettings)}
    c = {f.name: f.default for f in dataclasses.fields(SearchConfig)}
    parser = Parser(
        prog="nas-search", description="Search architectures and recipes under a parameter budget with Optuna: "
        "screen many candidates cheaply, train the best at full fidelity; every trial is stored. Study settings "
        "(budget, epochs, rungs, ...) are fixed when a study is made; resuming takes them from the study.")
    parser.add_argument("--space", help=f"search space file (default {DEFAULT_SPACE}; resuming: the study's own)")
    parser.add_argument("--storage", default=c["storage"], help=f"Optuna storage URL (default {c['storage']})")
    parser.add_argument("--study", help="study name (default: the space's name); the same name resumes it")
    g = parser.add_argument_group("study settings (default for a new study; a resumed study keeps its own)")
    g.add_argument("--budget", type=int, help=f"candidates need fewer parameters (default {d['budget']})")
    g.add_argument("--epochs", type=int, help=f"epochs of the full-fidelity rung (default {d['epochs']})")
    g.add_argument("--rungs", help="screening rungs before the full-fidelity one, EPOCHS[xIMAGES] each, cheapest "
                   f"first, or none (default {','.join(d['rungs'])})")
    g.add_argument("--promote", type=int, help=f"each rung trains the best 1/N of the one below (default {d['promote']})")
    g.add_argument("--finalists", type=int, help=f"candidates trained at full fidelity (default {d['finalists']})")
    g.add_argument("--holdout", type=int, help=f"validation images held out (default {d['holdout']})")
    g.add_argument("--subset", type=int, metavar="N", help="train on at most N of the remaining images")
    g.add_argument("--objectives", help="accuracy (default), or a Pareto search at one fidelity: accuracy,params / "
                   "accuracy,flops (with --rungs none)")
    g.add_argument("--no-references", action="store_true", help="don't start a new study from the five references")
    r = parser.add_argument_group("this run")
    r.add_argument("--trials", type=int, help="candidates to screen in this run (default: as many as --timeout "
                   f"allows, else {DEFAULT_TRIALS})")
    r.add_argument("--timeout", type=float, metavar="SECONDS", help="finish this run, full-fidelity rung included, "
                   "in about this long")
    r.add_argument("--hours", type=float, help="the same in hours")
    r.add_argument("--sampler", choices=SAMPLERS, default=c["sampler"], help=f"default {c['sampler']} (seeded)")
    r.add_argument("--pruner", choices=PRUNERS, help="within-trial pruning at one fidelity (default median with "
                   "--rungs none, else none)")
    r.add_argument("--jobs", type=int, default=c["jobs"], help=f"worker processes sharing the study (default {c['jobs']})")
    r.add_argument("--threads", type=int, help="CPU threads for this run, shared by its workers (default: every core)")
    r.add_argument("--artifacts", metavar="DIR", help="folder for the trained trials' weights (default: beside "
                   "a SQLite file, e.g. studies/mnist.artifacts)")
    r.add_argument("--precision", default=c["precision"], help="auto (default: on the CPU bf16 for screening where "
                   "the hardware has it, fp32 at full fidelity; bf16 on CUDA), fp32 or bf16")
    r.add_argument("--top", type=int, default=TOP_TRIALS, help=f"rows of the final table (default {TOP_TRIALS})")
    add_data_args(parser, subset=False)
    return run_cli("nas-search", search_main, parser, argv)


# ---------------------------------------------------------------- nas-export


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("nas-mnist", "torch", "optuna", "onnx", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def export_main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from nas.builder import count_flops, count_params
    from nas.config import PARITY_IMAGES
    from nas.data import load_mnist, make_splits
    from nas.engine import resolve_device, resolve_precision, train
    from nas.export import check_destination, export_folder
    from nas.record import TrialRecord
    from nas.study import redact

    out = Path(args.out)
    check_destination(out, args.force)  # before any training
    if args.no_retrain and args.epochs is not None:
        raise ValueError("--epochs sets the retraining; with --no-retrain the trial's own weights are exported as "
                         "they are (leave out one of the two)")
    trial = study = None
    if args.preset or args.spec:
        if args.no_retrain:
            raise ValueError("--no-retrain needs a trial of a search (its stored weights); a preset or spec is trained")
        candidate = load_candidate(args)
        source = {"preset": args.preset} if args.preset else {"spec": str(args.spec)}
    else:
        from nas.results import candidate_of, find_trial, open_study

        study = open_study(args.storage, args.study)
        trial = find_trial(study, args.trial)
        record = TrialRecord.of(trial)
        if record.outcome not in ("complete", "duplicate", "diverged", "pruned"):
            raise ValueError(f"trial {trial.number} of {study.study_name!r} is {record.outcome}, not trained; "
                             "pick a trained trial (--trial N) or leave --trial out for the best")
        candidate = replace(candidate_of(trial), name=candidate_of(trial).name or f"{study.study_name}-trial{trial.number}")
        source = {"storage": redact(args.storage), "study": study.study_name, "trial": trial.number}
    if args.epochs is not None:
        candidate = replace(candidate, recipe=candidate.recipe.compressed(check_epochs(args.epochs)))
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    data = make_splits(load_mnist(args.data_dir))  # all 60,000 training images; the test set checks the formats
    params, flops = count_params(candidate.arch), count_flops(candidate.arch)
    seed = args.seed if args.seed is not None else (TrialRecord.of(trial).seed if trial is not None else 0) or 0
    label = f"trial {trial.number} of {study.study_name!r}" if trial is not None else candidate.name
    metrics: dict[str, Any] = {"name": candidate.name, "params": params, "flops": flops, "source": source}
    if trial is not None:
        r = TrialRecord.of(trial)
        metrics.update(search_val_acc=r.val_acc, search_test_acc=r.test_acc, search_fidelity=r.fidelity)
    if args.no_retrain:
        from nas.artifacts import artifact_dir, load_weights
        from nas.builder import build_model
        from nas.engine import accuracy

        # A duplicate reused an earlier trial's training: those are its weights.
        trained = find_trial(study, record.duplicate_of) if record.outcome == "duplicate" else trial
        model = build_model(candidate.arch)
        model.load_state_dict(load_weights(trained, study._storage, artifact_dir(args.storage, args.artifacts)))
        test_acc = accuracy(model.eval(), data.test_images, data.test_labels)
        r = TrialRecord.of(trial)
        print(f"{label}: {params:,} params; its weights from the search ({r.fidelity}, seed {r.seed}), not retrained")
        metrics.update(weights="the trial's own weights from the search (trained without the validation images)",
                       retrained=False, seed=r.seed, epochs=r.epochs, test_acc=test_acc)
    else:
        data = data.to(device)
        recipe = candidate.recipe
        print(f"{label}: {params:,} params; training {recipe.epochs} epochs on all {len(data.train_labels):,} "
              f"training images, seed {seed}, device {device}, {precision}")
        bar = tqdm(total=len(data.train_labels), unit="img", leave=False, disable=None, file=sys.stderr,
                   desc=f"epoch 1/{recipe.epochs}")

        def on_epoch(m) -> None:
            bar.write(f"epoch {m.epoch:2d}/{recipe.epochs}  loss {m.train_loss:.4f}  {m.seconds:.1f} s")
            bar.reset()
            bar.set_description(f"epoch {min(m.epoch + 1, recipe.epochs)}/{recipe.epochs}")

        result = train(candidate.arch, recipe, data, device, seed, on_epoch=on_epoch, on_batch=bar.update,
                       precision=precision)
        bar.close()
        if result.stopped:
            raise ValueError(f"training did not finish ({result.stopped}); nothing written")
        model, test_acc = result.model, result.test_acc
        metrics.update(weights="retrained on all 60,000 training images", retrained=True, seed=seed,
                       epochs=recipe.epochs, precision=precision, test_acc=test_acc)
    metrics.update(settings={k: (redact(v) if k == "storage" and v else v) for k, v in vars(args).items()},
                   versions=versions())
    result = export_folder(model, candidate, metrics, out, data.test_images[:PARITY_IMAGES], force=args.force)
    for p in result.parity:
        print(p.line())
    print(f"final-epoch test acc {test_acc:.2%}; wrote {out}/: model.pt, model.pt2, model.onnx, spec.json, metrics.json")
    print(f"  load: torch.export.load('{out}/model.pt2').module(), or onnxruntime.InferenceSession('{out}/model.onnx')")
    return 0


def export(argv: list[str] | None = None) -> int:
    from nas.config import DEFAULT_STORAGE, PARITY_IMAGES

    parser = Parser(prog="nas-export", description="Export a network as a folder that runs without "
                                     "this package: model.pt, model.pt2 (torch.export), model.onnx, spec.json, "
                                     "metrics.json; every format is checked against PyTorch on "
                                     f"{PARITY_IMAGES:,} test images "
                                     "before anything is written. Default: the best trial, retrained on all 60,000 "
                                     "training images.")
    group = add_candidate_args(parser, required=False)
    group.add_argument("--trial", metavar="N", help="trial number of the search (default: the best)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    parser.add_argument("--study", help="study name (default: the storage's only search)")
    parser.add_argument("--out", default="best", help="output folder (default best)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    parser.add_argument("--no-retrain", action="store_true", help="export the trial's weights from the search "
                        "(stored as an Optuna artifact) instead of retraining")
    parser.add_argument("--artifacts", metavar="DIR", help="the search's artifact folder (default: beside the storage)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (its schedule is compressed)")
    parser.add_argument("--precision", default="auto", help="training: auto (default), fp32 or bf16")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the four MNIST files")
    parser.add_argument("--seed", type=int, help="default: the trial's seed (0 for a preset or spec)")
    return run_cli("nas-export", export_main, parser, argv)


# ---------------------------------------------------------------- nas-report


def report_main(args: argparse.Namespace) -> int:
    from nas.report import write_report
    from nas.results import open_study

    if args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    study = open_study(args.storage, args.study)
    figures = write_report(study, Path(args.out), Path(args.csv) if args.csv else None, args.top)
    print(f"wrote {args.out}: {figures} figures, plotly.js inline (opens offline)"
          + (f"; {args.csv}: one row per trial" if args.csv else ""))
    return 0


def report(argv: list[str] | None = None) -> int:
    from nas.config import DEFAULT_STORAGE, TOP_TRIALS

    parser = Parser(prog="nas-report", description="Write one self-contained HTML page of a search "
                                     "(history, accuracy against size with the references, learning curves, "
                                     "importances, rungs, budget, top trials) and optionally a CSV of its trials.")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    parser.add_argument("--study", help="study name (default: the storage's only search)")
    parser.add_argument("--out", default="report.html", help="HTML file (default report.html)")
    parser.add_argument("--csv", metavar="FILE", help="also write one row per trial (every rung) to this CSV file")
    parser.add_argument("--top", type=int, default=TOP_TRIALS,
                        help=f"rows of the top-trials tables (default {TOP_TRIALS})")
    return run_cli("nas-report", report_main, parser, argv)
