"""The studies of a search and their life: creation, queueing, heartbeats, stale trials and retries.

A search is one Optuna study per rung (see :mod:`nas.search.rungs`): the *main* study, named after
the search, holds the full-fidelity rung and the search's settings; screening rungs live in
``<name>.rung0``, ``<name>.rung1``, ... Everything that must happen once (creating the studies,
writing the settings, queueing the references, promoting a rung, retrying a dead worker's trial)
runs under :func:`storage_lock` and first checks what is already there, so it is idempotent: a run
killed half-way is completed by the next one, and two runs starting together both end up working
on the same study.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.store.keys import BEAT_ATTR, FIXED_PARAMS_ATTR, RUNS_ATTR
from nas.store.record import TrialRecord, update_record
from nas.store.storage import shares_a_lock, storage_lock
from nas.system import pid_alive

HEARTBEAT_SECONDS = 5.0  # a running trial's worker writes a beat this often
STALE_SECONDS = 20.0  # a running trial whose last beat is this old is retried
MAX_RETRIES = 1  # real failures (errors) retried this often; kills and interrupts always are


# ---------------------------------------------------------------- studies of a search


def find_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage)]


def sibling_study(study: optuna.Study, name: str) -> optuna.Study | None:
    """Another study of the same storage (a search's other rungs)."""
    return find_study(study._storage, name)


def study_system_attr(study: optuna.Study, key: str, default: Any = None) -> Any:
    return study._storage.get_study_system_attrs(study._study_id).get(key, default)


def set_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    study._storage.set_study_system_attr(study._study_id, key, value)


def record_run(study: optuna.Study, url: str, run: dict[str, Any]) -> None:
    """Add one nas-search run to the run log of a search's main study."""
    with storage_lock(url):
        set_study_system_attr(study, RUNS_ATTR, [*runs_of(study), run])


def runs_of(study: optuna.Study) -> list[dict[str, Any]]:
    """The runs recorded in a search's main study, oldest first."""
    return study_system_attr(study, RUNS_ATTR, [])


def fresh_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> FrozenTrial:
    """The trial as the storage holds it now."""
    return study._storage.get_trial(trial._trial_id)


def ensure_study(storage: optuna.storages.BaseStorage, name: str, directions: list[str]) -> optuna.Study:
    """Load the study, or create it (idempotent under the storage lock)."""
    study = find_study(storage, name)
    if study is None:
        try:
            study = optuna.create_study(study_name=name, storage=storage, directions=directions)
        except optuna.exceptions.DuplicatedStudyError:  # another machine without our lock (e.g. older version)
            study = optuna.load_study(study_name=name, storage=storage)
    return study


def enqueue(study: optuna.Study, params: dict[str, Any], record: TrialRecord,
            system_attrs: dict[str, Any] | None = None) -> int:
    """Queue a trial with fixed parameters; returns its number."""
    template = optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=record.attrs(),
                                         system_attrs={FIXED_PARAMS_ATTR: params, **(system_attrs or {})})
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return study._storage.get_trial_number_from_id(trial_id)


# ---------------------------------------------------------------- heartbeats, stale trials, retries


HOST = socket.gethostname()


def beat(trial: optuna.Trial, **progress: Any) -> None:
    trial.storage.set_trial_system_attr(trial._trial_id, BEAT_ATTR,
                                        {"t": time.time(), "host": HOST, "pid": os.getpid(), **progress})


def progress_of(trial: FrozenTrial) -> tuple[int, int] | None:
    """The epoch a running trial's worker last reported, and of how many."""
    b = trial.system_attrs.get(BEAT_ATTR) or {}
    return (b["epoch"], b["of"]) if "epoch" in b else None


