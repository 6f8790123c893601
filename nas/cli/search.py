"""``nas-search``: search architectures and recipes under a parameter budget, screen many candidates
cheaply, train the best at full fidelity; every trial is stored."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from nas.cli.common import Parser, add_data_args, quote, redacted, entry_point, run_cli
from nas.cli.progress import CliReporter, pct
from nas.cli.timing import search_in_time, timeout_of

STUDY_FLAGS = ("budget", "budgets", "epochs", "rungs", "promote", "finalists", "holdout", "subset", "objectives")


def jobs_value(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: a number of workers, or auto") from None


def parse_budgets(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part.replace("_", "")) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--budgets takes parameter counts separated by commas (e.g. 2000,4000,8000,20000), "
                         f"got {text!r}") from None


def config_of(args: argparse.Namespace) -> Any:
    """The run's config: the study settings given explicitly, and this run's own."""
    from nas.search.rungs import parse_rungs
    from nas.search.settings import SearchConfig

    settings = {k: getattr(args, k) for k in STUDY_FLAGS if getattr(args, k) is not None}
    if "rungs" in settings:
        settings["rungs"] = parse_rungs(settings["rungs"])
    if "objectives" in settings:
        settings["objectives"] = tuple(settings["objectives"].split(","))
    if "budgets" in settings:
        settings["budgets"] = parse_budgets(settings["budgets"])
    if args.cost is not None:
        if "budgets" not in settings:
            raise ValueError("--cost goes with --budgets: the cost a front search ranks accuracy against")
        if "objectives" in settings:
            raise ValueError("--cost and --objectives both set a front search's objectives; give one of them "
                             f"(--cost {args.cost} means --objectives accuracy,{args.cost})")
        settings["objectives"] = ("accuracy", args.cost)
    if args.no_references:
        settings["references"] = False
    if args.jobs == "auto":
        from nas.engine.device import auto_jobs, resolve_device

        device = resolve_device(args.device)
        args.jobs, args.device = auto_jobs(device), str(device)  # resolved once: the run is given the device found
    timeout = timeout_of(args)
    if timeout is not None and 0 < timeout < math.inf:  # the report and model files are written within the
        # time asked, after the search (a bad time is left as given, for the settings' own message)
        timeout = max(1.0, timeout - take_away_seconds(args, settings.get("budgets", ())))
    return SearchConfig(storage=args.storage, study=args.study, space=args.space, settings=settings,
                        trials=args.trials, timeout=timeout, sampler=args.sampler, pruner=args.pruner,
                        jobs=args.jobs, threads=args.threads, artifacts=args.artifacts, seed=args.seed,
                        device=args.device, precision=args.precision, data_dir=args.data_dir,
                        warm_start=args.warm_start, snapshot=args.snapshot)


def best_so_far(search: Any) -> dict[int, float]:
    """Each rung's best validation accuracy in the study so far, from this run's and earlier runs' trials."""
    from nas.store.record import TrialRecord

    best = {}
    for index, study in enumerate(search.studies):
        accs = [r.val_acc for r in map(TrialRecord.of, study.get_trials(deepcopy=False))
                if r.outcome == "complete" and r.val_acc is not None]
        if accs:
            best[index] = max(accs)
    return best


def print_header(config: Any, search: Any, new: bool, estimate: Any) -> None:
    """The run's first lines: which study, its settings, the device and the plan."""
    from nas.search.plan import plan_lines

    s = search.settings
    p = search.placement
    where = p.label if len(search.rungs) > 1 else f"{p.device}, {p.precision}"  # one rung: no screening
    done = sum(t.state.is_finished() for st in search.studies for t in st.get_trials(deepcopy=False))
    what = "new" if new else f"resumed, {done} trials so far"
    print(f"study {search.name!r} ({what}) in {redacted(config.storage)}")
    budget = (f"budgets < {', '.join(f'{b:,}' for b in s.budgets)}" if s.budgets else f"budget < {s.budget:,}")
    print(f"space {s.space} | {budget} params | objectives {','.join(s.objectives)} | "
          f"validation {s.holdout:,} held out" + (f", training subset {s.subset:,}" if s.subset else "")
          + f" | sampler {config.sampler}, pruner {config.pruner_for(s)} | jobs {config.jobs} | "
          f"device {where} | seed {config.seed} | run {search.run_id}")
    for note in search.notes:
        print(note)
    print("plan:")
    for line in plan_lines(search.rungs, estimate.rates, len(search.data.val_labels), config.jobs,
                           config.stop_on_trials, config.timeout, estimate.bands, estimate.final_factor):
        print(line)
    sys.stdout.flush()


