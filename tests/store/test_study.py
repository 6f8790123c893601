"""The study's life: heartbeats, stale trials and retries, on real SQLite files."""

import os
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from nas.store import study as study_module
from nas.store.record import TrialRecord
from nas.store.storage import make_storage, storage_lock
from nas.store.keys import BEAT_ATTR
from nas.store.study import beat, enqueue, heartbeat, is_stale, requeue, retry_stale_trials


def test_stale_trials_are_noticed_by_heartbeat_age_or_a_dead_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "STALE_SECONDS", 1.0)
    study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path}/s.db"))
    fresh = study.ask()
    beat(fresh)
    assert not is_stale(study._storage.get_trial(fresh._trial_id))
    # a worker of this host that has exited: stale at once, whatever the beat's age
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = study.ask()
    study._storage.set_trial_system_attr(gone._trial_id, BEAT_ATTR, {"t": time.time(), "host": study_module.HOST,
                                                                        "pid": int(dead.stdout)})
    assert is_stale(study._storage.get_trial(gone._trial_id))
    # no beat at all (killed right after ask): stale once it started long enough ago
    silent = study.ask()
    assert not is_stale(study._storage.get_trial(silent._trial_id))
    time.sleep(1.2)
    assert is_stale(study._storage.get_trial(silent._trial_id)) and is_stale(study._storage.get_trial(fresh._trial_id))


def test_the_heartbeat_writes_progress_while_the_body_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "HEARTBEAT_SECONDS", 0.1)
    study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path}/s.db"))
    trial = study.ask()
    with heartbeat(trial) as progress:
        progress(3, 15)
        time.sleep(0.4)
    b = study._storage.get_trial(trial._trial_id).system_attrs[BEAT_ATTR]
    assert b["epoch"] == 3 and b["of"] == 15 and b["pid"] == os.getpid() and time.time() - b["t"] < 1


def test_requeue_is_idempotent_and_counts_only_real_failures(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=make_storage(url))
    enqueue(study, {"x": 1}, TrialRecord(name="ref-a"))
    taken = study.ask()
    taken.suggest_int("x", 0, 3)
    first = requeue(study, study._storage.get_trial(taken._trial_id), "interrupted", "Ctrl-C")
    assert requeue(study, study._storage.get_trial(taken._trial_id), "interrupted", "again") is None  # handled
    t0, t1 = study.get_trials()
    assert t0.state == TrialState.FAIL and TrialRecord.of(t0).outcome == "interrupted"
    r1 = TrialRecord.of(t1)
    assert t1.state == TrialState.WAITING and r1.retry_of == 0 and r1.retries == 0 and r1.name == "ref-a"
    assert first == 1 and t1.system_attrs["fixed_params"] == {"x": 1}
    # a real failure counts; past MAX_RETRIES nothing more is queued
    again = study.ask()
    assert again.suggest_int("x", 0, 3) == 1
    requeue(study, study._storage.get_trial(again._trial_id), "failed", "ValueError: boom")
    third = study.ask()
    assert TrialRecord.of(study._storage.get_trial(third._trial_id)).retries == 1
    assert requeue(study, study._storage.get_trial(third._trial_id), "failed", "ValueError: boom") is None
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL] * 3


def test_a_copy_queued_before_a_kill_is_not_queued_twice(tmp_path, monkeypatch):
    """Killed after the copy was queued but before the trial was failed: the next check only fails it."""
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=make_storage(url))
    taken = study.ask()
    taken.suggest_int("x", 0, 3)
    real = study._storage.set_trial_state_values
    monkeypatch.setattr(study._storage, "set_trial_state_values", lambda *a, **k: (_ for _ in ()).throw(SystemExit))
    with pytest.raises(SystemExit):
        requeue(study, study._storage.get_trial(taken._trial_id), "interrupted", "killed")
    monkeypatch.setattr(study._storage, "set_trial_state_values", real)
    monkeypatch.setattr(study_module, "STALE_SECONDS", 0.0)
    time.sleep(0.05)
    assert retry_stale_trials(study, url) == [0]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]


def test_a_trial_killed_between_ask_and_its_first_beat_is_queued_again_at_once(tmp_path):
    """Issue 27. Worker.ask takes a trial and writes its first beat in one hold of the storage lock; a
    SIGKILL between the two leaves a queued trial RUNNING without a beat. The restarted run must queue
    it again at its start, as it does a trial whose dead worker beat: judged by its age it stayed
    RUNNING for STALE_SECONDS, the restarted run closed its screening meanwhile and its copy, queued
    after, was never run (the kill test lost it)."""
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=make_storage(url))
    enqueue(study, {"x": 1}, TrialRecord(name="ref-a"))
    with storage_lock(url):
        study.ask()  # ... SIGKILL here, before beat()
    assert retry_stale_trials(study, url) == [0]  # the restarted run's first look, well within STALE_SECONDS
    dead, copy = study.get_trials()
    assert dead.state == TrialState.FAIL and TrialRecord.of(dead).outcome == "interrupted"
    assert copy.state == TrialState.WAITING and copy.system_attrs["fixed_params"] == {"x": 1}
    assert TrialRecord.of(copy).retry_of == 0 and TrialRecord.of(copy).name == "ref-a"


def test_a_live_worker_between_ask_and_its_first_beat_is_left_alone(tmp_path):
    """The other side of the same rule: a trial without a beat is judged only under the lock, which the
    live worker holds from ``ask`` to its beat, so a look in between waits and then sees the beat."""
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=make_storage(url))
    asked, looked = threading.Event(), []

    def worker() -> None:
        with storage_lock(url):
            trial = study.ask()
            asked.set()
            time.sleep(0.3)  # another process looks now
            beat(trial)

    thread = threading.Thread(target=worker)
    thread.start()
    asked.wait()
    looked.append(retry_stale_trials(study, url))
    thread.join()
    assert looked == [[]] and [t.state for t in study.get_trials()] == [TrialState.RUNNING]
