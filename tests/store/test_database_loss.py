"""A database that goes away mid-search: PostgreSQL restarted under a running search, and a SQLite
database on a disk that fills up. Nothing is lost and nothing is left RUNNING; the same command
resumes."""

import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import command

pytestmark = pytest.mark.slow  # end to end: left out of the fast loop (pytest -m "not slow")


ENV = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PATH": "/usr/bin:/bin"}


def search_args(storage, real_mnist_dir, tmp_path, trials):
    return [command("nas-search"), "--storage", storage, "--study", "loss", "--trials", str(trials), "--epochs", "1",
            "--rungs", "none", "--subset", "500", "--holdout", "500", "--no-references", "--device", "cpu",
            "--artifacts", str(tmp_path / "weights"), "--data-dir", str(real_mnist_dir)]


def finished(storage):
    trials = optuna.load_study(study_name="loss", storage=storage).get_trials()
    return trials, [t for t in trials if t.state == TrialState.RUNNING]


def restart_postgresql():
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True,
                   capture_output=True, timeout=120)


@pytest.mark.xdist_group("postgresql")  # one test process uses the server at a time
@pytest.mark.skipif(shutil.which("pg_ctlcluster") is None or os.geteuid() != 0 or not Path("/etc/postgresql").is_dir(),
                    reason="restarting PostgreSQL needs its cluster tools and root")
def test_a_search_outlives_a_postgresql_restart_and_resumes(pg_url, real_mnist_dir, tmp_path):
    args = search_args(pg_url, real_mnist_dir, tmp_path, 2)
    run = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 120
    while time.time() < deadline:  # restart while a trial trains
        try:
            if finished(pg_url)[1]:
                break
        except Exception:  # noqa: BLE001 - the study is not there yet
            pass
        time.sleep(0.5)
    restart_postgresql()
    out, err = run.communicate(timeout=600)
    lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line]
    assert "Traceback" not in err, err
    # The worker waited for the server and went on (exit 0), or stopped with one line that says how to go on.
    assert run.returncode == 0 or (run.returncode == 2 and "run the same command" in lines[-1]), err
    again = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr
    trials, running = finished(pg_url)
    assert running == []  # nothing left RUNNING forever
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 2 and all(t.user_attrs["outcome"] == "complete" for t in complete)
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs.get("outcome") == "interrupted" for t in interrupted)  # requeued, not failed
    copies = {t.user_attrs.get("retry_of") for t in trials} - {None}
    assert {t.number for t in interrupted} <= copies  # every interrupted trial has its copy


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_stops_the_search_with_one_line_and_the_study_intact(small_disk, real_mnist_dir, tmp_path):
    storage = f"sqlite:///{small_disk}/s.db"
    args = search_args(storage, real_mnist_dir, tmp_path, 1)
    assert subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600).returncode == 0
    filler = small_disk / "filler"
    try:
        with open(filler, "wb") as f:  # the disk fills up (another program's files, a log)
            while True:
                f.write(bytes(4096))
                f.flush()
    except OSError:  # no space left on device
        pass
    full = subprocess.run([*args[:-2], "--trials", "3", *args[-2:]], capture_output=True, text=True, env=ENV,
                          timeout=600)
    lines = [line for line in full.stderr.splitlines() if line.strip() and "it/s]" not in line]
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr
    assert len(lines) == 1 and "the disk is full" in lines[0] and "the study is intact" in lines[0], lines
    with sqlite3.connect(small_disk / "s.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    filler.unlink()
    again = subprocess.run([*args[:-2], "--trials", "2", *args[-2:]], capture_output=True, text=True, env=ENV,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    trials, running = finished(storage)
    assert running == [] and sum(t.state == TrialState.COMPLETE for t in trials) >= 3


def test_a_file_size_limit_stops_the_search_with_one_line_and_the_study_intact(real_mnist_dir, tmp_path):
    # `ulimit -f`: SQLite's write past the limit is a "disk I/O error" (EFBIG), once a 170-line traceback
    import resource

    storage = f"sqlite:///{tmp_path}/s.db"
    args = search_args(storage, real_mnist_dir, tmp_path, 1)
    assert subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600).returncode == 0
    size = (tmp_path / "s.db").stat().st_size

    def limit() -> None:  # the database may not grow by a page
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    limited = subprocess.run([*args[:-2], "--trials", "3", *args[-2:]], capture_output=True, text=True, env=ENV,
                             timeout=600, preexec_fn=limit)
    lines = [line for line in limited.stderr.splitlines() if line.strip() and "it/s]" not in line]
    assert limited.returncode == 2 and "Traceback" not in limited.stderr, limited.stderr[-3000:]
    assert len(lines) == 1 and "a file reached its size limit" in lines[0] and "the study is intact" in lines[0], lines
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    again = subprocess.run([*args[:-2], "--trials", "2", *args[-2:]], capture_output=True, text=True, env=ENV,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    trials, running = finished(storage)
    assert running == [] and sum(t.state == TrialState.COMPLETE for t in trials) >= 3
