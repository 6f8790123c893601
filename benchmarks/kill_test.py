"""Kill test: a small search is killed with SIGKILL again and again, restarted each time with the same
command, then left to finish; the study must have lost nothing and trained nothing twice.

    python benchmarks/kill_test.py --data-dir ../shared/data/mnist [--kills 10] [--seed 0]

The kills cycle through moments chosen to hurt: right after the study appears (while it is being
made and the references queued), right after a trial starts (between ``ask`` and training, before
its first epoch), right after a restarted run has queued the dead run's trial again (while it
recovers), and at random times. Each restart must find what the dead run left:
RUNNING trials whose worker is gone are queued again.

The last line: ``kills K, trials expected N found N, lost L, duplicated D, zombies Z, integrity ok|FAILED``

- expected: distinct candidates (rung and parameters) the study ever started; found: those that
  ended with a result (trained to the end, rejected, or reusing a duplicate's);
- lost: started candidates without a result; duplicated: candidates trained to the end more than
  once; zombies: trials still RUNNING at the end; integrity: SQLite's integrity check, every study
  loads, and the last run exits 0.
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


def check(url: str, db: Path) -> dict[str, int | bool]:
    storage = optuna.storages.RDBStorage(url)
    started: dict[tuple, list] = {}
    zombies = 0
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        rung = summary.study_name
        for t in study.get_trials(deepcopy=False):
            params = t.system_attrs.get("fixed_params") or t.params
            key = (rung, json.dumps(params, sort_keys=True))
            if t.state == optuna.trial.TrialState.RUNNING:
                zombies += 1
            if not params:
                continue  # killed before its candidate was sampled: nothing of it was started
            started.setdefault(key, []).append(t)
    found = lost = duplicated = 0
    for trials in started.values():
        outcomes = Counter(t.user_attrs.get("outcome") for t in trials if t.state.is_finished())
        trained = outcomes["complete"] + outcomes["pruned"] + outcomes["diverged"]
        if trained or outcomes["rejected"] or outcomes["duplicate"]:
            found += 1
        else:
            lost += 1
        duplicated += trained > 1
    with sqlite3.connect(db) as con:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return {"expected": len(started), "found": found, "lost": lost, "duplicated": duplicated, "zombies": zombies,
            "integrity": integrity}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--keep", metavar="DIR", help="keep the study database in DIR (default: a temporary folder)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.keep or tmp) / "kill.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        db.unlink(missing_ok=True)
        url = f"sqlite:///{db}"
        command = [nas_search(), "--storage", url, "--data-dir", args.data_dir, *SEARCH]
        kills = 0
        while kills < args.kills:
            moment = "study appears" if kills == 0 else MOMENTS[(kills - 1) % len(MOMENTS)]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
            if kill_at(process, db, moment, rng):
                kills += 1
                print(f"kill {kills}: SIGKILL when {moment} ({count(db, 'RUNNING')} trials RUNNING)", flush=True)
            else:
                print(f"(the run ended before the moment '{moment}' came; exit {process.returncode})", flush=True)
        final = subprocess.run(command, capture_output=True, text=True, env=env)
        if final.returncode != 0:
            print(final.stderr.strip().splitlines()[-1] if final.stderr.strip() else f"exit {final.returncode}")
        result = check(url, db)
        ok = result["integrity"] and final.returncode == 0
        print(f"kills {kills}, trials expected {result['expected']} found {result['found']}, lost {result['lost']}, "
              f"duplicated {result['duplicated']}, zombies {result['zombies']}, integrity {'ok' if ok else 'FAILED'}")
        sys.exit(0 if ok and not (result["lost"] or result["duplicated"] or result["zombies"]) else 1)


if __name__ == "__main__":
    main()
