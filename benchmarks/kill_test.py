"""Kill test: a small search is killed with SIGKILL again and again, restarted each time with the same
command, then left to finish; the study must have lost nothing and trained nothing twice.

    python benchmarks/kill_test.py --data-dir ../shared/data/mnist [--kills 10] [--seed 0 | --seeds 0-19]

The kills cycle through moments chosen to hurt: right after the study appears (while it is being
made and the references queued), right after a trial starts (between ``ask`` and training, before
its first epoch), right after a restarted run has queued the dead run's trial again (while it
recovers), and at random times. Each restart must find what the dead run left:
RUNNING trials whose worker is gone are queued again.

The last line: ``kills K, trials expected N found N, lost L, duplicated D, zombies Z, integrity ok|FAILED``

- expected: trials the study ever started (that got parameters), each counted once with its
  retries; found: those of which one trial ended with a result (trained to the end, rejected, or
  reusing a duplicate's) on the parameters they had begun with (a trial killed while the sampler
  proposed it holds some of them: its retry samples the rest);
- lost: started trials without a result; duplicated: candidates (rung and parameters) trained to
  the end more than once; zombies: trials still RUNNING at the end; integrity: SQLite's integrity
  check, every study loads, and the last run exits 0.

With ``--seeds 0-19`` (or ``0,3,7``) each seed is a test of its own, one after the other: each prints
``seed S: <its last line>``, then a total line ``seeds 20: kills K, trials expected N found N, lost L,
duplicated D, zombies Z, integrity ok in 20 of 20; passed 20 of 20`` (exit 1 unless every seed passed). ``--keep DIR`` keeps each seed's database, the
output of each of its runs and its kill lines (``kills.txt``) in ``DIR/seed-S``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna

SEARCH = ["--study", "k", "--epochs", "2", "--rungs", "1x200", "--finalists", "2", "--promote", "2", "--trials", "6",
          "--subset", "1000", "--holdout", "500", "--device", "cpu"]
MOMENTS = ("trial starts", "recovering", "random")  # after the first kill, "study appears"
MAX_FAILED_RUNS = 20  # runs in a row that fail by themselves: the study cannot be resumed, the test fails


def nas_search() -> str:
    beside = Path(sys.executable).parent / "nas-search"
    return str(beside) if beside.exists() else "nas-search"


def count(db: Path, state: str) -> int:
    """Trials in ``state`` in the database (-1 while it has no study yet); read with plain sqlite3."""
    if not db.exists():
        return -1
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            studies = con.execute("SELECT count(*) FROM studies").fetchone()[0]
            trials = con.execute("SELECT count(*) FROM trials WHERE state = ?", (state,)).fetchone()[0]
    except sqlite3.Error:
        return -1
    return trials if studies else -1


def kill_at(process: subprocess.Popen, db: Path, moment: str, rng: random.Random, limit: float = 120) -> bool:
    """Wait for the moment, then SIGKILL; False if the run ended first."""
    start = time.time()
    running, failed = count(db, "RUNNING"), count(db, "FAIL")
    target = start + rng.uniform(3, 25)
    while process.poll() is None and time.time() - start < limit:
        if moment == "study appears" and count(db, "RUNNING") >= 0:
            break
        if moment == "trial starts":  # a new trial was asked: before its first epoch
            now = count(db, "RUNNING")
            if now > 0 and now != running:
                break
            running = now
        if moment == "recovering" and count(db, "FAIL") > failed:  # the dead run's trial was just requeued
            break
        if moment == "random" and time.time() >= target:
            break
        time.sleep(0.02)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


RESULTS = ("complete", "pruned", "diverged", "rejected", "duplicate")  # outcomes with a result
TRAINED = ("complete", "pruned", "diverged")  # outcomes that cost a training run


def params_of(trial: optuna.trial.FrozenTrial) -> dict:
    return trial.system_attrs.get("fixed_params") or trial.params


def lineages(trials: list[optuna.trial.FrozenTrial]) -> list[list[optuna.trial.FrozenTrial]]:
    """The trials that got parameters, grouped with their retries (``retry_of``, followed to the first).
    A trial killed while the sampler proposed it holds only part of its parameters: its retry keeps
    them and samples the rest, so its candidate is the retry's, not a second one."""
    by_number = {t.number: t for t in trials}
    groups: dict[int, list] = {}
    for t in trials:
        if not params_of(t):
            continue  # killed before its candidate was sampled: nothing of it was started
        first = t
        while first.user_attrs.get("retry_of") in by_number:
            first = by_number[first.user_attrs["retry_of"]]
        groups.setdefault(first.number, []).append(t)
    return list(groups.values())


def has_result(lineage: list[optuna.trial.FrozenTrial]) -> bool:
    """One trial of the lineage ended with a result, on the parameters every trial of it had begun with."""
    def extends(t: optuna.trial.FrozenTrial, u: optuna.trial.FrozenTrial) -> bool:
        return all(params_of(t).get(k) == v for k, v in params_of(u).items())

    return any(t.state.is_finished() and t.user_attrs.get("outcome") in RESULTS
               and all(extends(t, u) for u in lineage) for t in lineage)


