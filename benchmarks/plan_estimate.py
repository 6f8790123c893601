"""Is a run's plan the same whether the study is new or resumed? Run one ``nas-search`` command twice
in an empty folder (the second run resumes the first's study) and print, per rung, the seconds per
candidate each plan announced and what the study's trials then took.

    python benchmarks/plan_estimate.py --minutes 6 --data-dir ../shared/data/mnist [--threads 1] [-- --epochs 2]

Flags after ``--`` go to both runs. Give the fidelity (``--epochs``, ``--subset``) where the time cannot
hold the default one: a time flag alone fits a fidelity from each run's own measurement, and two runs
that fit two fidelities plan two studies, not one resumed.

A new study's plan times a few typical candidates for a few steps; a resumed one reads the rates its
screened trials measured. ``--out`` appends one row per rung and run to a CSV, with the CPU.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from nas.results.export import cpu_name
from nas.store.record import TrialRecord
from rows import append_row  # benchmarks/rows.py

PLAN_LINE = re.compile(r"^\s+rung (\d+) \(.*?~([\d,.]+) s each")


def planned(stdout: str) -> dict[int, float]:
    """Seconds per candidate of each rung, as the plan printed them."""
    return {int(m[1]): float(m[2].replace(",", "")) for m in map(PLAN_LINE.match, stdout.splitlines()) if m}


def measured(storage: str) -> dict[int, float]:
    """Mean wall seconds of the trials trained at each rung."""
    out: dict[int, list[float]] = {}
    for summary in optuna.get_all_study_summaries(storage):
        for t in optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False):
            r = TrialRecord.of(t)
            if r.trained and r.seconds:
                out.setdefault(r.rung, []).append(r.seconds)
    return {rung: statistics.fmean(s) for rung, s in sorted(out.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path, default=Path("results/plan-estimate.csv"))
    parser.add_argument("extra", nargs="*", help="flags for nas-search, after --")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="plan-estimate-"))
    storage = f"sqlite:///{folder}/s.db"
    command = [str(Path(sys.executable).with_name("nas-search")), "--minutes", f"{args.minutes:g}", "--storage", storage,
               "--data-dir", str(Path(args.data_dir).resolve())] + (["--threads", str(args.threads)] if args.threads else []) \
        + args.extra
    plans = {}
    for run in ("new", "resumed"):
        start = time.time()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=folder)
        if proc.returncode != 0:
            raise SystemExit(f"plan_estimate: the {run} run failed: {proc.stderr.strip().splitlines()[-1:]}")
        plans[run] = planned(proc.stdout)
        (folder / f"{run}.txt").write_text(proc.stdout)  # the whole output, to read the plan in full
        print(f"{run} run: {time.time() - start:,.0f} s wall (asked {args.minutes * 60:,.0f} s)", flush=True)
    took = measured(storage)
    cpu = cpu_name()
    print(f"\n{cpu}, {args.threads or 'default'} thread(s), --minutes {args.minutes:g} {' '.join(args.extra)}")
    print(f"{'rung':>4}  {'new plan':>9}  {'resumed plan':>12}  {'trials took':>11}")
    for rung in sorted(set(plans["new"]) | set(plans["resumed"]) | set(took)):
        new, resumed, real = plans["new"].get(rung), plans["resumed"].get(rung), took.get(rung)
        show = lambda v: f"{v:,.1f} s" if v is not None else "-"  # noqa: E731
        print(f"{rung:>4}  {show(new):>9}  {show(resumed):>12}  {show(real):>11}")
        append_row(args.out, ["cpu", "threads", "minutes", "flags", "rung", "new_plan_s", "resumed_plan_s", "trials_s"],
                   {"cpu": cpu, "threads": args.threads or "", "minutes": args.minutes, "flags": " ".join(args.extra), "rung": rung,
                    "new_plan_s": new, "resumed_plan_s": resumed, "trials_s": None if real is None else round(real, 2)})


if __name__ == "__main__":
    main()
