"""The storage: opening an Optuna storage URL, and the lock that orders writers.

Everything that must happen once (creating studies, queueing, promoting, retrying) runs under
:func:`storage_lock`: a file lock beside a SQLite file, an advisory lock on PostgreSQL, ``GET_LOCK``
on MySQL, shared by every process and machine that uses the storage.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import sqlite3
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

import optuna

from nas.store.snapshot import restore_snapshot  # a committed study's file, restored where missing
from nas.errors import SettingError
from nas.store.urls import StorageError, raw_at_password, read_only_uri, read_only_url, redact, redact_text, sqlite_path


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


def shares_a_lock(url: str) -> bool:
    """Whether :func:`storage_lock` holds a lock every user of ``url`` sees: a SQLite file, a PostgreSQL
    or MySQL server; other databases run unlocked."""
    return sqlite_path(url) is not None or url.split(":")[0].split("+")[0] in ("postgresql", "mysql")


@contextlib.contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """One lock per storage, shared by every process and machine that uses it (re-entrant within
    a process). It orders: table creation, study creation, queueing, ``study.ask()`` (SQLite cannot
    lock the waiting trial it pops: optuna issue 4002), promotions and retries."""
    if not shares_a_lock(url):
        yield
        return
    path = sqlite_path(url)
    # One lock object per thread for a server (its connection holds the lock); filelock keeps
    # per-thread state itself.
    key = str(path) if path is not None else f"{url}#{threading.get_ident()}"
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = _SqliteLock(path) if path is not None else _ServerLock(url)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()


OPTUNA_TABLES = {"studies", "trials", "version_info"}  # what makes a database an Optuna storage
MODES = ("create", "write", "read")


def _sqlite_tables(database: str, uri: bool = False) -> set[str]:
    with contextlib.closing(sqlite3.connect(database, uri=uri)) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _tables(url: str, path: Path | None) -> set[str]:
    """The tables the database holds now, read without writing (SQLite: opened read-only)."""
    import sqlalchemy

    if path is not None:
        if not path.exists():
            return set()
        if not path.is_file():
            raise StorageError(f"{path} is not a file; give the path of a SQLite database file")
        try:
            return _sqlite_tables(read_only_uri(path), uri=True)
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorname", "") != "SQLITE_READONLY_ROLLBACK":
                raise StorageError(f"{path} is not a SQLite database ({e}); nothing was written to it") from None
        # A writer killed mid-commit left a hot journal, which only a read-write connection may roll back
        # (SQLite's own recovery: the file returns to its last commit). Read-only, every run refused
        # the file for good (kill test: 1,300 runs in a row).
        try:
            return _sqlite_tables(str(path))
        except sqlite3.DatabaseError as e:
            raise StorageError(f"{path} needs the rollback of a write that was cut short, and it cannot be "
                               f"written ({e}); make it writable and run again") from None
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def database_state(url: str) -> str:
    """What the database at ``url`` holds now, read without writing: "optuna" (a storage of Optuna's),
    "empty", or "missing" (no SQLite file yet). A database of another program's, a file that is not
    a database, an in-memory one or a server that does not answer: one :class:`StorageError` line."""
    if raw_at_password(url) is not None:
        raise StorageError(f"{redact(url)}: its password holds a raw '@', which ends it early; write each '@' in "
                           "the password as %40")
    path = sqlite_path(url)
    if path is None and url.startswith("sqlite"):
        raise StorageError(f"{redact(url)} keeps nothing once the run ends; give a database file, e.g. "
                           "sqlite:///studies/mnist.db")
    if path is not None and not path.exists() and not restore_snapshot(path):
        return "missing"
    try:
        tables = _tables(url, path)
    except StorageError:
        raise
    except ImportError as e:
        raise StorageError(f"cannot open storage {redact(url)}: its database driver is missing ({e.name or e}); "
                           "for PostgreSQL: pip install 'nas-mnist[postgres]'") from None
    except Exception as e:  # noqa: BLE001 - sqlalchemy raises many kinds for a bad URL or server
        raise StorageError(f"cannot open storage {redact(url)}: {_first_line(e, url)}") from None
    if OPTUNA_TABLES <= tables:
        return "optuna"
    from optuna.storages._rdb.models import BaseModel

    if tables and tables < set(BaseModel.metadata.tables):  # another run is creating Optuna's tables right now
        return "empty"
    if tables and path is not None:  # a server database may hold other tables beside Optuna's; a file is one program's
        raise StorageError(f"{path} holds other tables ({', '.join(sorted(tables)[:5])}), not the studies of a "
                           "search; nothing was written to it")
    return "empty"


def make_storage(url: str, create: bool = True, mode: str | None = None) -> optuna.storages.RDBStorage:
    """Open the storage at ``url``: ``create`` it with its tables (a search), ``write`` to an existing
    one (results written back to a trial), or ``read`` it (a report, an export: a SQLite file is
    opened read-only). A database that holds no Optuna storage is refused untouched unless created.
    Problems are one :class:`StorageError` line without the password."""
    mode = mode or ("create" if create else "write")
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    state = database_state(url)
    if state == "missing" and mode != "create":
        raise StorageError(f"no database at {path}; check the storage URL ({redact(url)})")
    if state == "empty" and mode != "create":
        raise StorageError(f"{path or redact(url)} is empty, not the studies of a search; nothing was written to "
                           "it; give the database nas-search wrote")
    if path is not None:
        if mode == "create":
            _make_folder(path)
        engine_kwargs = {"connect_args": {"timeout": 120}}  # wait for the other writers, don't fail
        if mode == "read":
            url = read_only_url(path)
    else:
        engine_kwargs = {"pool_pre_ping": True}  # a server that restarted: reconnect instead of failing
    try:
        lock = storage_lock(url) if mode != "read" else contextlib.nullcontext()
        with lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=mode != "create")
    except Exception as e:  # noqa: BLE001 - sqlalchemy raises many kinds for a bad URL or server
        raise StorageError(f"cannot open storage {redact(url)}: {_first_line(e, url)}") from None


def _make_folder(path: Path) -> None:
    if path.parent.exists() and not path.parent.is_dir():
        raise StorageError(f"cannot create the database {path}: {path.parent} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create the folder {path.parent} for the database: {e.strerror}") from None
    import os

    writable = path if path.exists() else path.parent
    if not os.access(writable, os.W_OK):
        raise StorageError(f"cannot write the database {path}: {writable} is not writable")


def _first_line(e: BaseException, url: str) -> str:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return redact_text(first, url)


DATABASE_WAIT_SECONDS = 300.0  # how long a worker waits for a database server that stopped answering


def _chain(e: BaseException) -> list[BaseException]:
    """The exception and its causes (Optuna wraps the driver's error in its own)."""
    chain = [e]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
        chain.append(nxt)
    return chain


def connection_lost(e: BaseException) -> bool:
    """The database server went away (restarted, network lost): worth waiting for, unlike a bad query.
    SQLite's own errors (locked, disk full) are not this: there is no server to come back."""
    import sqlalchemy.exc

    for cause in _chain(e):
        if isinstance(cause, sqlalchemy.exc.DBAPIError) and not type(cause.orig).__module__.startswith("sqlite3"):
            return cause.connection_invalidated or isinstance(
                cause, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError))
        if isinstance(cause, sqlalchemy.exc.InvalidatePoolError):
            return True
    return False


def wait_for_database(storage: optuna.storages.BaseStorage, url: str, limit: float | None = None) -> None:
    """Return once the database answers again; after ``limit`` seconds, a :class:`StorageError` line."""
    import time

    limit = DATABASE_WAIT_SECONDS if limit is None else limit
    start = time.time()
    while True:
        try:
            storage.get_all_studies()
            return
        except Exception as e:  # noqa: BLE001 - anything but a lost connection is a real error
            if not connection_lost(e):
                raise
        if time.time() - start > limit:
            raise StorageError(f"the database at {redact(url)} has not answered for {limit:.0f} s, so this run "
                               "stopped; its running trials are queued again by the next run of the same command")
        time.sleep(2.0)


REFUSED_WRITES = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # no space, over the file size limit, over the quota
SQLITE_REFUSED_WRITES = ("SQLITE_FULL", "SQLITE_IOERR_WRITE")  # SQLite's names for the same ("disk I/O error")


def disk_full(e: BaseException) -> bool:
    """The disk refused a write: it is full, a file reached its size limit (``ulimit -f``), a quota."""
    return any("database or disk is full" in str(c) or getattr(c, "errno", None) in REFUSED_WRITES
               or getattr(c, "sqlite_errorname", None) in SQLITE_REFUSED_WRITES for c in _chain(e))


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """A full disk or a database that went away, anywhere in a run: one line that says the study is
    intact and how to go on, instead of the driver's traceback."""
    try:
        yield
    except SettingError:
        raise
    except Exception as e:
        first = _first_line(e, url)[:200]
        if disk_full(e):
            raise StorageError(f"the disk is full or a file reached its size limit ({first}); the study is intact: "
                               "free some space (or raise `ulimit -f`) and run the same command to resume") from None
        if connection_lost(e):
            raise StorageError(f"lost the database at {redact(url)} ({first}); the study is intact: run the same "
                               "command to resume") from None
        raise