def check(url: str, db: Path) -> dict[str, int | bool]:
    storage = optuna.storages.RDBStorage(url)
    started: list[list] = []
    trained: Counter = Counter()
    zombies = 0
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        zombies += sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
        started += lineages(trials)
        trained.update((summary.study_name, json.dumps(params_of(t), sort_keys=True)) for t in trials
                       if t.state.is_finished() and t.user_attrs.get("outcome") in TRAINED)
    found = sum(map(has_result, started))
    with sqlite3.connect(db) as con:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return {"expected": len(started), "found": found, "lost": len(started) - found,
            "duplicated": sum(n > 1 for n in trained.values()), "zombies": zombies, "integrity": integrity}


def kill_test(args: argparse.Namespace, seed: int, folder: Path, say) -> dict[str, int | bool]:
    """One kill test in ``folder``: ``args.kills`` killed runs, then one left to finish; the check of
    the study, with ``kills`` and ``ok`` (integrity, and the last run exits 0). Each run's output is
    kept, unbuffered so a kill loses none of it, in ``folder/run-N.log``."""
    rng = random.Random(seed)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONWARNINGS": "ignore",
           "PYTHONUNBUFFERED": "1"}
    db = folder / "kill.db"
    folder.mkdir(parents=True, exist_ok=True)
    db.unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    command = [nas_search(), "--storage", url, "--data-dir", args.data_dir, *SEARCH, "--threads", str(args.threads)]
    kills = runs = failed = 0
    while kills < args.kills and failed < MAX_FAILED_RUNS:
        moment = "study appears" if kills == 0 else MOMENTS[(kills - 1) % len(MOMENTS)]
        runs += 1
        with open(folder / f"run-{runs}.log", "w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, text=True)
            killed = kill_at(process, db, moment, rng)
        failed = 0 if killed or process.returncode == 0 else failed + 1
        if killed:
            kills += 1
            say(f"kill {kills}: SIGKILL when {moment} ({count(db, 'RUNNING')} trials RUNNING)")
        else:
            say(f"(the run ended before the moment '{moment}' came; exit {process.returncode})")
    if failed >= MAX_FAILED_RUNS:
        say(f"{failed} runs in a row failed; the last said: {last_line(folder / f'run-{runs}.log')}")
    final = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    (folder / f"run-{runs + 1}.log").write_text(final.stdout)
    if final.returncode != 0:
        say(final.stdout.strip().splitlines()[-1] if final.stdout.strip() else f"exit {final.returncode}")
    result = check(url, db)
    return {**result, "kills": kills, "ok": result["integrity"] and final.returncode == 0}


def last_line(log: Path) -> str:
    lines = log.read_text().strip().splitlines()
    return lines[-1] if lines else "nothing"


def counts(result: dict[str, int | bool]) -> str:
    return (f"kills {result['kills']}, trials expected {result['expected']} found {result['found']}, lost "
            f"{result['lost']}, duplicated {result['duplicated']}, zombies {result['zombies']}")


def line(result: dict[str, int | bool]) -> str:
    return f"{counts(result)}, integrity {'ok' if result['ok'] else 'FAILED'}"


def passed(result: dict[str, int | bool]) -> bool:
    return bool(result["ok"]) and not (result["lost"] or result["duplicated"] or result["zombies"])


def seed_list(text: str) -> list[int]:
    """``0-19``, ``3,5,8`` or a mix (``0-4,9``)."""
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds += range(int(first), int(last or first) + 1)
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--seeds", type=seed_list, metavar="A-B", help="one test per seed, e.g. 0-19 (overrides --seed)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each run (default 1: the test "
                        "checks the study, not the speed)")
    parser.add_argument("--keep", metavar="DIR", help="keep the study database and the runs' output in DIR "
                        "(default: a temporary folder)")
    args = parser.parse_args()
    if args.seeds is None:
        with tempfile.TemporaryDirectory() as tmp:
            result = kill_test(args, args.seed, Path(args.keep or tmp), lambda text: print(text, flush=True))
        print(line(result))
        sys.exit(0 if passed(result) else 1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            folder = Path(args.keep or tmp) / f"seed-{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / "kills.txt", "w") as kills_log:  # one line per seed on the screen
                result = kill_test(args, seed, folder, lambda text: print(text, file=kills_log, flush=True))
            results.append(result)
            print(f"seed {seed}: {line(result)}", flush=True)
    total = {key: sum(r[key] for r in results) for key in ("kills", "expected", "found", "lost", "duplicated",
                                                             "zombies")}
    print(f"seeds {len(results)}: {counts(total)}, integrity ok in {sum(bool(r['ok']) for r in results)} of "
          f"{len(results)}; passed {sum(map(passed, results))} of {len(results)}")
    sys.exit(0 if all(map(passed, results)) else 1)


if __name__ == "__main__":
    main()