def search_main(args: argparse.Namespace, words: list[str]) -> int:
    """The search; ``words``: the command line as given, for the run record and the messages that repeat it."""
    if args.top < 0:
        raise ValueError(f"--top must be at least 0, got {args.top}")
    config = config_of(args)
    check_take_away(args, config)
    reporter = CliReporter({})

    def on_start(search, new, estimate) -> None:
        print_header(config, search, new, estimate)
        reporter.start({r.index: r.keep for r in search.rungs} | {0: config.stop_on_trials}, best_so_far(search))

    try:
        summary, config = search_in_time(args, words, config, command_line(words), reporter=reporter,
                                         on_start=on_start)
    finally:
        reporter.close()
    print_counts(summary)
    print_results(summary, args.top)
    take_away(args, config, summary)
    print_next(config, summary, words)
    if summary.signal is not None:
        print(f"interrupted ({summary.stopped}): the running trials were queued again; the same command resumes",
              file=sys.stderr)
        return 128 + int(summary.signal)
    return 0


REPORT_SECONDS, EXPORT_SECONDS = 10, 25  # writing the report; one export folder (two programs checked)


def take_away_seconds(args: argparse.Namespace, budgets: tuple[int, ...] = ()) -> float:
    """What writing the report and the model files at the end takes, kept out of the search's time."""
    return REPORT_SECONDS * bool(args.report) + EXPORT_SECONDS * bool(args.export) * max(1, len(budgets))


def export_folders(args: argparse.Namespace, summary: Any = None, budgets: tuple[int, ...] = ()) -> list[tuple[Path, Any]]:
    """Where ``--export`` puts each winner: the folder itself, or one folder per budget of a front search."""
    from nas.results.query import winners_by_budget

    out = Path(args.export)
    if summary is None:
        return [(out / f"under-{b}", None) for b in budgets] if len(budgets) > 1 else [(out, None)]
    winners = winners_by_budget(summary.study)
    if len(winners) > 1:
        return [(out / f"under-{b}", t) for b, t in winners]
    return [(out, winners[0][1] if winners else None)]


def check_take_away(args: argparse.Namespace, config: Any) -> None:
    """Before any training: the report and export paths can be written and touch nothing kept."""
    if not (args.report or args.export):
        return
    from nas.engine.data import data_files
    from nas.outputs import check_outputs
    from nas.results.export import check_destination
    from nas.results.report import check_report_paths
    from nas.store.artifacts import stores

    outputs = {"report": Path(args.report) if args.report else None, "export": Path(args.export) if args.export else None}
    check_outputs(outputs, data_files(config.data_dir), stores(config.storage, config.artifacts))
    check_report_paths({"report": outputs["report"]})
    if args.export:
        from nas.search.opening import read_search

        budgets = read_search(config).settings.budgets  # a resumed study's own, not only those given
        for folder, _ in export_folders(args, budgets=budgets):
            check_destination(folder, force=True, name="export")


def take_away(args: argparse.Namespace, config: Any, summary: Any) -> None:
    """What the run leaves beside its study: the report, and each winner's model files (its own weights)."""
    if summary.signal is not None:
        return
    if args.report:
        from nas.results.report import write_report

        figures = write_report(summary.study, Path(args.report))
        print(f"\nreport: {args.report} ({figures} figures, opens offline)")
    if args.export:
        from nas.cli.export import export_winner
        from nas.engine.data import load_dataset
        from nas.engine.splits import make_splits

        data = make_splits(load_dataset(config.data_dir, verify=config.verify_data))
        for folder, trial in export_folders(args, summary):
            if trial is None:
                print(f"model files: none in {folder} (no full-fidelity winner there yet)")
                continue
            test_acc = export_winner(summary.study, trial, folder, config.storage, config.artifacts, data)
            print(f"model files: {folder}/ (trial {trial.number}, its weights from the search, test acc "
                  f"{test_acc:.2%}; every format checked against PyTorch)")


