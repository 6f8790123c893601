"""Ctrl-C and SIGTERM on a running nas-search: the running trials are queued again, the summary so far
is printed, the exit code says which signal, no worker outlives its parent, and the same command
resumes to a study where every candidate was trained to the end exactly once."""

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter

import optuna
import pytest

from conftest import command

pytestmark = pytest.mark.slow  # end to end: left out of the fast loop (pytest -m "not slow")


def running(db):
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    except sqlite3.Error:
        return 0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


# Ctrl-C in a terminal (SIGINT to the whole group) on one process, SIGTERM to the parent alone with workers:
# the two paths a signal takes (the other two pairings take the same code).
@pytest.mark.parametrize("jobs, sig, to_group", [(1, signal.SIGINT, True), (2, signal.SIGTERM, False)])
def test_a_signal_ends_the_run_cleanly_and_the_same_command_resumes(real_mnist_dir, tmp_path, jobs, sig, to_group):
    db = tmp_path / "s.db"
    args = [command("nas-search"), "--storage", f"sqlite:///{db}", "--study", "sig", "--rungs", "none", "--epochs", "2",
            "--trials", "2", "--subset", "1000", "--holdout", "500", "--data-dir", str(real_mnist_dir),
            "--device", "cpu", "--jobs", str(jobs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    deadline = time.time() + 180
    while running(db) < jobs and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, process.stderr.read()
    time.sleep(0.5)  # inside training
    workers = children(process.pid) if jobs > 1 else []
    if to_group:  # Ctrl-C in a terminal reaches the whole process group
        os.killpg(process.pid, sig)
    else:
        process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, err
    assert "this run: trained" in out and "interrupted (SIG" in err and "Traceback" not in err
    time.sleep(0.5)
    assert not [w for w in workers if alive(w)]  # no worker outlives its parent
    assert running(db) == 0
    from nas.results.query import best_trials

    winner = best_trials(optuna.load_study(study_name="sig", storage=f"sqlite:///{db}"))
    assert ("nas-export --storage" in out) == bool(winner)  # next: only commands that run
    assert bool(winner) or "(resumes the search: no full-fidelity winner yet" in out
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="sig", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    interrupted = [t for t in trials if t.user_attrs.get("outcome") == "interrupted"]
    assert interrupted and all(t.state == optuna.trial.TrialState.FAIL for t in interrupted)
    retried = {t.user_attrs.get("retry_of") for t in trials} - {None}
    assert {t.number for t in interrupted} <= retried  # every interrupted trial was queued again
    names = Counter(t.user_attrs.get("name") for t in trials
                    if t.user_attrs.get("name") and t.user_attrs.get("outcome") == "complete")
    assert set(names.values()) == {1}  # each reference trained to the end exactly once
    keys = Counter(t.system_attrs.get("nas:key") for t in trials if t.user_attrs.get("outcome") in ("complete", "pruned"))
    assert set(keys.values()) == {1}


@pytest.mark.parametrize("after", [0.15, 0.4, 0.8])
def test_ctrl_c_while_a_command_starts_is_one_line(tmp_path, tiny_mnist_dir, after):
    # The first second imports torch and optuna: a Ctrl-C there was a 32-line KeyboardInterrupt traceback.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([command("nas-search"), "--trials", "1", "--storage", f"sqlite:///{tmp_path}/s.db",
                                "--data-dir", str(tiny_mnist_dir), "--device", "cpu"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) <= 1, err
    assert process.returncode in (130, 0, 2), (process.returncode, err)  # 0/2 only if it ended before the signal
    if process.returncode == 130:
        assert lines == ["nas-search: error: interrupted"] or "interrupted" in lines[0], lines