def is_stale(trial: FrozenTrial, now: float | None = None, locked: bool = False) -> bool:
    """A RUNNING trial whose worker is gone: its process on this host has exited, or no beat came
    for STALE_SECONDS.

    A trial that never beat: a worker takes its trial and writes the first beat in one hold of the
    storage lock (``Worker.ask``), so one seen without a beat by a caller holding that lock
    (``locked``) was left by a worker killed between the two: stale at once. Without the lock it may
    be a live worker's, a moment before its beat: stale only once it started STALE_SECONDS ago."""
    now = time.time() if now is None else now
    b = trial.system_attrs.get(BEAT_ATTR)
    if b is None:
        if locked:
            return True
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - started > STALE_SECONDS
    if b.get("host") == HOST and b.get("pid") != os.getpid() and not pid_alive(int(b.get("pid", 0))):
        return True
    return now - float(b.get("t", 0)) > STALE_SECONDS


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial, watch: Callable[[], Any] | None = None) -> Iterator[Callable[[int, int], None]]:
    """Beat while the body runs. The yielded function reports progress (epoch e of E), sent with each beat.
    ``watch`` runs every other beat: the worker looks for other workers' stale trials while it
    trains, so a dead worker's trial is queued again within seconds, not after this trial."""
    progress: dict[str, Any] = {}
    stop = threading.Event()

    def loop() -> None:
        beats = 0
        while not stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):  # a busy database delays a beat; the next one comes
                beat(trial, **progress)
                beats += 1
                if watch is not None and beats % 2 == 0:
                    watch()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield lambda epoch, of: progress.update(epoch=epoch, of=of)
    finally:
        stop.set()
        thread.join()


def requeue(study: optuna.Study, trial: FrozenTrial, outcome: str, reason: str) -> int | None:
    """End a RUNNING trial as FAIL (``outcome`` interrupted or failed) and queue it again with the
    same parameters, unless it is a real failure past MAX_RETRIES. Returns the new trial's number.

    Call under the storage lock. The copy is queued first and the trial failed after, so a kill
    in between leaves a RUNNING trial that the next check handles again, finding its copy there
    (``retry_of``): nothing is lost and nothing queued twice. Returns None if the trial is no
    longer RUNNING (another process handled it first).
    """
    storage = study._storage
    if storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
        return None
    record = TrialRecord.of(trial)
    retries = record.retries + (outcome == "failed")
    number = next((t.number for t in study.get_trials(deepcopy=False)
                   if TrialRecord.of(t).retry_of == trial.number), None)
    if number is None and not (outcome == "failed" and retries > MAX_RETRIES):
        again = TrialRecord(rung=record.rung, fidelity=record.fidelity, name=record.name, bracket=record.bracket,
                            seed=record.seed if record.promoted_from is not None else None,
                            promoted_from=record.promoted_from, retries=retries, retry_of=trial.number)
        fixed = trial.system_attrs.get(FIXED_PARAMS_ATTR)
        template = optuna.trial.create_trial(
            state=TrialState.WAITING, params=None if fixed else trial.params,
            distributions=None if fixed else trial.distributions, user_attrs=again.attrs(),
            system_attrs={FIXED_PARAMS_ATTR: fixed} if fixed else {})
        number = storage.get_trial_number_from_id(storage.create_new_trial(study._study_id, template_trial=template))
    try:
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return None
    update_record(study, trial, outcome=outcome, reason=reason[:300])
    return number


def retry_stale_trials(study: optuna.Study, url: str) -> list[int]:
    """Requeue the RUNNING trials whose worker is gone; returns their numbers.

    A trial without a beat is judged under the lock, at once: a run restarted after a kill between
    ``ask`` and the first beat queues it again now, as it does a trial whose worker beat and died.
    Judged by its age it stayed RUNNING for STALE_SECONDS, long enough for the restarted run to close
    its screening, so its copy was queued after and left unrun (kill test: a trial lost)."""
    done = []
    locked = shares_a_lock(url)  # without a shared lock a beatless trial may be a live worker's on another host
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    suspects = [t for t in running if (locked and BEAT_ATTR not in t.system_attrs) or is_stale(t)]
    if not suspects:
        return done
    with storage_lock(url):
        for t in suspects:
            fresh = fresh_trial(study, t)
            if fresh.state == TrialState.RUNNING and is_stale(fresh, locked=locked):
                if requeue(study, fresh, "interrupted", "its worker stopped (killed or lost) while training") is not None:
                    done.append(t.number)
    return done
