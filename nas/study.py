"""The study and its life: storage, the lock that orders writers, settings, creation and resume,
heartbeats, stale trials and retries.

A search is one Optuna study per rung (see :mod:`nas.fidelity`): the *main* study, named after
the search, holds the full-fidelity rung and the search's settings; screening rungs live in
``<name>.rung0``, ``<name>.rung1``, ... Everything that must happen once (creating the studies,
writing the settings, queueing the references, promoting a rung, retrying a dead worker's trial)
runs under :func:`storage_lock` and first checks what is already there, so it is idempotent: a run
killed half-way is completed by the next one, and two runs starting together both end up working
on the same study.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.config import SettingError
from nas.record import TrialRecord, set_finished_trial_user_attr

HEARTBEAT_SECONDS = 5.0  # a running trial's worker writes a beat this often
STALE_SECONDS = 20.0  # a running trial without a beat for this long is retried
MAX_RETRIES = 1  # real failures (errors) retried this often; kills and interrupts always are
BEAT_ATTR = "nas:beat"  # system attribute: {"t": time, "host": ..., "pid": ..., "epoch": e, "of": E}
SETTINGS_ATTR = "nas"  # study user attribute of the main study: its StudySettings
SPACE_ATTR = "nas:space"  # study system attribute of the main study: the space file's text


class StorageError(SettingError):
    """The storage URL cannot be opened; the message never shows a password."""

    def __init__(self, message: str) -> None:
        super().__init__("storage", message)


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for every message and log line."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy knows: nothing to hide in it
        return url
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def redact_text(text: str) -> str:
    """Any ``scheme://user:password@`` in a text (a command line, a message) with the password hidden."""
    import re

    return re.sub(r"(://[^:/@\s]*):([^@\s]+)@", r"\1:***@", text)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, resolved (two spellings of one file agree)."""
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser().resolve()


# ---------------------------------------------------------------- the lock


class _SqliteLock:
    def __init__(self, path: Path) -> None:
        from filelock import FileLock

        self._lock = FileLock(str(path) + ".lock")

    def acquire(self) -> None:
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()


class _ServerLock:
    """A named lock held by the database server (PostgreSQL advisory lock, MySQL GET_LOCK); the
    server releases it when the connection dies, so a killed holder never blocks the others."""

    def __init__(self, url: str) -> None:
        import sqlalchemy

        self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        self._dialect = self._engine.dialect.name
        self._key = int.from_bytes(hashlib.sha1(b"nas-mnist").digest()[:8], "big", signed=True)
        self._connection = None
        self._depth = 0

    def acquire(self) -> None:
        import sqlalchemy

        if self._depth == 0:
            self._connection = self._engine.connect()
            if self._dialect == "postgresql":
                self._connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
            else:
                self._connection.execute(sqlalchemy.text("SELECT GET_LOCK('nas-mnist', 600)"))
        self._depth += 1

    def release(self) -> None:
        import sqlalchemy

        self._depth -= 1
        if self._depth == 0 and self._connection is not None:
            if self._dialect == "postgresql":
                self._connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            else:
                self._connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK('nas-mnist')"))
            self._connection.close()
            self._connection = None


_LOCKS: dict[str, Any] = {}
_LOCKS_GUARD = threading.RLock()


@contextlib.contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """One lock per storage, shared by every process and machine that uses it (re-entrant within
    a process). It orders: table creation, study creation, queueing, ``study.ask()`` (SQLite cannot
    lock the waiting trial it pops: optuna issue 4002), promotions and retries."""
    path = sqlite_path(url)
    # One lock object per thread for a server (its connection holds the lock); filelock keeps
    # per-thread state itself.
    key = str(path) if path is not None else f"{url}#{threading.get_ident()}"
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = _SqliteLock(path) if path is not None else (
                _ServerLock(url) if url.split(":")[0].split("+")[0] in ("postgresql", "mysql") else None)
        if lock is None:
            yield
            return
        lock.acquire()
        try:
            yield
        finally:
            lock.release()


# ---------------------------------------------------------------- storage


def make_storage(url: str, create: bool = True) -> optuna.storages.RDBStorage:
    """Open (``create``: and make, with its tables) the storage at ``url``. Problems are one
    :class:`StorageError` line without the password."""
    shown = redact(url)
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.exists():
            raise StorageError(f"no database at {path}; check the storage URL ({shown})")
        if path.parent.exists() and not path.parent.is_dir():
            raise StorageError(f"cannot create the database {path}: {path.parent} is a file, not a folder")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create the folder {path.parent} for the database: {e.strerror}") from None
        engine_kwargs = {"connect_args": {"timeout": 120}}  # wait for the other writers, don't fail
    try:
        with storage_lock(url), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError as e:
        raise StorageError(f"cannot open storage {shown}: its database driver is missing ({e.name or e}); "
                           "for PostgreSQL: pip install 'nas-mnist[postgres]'") from None
    except Exception as e:  # noqa: BLE001 - sqlalchemy raises many kinds for a bad URL or server
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StorageError(f"cannot open storage {shown}: {first.replace(url, shown)}") from None


# ---------------------------------------------------------------- studies of a search


def rung_study_name(name: str, rung: int, rungs: int) -> str:
    """The last rung is the main study itself; screening rungs get a suffix."""
    return name if rung == rungs - 1 else f"{name}.rung{rung}"


def find_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


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
                                         system_attrs={"fixed_params": params, **(system_attrs or {})})
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return study._storage.get_trial_number_from_id(trial_id)


# ---------------------------------------------------------------- heartbeats, stale trials, retries


HOST = socket.gethostname()


def beat(storage: optuna.storages.BaseStorage, trial_id: int, **progress: Any) -> None:
    storage.set_trial_system_attr(trial_id, BEAT_ATTR, {"t": time.time(), "host": HOST, "pid": os.getpid(), **progress})


def pid_alive(pid: int) -> bool:
    """Whether a process of this host is running (another user's counts: signalling it is refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def is_stale(trial: FrozenTrial, now: float | None = None) -> bool:
    """A RUNNING trial whose worker is gone: its process on this host has exited, or no beat came
    for STALE_SECONDS (a trial killed before its first beat counts from its start)."""
    now = time.time() if now is None else now
    b = trial.system_attrs.get(BEAT_ATTR)
    if b is None:
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - started > STALE_SECONDS
    if b.get("host") == HOST and b.get("pid") != os.getpid() and not pid_alive(int(b.get("pid", 0))):
        return True
    return now - float(b.get("t", 0)) > STALE_SECONDS


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int,
              watch: Callable[[], Any] | None = None) -> Iterator[dict[str, Any]]:
    """Beat while the body runs. The yielded dict is progress (e.g. epoch) sent with each beat.
    ``watch`` runs every other beat: the worker looks for other workers' stale trials while it
    trains, so a dead worker's trial is queued again within seconds, not after this trial."""
    progress: dict[str, Any] = {}
    stop = threading.Event()

    def loop() -> None:
        beats = 0
        while not stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):  # a busy database delays a beat; the next one comes
                beat(storage, trial_id, **progress)
                beats += 1
                if watch is not None and beats % 2 == 0:
                    watch()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield progress
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
        fixed = trial.system_attrs.get("fixed_params")
        template = optuna.trial.create_trial(
            state=TrialState.WAITING, params=None if fixed else trial.params,
            distributions=None if fixed else trial.distributions, user_attrs=again.attrs(),
            system_attrs={"fixed_params": fixed} if fixed else {})
        number = storage.get_trial_number_from_id(storage.create_new_trial(study._study_id, template_trial=template))
    try:
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return None
    set_finished_trial_user_attr(storage, trial._trial_id, "outcome", outcome)
    set_finished_trial_user_attr(storage, trial._trial_id, "reason", reason[:300])
    return number


def retry_stale_trials(study: optuna.Study, url: str) -> list[int]:
    """Requeue the RUNNING trials whose worker is gone; returns their numbers."""
    done = []
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    stale = [t for t in running if is_stale(t)]
    if not stale:
        return done
    with storage_lock(url):
        for t in stale:
            fresh = study._storage.get_trial(t._trial_id)
            if fresh.state == TrialState.RUNNING and is_stale(fresh):
                if requeue(study, fresh, "interrupted", "its worker stopped (killed or lost) while training") is not None:
                    done.append(t.number)
    return done
