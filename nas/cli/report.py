"""``nas-report``: one self-contained HTML page of a search, and optionally a CSV of its trials."""

from __future__ import annotations

import argparse
from pathlib import Path

from nas.cli.common import Parser, entry_point, run_cli


def report_main(args: argparse.Namespace) -> int:
    from nas.results.query import open_study
    from nas.results.report import write_report

    if args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    from nas.outputs import check_outputs
    from nas.store.artifacts import stores
    from nas.store.snapshot import write_snapshot
    from nas.store.urls import sqlite_path

    out, csv = Path(args.out), Path(args.csv) if args.csv else None
    front = Path(args.front_csv) if args.front_csv else None
    study = open_study(args.storage, args.study)  # a storage that is not a study database is named first
    check_outputs({"out": out, "csv": csv, "front_csv": front}, stores=stores(args.storage))
    database = sqlite_path(args.storage) if args.snapshot else None
    if args.snapshot and database is None:
        raise ValueError("--snapshot: the storage is not a SQLite file; a server database is backed up by its own tools")
    figures = write_report(study, out, csv, args.top, front)
    print(f"wrote {args.out}: {figures} figures, plotly.js inline (opens offline)"
          + (f"; {args.csv}: one row per trial" if args.csv else "")
          + (f"; {args.front_csv}: one row per budget" if args.front_csv else "")
          + (f"; {write_snapshot(database)}: the study to commit" if database is not None else ""))
    return 0


@entry_point("nas-report")
def main(argv: list[str] | None = None) -> int:
    from nas.results.query import TOP_TRIALS
    from nas.store.urls import DEFAULT_STORAGE

    parser = Parser(prog="nas-report", description="Write one self-contained HTML page of a search "
                                     "(history, accuracy against size with the references, learning curves, "
                                     "importances, rungs, budget, top trials) and optionally a CSV of its trials.")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    parser.add_argument("--study", help="study name (default: the storage's only search)")
    parser.add_argument("--out", default="report.html", help="HTML file (default report.html)")
    parser.add_argument("--csv", metavar="FILE", help="also write one row per trial (every rung) to this CSV file")
    parser.add_argument("--front-csv", metavar="FILE", help="also write one row per budget (its winner: params, FLOPs, "
                        "validation accuracy, retrained test accuracy) to this CSV file")
    parser.add_argument("--snapshot", action="store_true", help="also write the SQLite file compressed beside it "
                        "(NAME.db.gz): the form to commit; any command given the file's URL restores it from there")
    parser.add_argument("--top", type=int, default=TOP_TRIALS,
                        help=f"rows of the top-trials tables (default {TOP_TRIALS})")
    return run_cli("nas-report", report_main, parser, argv)