def print_counts(summary: Any) -> None:
    c = summary.counts
    print(f"\nthis run: trained {c['trained']} ({c['complete']} complete, {c['pruned']} pruned, "
          f"{c['diverged']} diverged), rejected {c['rejected']} (over budget or past their band's share; never trained), reused "
          f"{c['duplicate']} duplicates, failed {c['failed']}, interrupted {c['interrupted']} (queued again); "
          f"{summary.seconds:.0f} s wall; stopped: {summary.stopped}")
    for i, rc in enumerate(summary.rung_counts):
        if len(summary.rung_counts) > 1:
            print(f"  rung {i}: trained {rc['trained']}, rejected {rc['rejected']}, duplicates {rc['duplicate']}")
    if summary.running_elsewhere:
        print(f"still running elsewhere (other workers, or dead ones not yet noticed): {summary.running_elsewhere}")


def print_results(summary: Any, top: int) -> None:
    """The top full-fidelity trials and the winner (or the Pareto front)."""
    from nas.results.query import best_trials, candidate_of, settings_of, trials_table, winners_by_budget
    from nas.store.record import TrialRecord

    study = summary.study
    table = trials_table(study)
    if not table.empty:
        table = table.sort_values("val_acc", ascending=False).head(top)
        print(f"\ntop {len(table)} full-fidelity trials by validation accuracy (test accuracy is reported, never "
              "used to select):")
        print(table.drop(columns=["rung"]).to_string(index=False, na_rep="", formatters={
            "val_acc": "{:.2%}".format, "test_acc": lambda v: "" if v != v else f"{v:.2%}",
            "params": "{:,}".format, "flops": "{:,}".format}))
    settings = settings_of(study)
    if settings is not None and settings.budgets:
        rows = [(f"under {b:,}", t) for b, t in winners_by_budget(study)]
        title = "best trial per budget"
    else:
        rows = [("", t) for t in best_trials(study)[:top]]
        title = "Pareto front" if summary.multi_objective else "best trial"
    if any(t is not None for _, t in rows):
        print(f"\n{title}:")
    for where, t in rows:
        if t is None:
            print(f"  {where}: none at full fidelity yet")
            continue
        r, cand = TrialRecord.of(t), candidate_of(t)
        rc = cand.recipe
        print(f"  {where + ': ' if where else ''}trial {t.number}{' (' + r.name + ')' if r.name else ''}: val "
              f"{pct(r.val_acc)}, test {pct(r.test_acc)}, {r.params:,} params, {r.flops:,} FLOPs, {r.epochs} epochs")
        print(f"    arch   {cand.arch.key}")
        print(f"    recipe {rc.optimizer} lr {rc.lr:.4g}, batch {rc.batch_size}, schedule {rc.schedule}, "
              f"rotation {rc.rotation:g}, translate {rc.translate:g}, label smoothing {rc.label_smoothing:g}, "
              f"weight decay {rc.weight_decay:g}")


def print_next(config: Any, summary: Any, words: list[str]) -> None:
    """The commands that open, report, export and retrain the study; export and retrain only where it has
    a full-fidelity winner (else they would be refused), the search's own command where it has none."""
    from nas.results.query import best_trials
    from nas.store.artifacts import artifact_dir

    shown = redacted(config.storage)
    data = f" --data-dir {quote(config.data_dir)}" if config.data_dir else ""
    study = quote(summary.study_name)
    print("\nnext:")
    print(f"  optuna-dashboard {shown} --artifact-dir {quote(str(artifact_dir(config.storage, config.artifacts)))}")
    print(f"  nas-report --storage {shown} --study {study} --out report.html")
    if best_trials(summary.study):
        print(f"  nas-export --storage {shown} --study {study} --out best{data}")
        print(f"  nas-train --storage {shown} --study {study} --trial best --seeds 0,1,2{data}")
    else:
        print(f"  {command_line(words)}    (resumes the search: no full-fidelity winner yet to export or retrain)")


def command_line(argv: list[str]) -> str:
    from nas.store.urls import redact_text

    return redact_text(" ".join(quote(a) for a in ["nas-search", *argv]))


