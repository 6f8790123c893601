"""``nas-show``: a network's layers, parameters and FLOPs; the presets; a search space audited
without training."""

from __future__ import annotations

import argparse
import json
import time

from nas.cli.common import Parser, add_candidate_args, check_seed, load_candidate, entry_point, run_cli


def show_main(args: argparse.Namespace) -> int:
    from nas.arch.builder import count_params, fvcore_flops

    if not (args.preset or args.spec or args.list or args.space):
        raise ValueError("give one of --preset NAME, --spec FILE, --list or --space FILE")
    if args.list:
        return show_list(args)
    if args.space:
        return show_space(args)
    candidate = load_candidate(args)
    params, flops = count_params(candidate.arch), fvcore_flops(candidate.arch)
    if args.json:
        print(json.dumps({"name": candidate.name, "params": params, "flops": flops, "key": candidate.arch.key,
                          **candidate.to_dict()}))
        return 0
    print(f"{candidate.name or 'spec'}: {candidate.arch.key}")
    from nas.arch.describe import layer_table

    print(layer_table(candidate.arch).to_string(formatters={"params": "{:,}".format, "flops": "{:,}".format}))
    print(f"total: {params:,} parameters, {flops:,} FLOPs per image (fvcore; 1 multiply-add = 1 FLOP)")
    r = candidate.recipe
    print(f"recipe: {r.optimizer} lr {r.lr:g}, batch {r.batch_size}, schedule {r.schedule}, "
          f"rotation {r.rotation:g}, translate {r.translate:g}, {r.epochs} epochs")
    return 0


def show_list(args: argparse.Namespace) -> int:
    from nas.arch.builder import count_flops, count_params
    from nas.arch.presets import load_preset, preset_file, preset_names

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


def show_space(args: argparse.Namespace) -> int:
    from nas.space.audit import audit
    from nas.space.space import SearchSpace, space_file

    if not 1 <= args.sample <= 100_000:
        raise ValueError(f"--sample must be between 1 and 100000, got {args.sample}")
    if args.budget < 1:
        raise ValueError("--budget must be at least 1")
    check_seed(args.seed)

    space = SearchSpace.from_file(space_file(args.space))
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


@entry_point("nas-show")
def main(argv: list[str] | None = None) -> int:
    from nas.space.audit import AUDIT_SAMPLES
    from nas.arch.budget import DEFAULT_BUDGET

    parser = Parser(prog="nas-show", description="Show a network's layers, parameters and "
                                     "FLOPs, list the presets, or audit a search space without training.")
    group = add_candidate_args(parser, required=False)
    group.add_argument("--list", action="store_true", help="list the preset networks")
    group.add_argument("--space", metavar="FILE", help="audit a search space (a file, or a shipped space's name, e.g. mnist_20k): sample it without training")
    parser.add_argument("--sample", type=int, default=AUDIT_SAMPLES, metavar="N",
                        help=f"samples for --space (default {AUDIT_SAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="seed for --space sampling (default 0)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help=f"parameter budget for --space (default {DEFAULT_BUDGET})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return run_cli("nas-show", show_main, parser, argv)