@entry_point("nas-search")
def main(argv: list[str] | None = None) -> int:
    import dataclasses

    from nas.results.query import TOP_TRIALS
    from nas.search.settings import DEFAULT_TRIALS, PRUNERS, SAMPLERS, SearchConfig, StudySettings

    d = {f.name: f.default for f in dataclasses.fields(StudySettings)}
    c = {f.name: f.default for f in dataclasses.fields(SearchConfig)}
    parser = Parser(
        prog="nas-search", description="Search architectures and recipes under a parameter budget with Optuna: "
        "screen many candidates cheaply, train the best at full fidelity; every trial is stored. Study settings "
        "(budget, epochs, rungs, ...) are fixed when a study is made; resuming takes them from the study.")
    parser.add_argument("--space", help="search space: a file, or a shipped space's name (default mnist_20k; "
                        "resuming: the study's own)")
    parser.add_argument("--storage", default=c["storage"], help=f"Optuna storage URL (default {c['storage']})")
    parser.add_argument("--study", help="study name (default: the space's name); the same name resumes it")
    g = parser.add_argument_group("study settings (default for a new study; a resumed study keeps its own)")
    g.add_argument("--budget", type=int, help=f"candidates need fewer parameters (default {d['budget']})")
    g.add_argument("--budgets", metavar="A,B,...", help="a front search: the best network under each budget (e.g. "
                   "2000,4000,8000,20000), each with its own finalists; screening samples every size up to the largest")
    g.add_argument("--epochs", type=int, help=f"epochs of the full-fidelity rung (default {d['epochs']})")
    g.add_argument("--rungs", help="screening rungs before the full-fidelity one, EPOCHS[xIMAGES] each, cheapest "
                   f"first, or none (default {','.join(d['rungs'])})")
    g.add_argument("--promote", type=int, help=f"each rung trains the best 1/N of the one below (default {d['promote']})")
    g.add_argument("--finalists", type=int, help=f"candidates trained at full fidelity (default {d['finalists']})")
    g.add_argument("--holdout", type=int, help=f"validation images held out (default {d['holdout']})")
    g.add_argument("--subset", type=int, metavar="N", help="train on at most N of the remaining images")
    g.add_argument("--objectives", help="accuracy (default), or a Pareto search at one fidelity: accuracy,params / "
                   "accuracy,flops (with --rungs none)")
    g.add_argument("--cost", choices=("params", "flops"), help="with --budgets: the cost the front "
                   "ranks accuracy against (budgets are always parameters; default params)")
    g.add_argument("--no-references", action="store_true", help="don't start a new study from the known networks "
                   "(the space's references and the shipped presets under the budget)")
    r = parser.add_argument_group("this run")
    r.add_argument("--trials", type=int, help="candidates to screen in this run (default: as many as --timeout "
                   f"allows, else {DEFAULT_TRIALS})")
    r.add_argument("--timeout", type=float, metavar="SECONDS", help="finish this run, full-fidelity rung included, "
                   "in about this long")
    r.add_argument("--minutes", type=float, help="the same in minutes (e.g. 5 for a first look at every stage)")
    r.add_argument("--hours", type=float, help="the same in hours")
    r.add_argument("--warm-start", metavar="STUDY", help="queue the best full-fidelity trial of each budget band of "
                   "this earlier study (same --storage) as the first candidates")
    r.add_argument("--snapshot", action="store_true", help="keep the SQLite file's compressed copy NAME.db.gz beside "
                   "it, rewritten as the search goes: the form to commit (kept current whenever one is there)")
    r.add_argument("--sampler", choices=SAMPLERS, default=c["sampler"], help=f"default {c['sampler']} (seeded)")
    r.add_argument("--pruner", choices=PRUNERS, help="within-trial pruning at one fidelity (default median with "
                   "--rungs none, else none)")
    r.add_argument("--jobs", type=jobs_value, default=c["jobs"], help=f"worker processes sharing the study (default "
                   f"{c['jobs']}); auto: one per core on the CPU, on a GPU as many as its free memory holds (up to 4 "
                   "per GPU, on every GPU visible)")
    r.add_argument("--threads", type=int, help="CPU threads for this run, shared by its workers (default: every core, or OMP_NUM_THREADS where set)")
    r.add_argument("--artifacts", metavar="DIR", help="folder for the trained trials' weights (default: beside "
                   "a SQLite file, e.g. studies/mnist.artifacts)")
    r.add_argument("--top", type=int, default=TOP_TRIALS, help=f"rows of the final table (default {TOP_TRIALS})")
    r.add_argument("--report", metavar="FILE", help="at the end, write the report (as nas-report) to this HTML file")
    r.add_argument("--export", metavar="DIR", help="at the end, write the winner's model files (its weights from the "
                   "search, as nas-export --no-retrain) to this folder; a front search: one folder per budget")
    add_data_args(parser, subset=False)
    words = list(argv) if argv is not None else sys.argv[1:]
    return run_cli("nas-search", lambda args: search_main(args, words), parser, argv)
