"""A search's SQLite file in the form a repository keeps: ``NAME.db.gz`` beside ``NAME.db``.

Why the SQLite file and not Optuna's journal: it is the very file the search runs on, so
optuna-dashboard, nas-report, nas-train and a resumed search read it with every attribute, and the
storage lock and retries need no second path. A snapshot is a consistent copy taken while the search
writes (sqlite3's online backup), vacuumed and gzipped (about a tenth of the file), written whole
or not at all. A command given ``sqlite:///NAME.db`` where only ``NAME.db.gz`` is (a fresh clone)
restores the file from it first, so the same command resumes the committed search.
"""

from __future__ import annotations

import gzip
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

SUFFIX = ".gz"
EVERY_SECONDS = 600  # a running search rewrites its snapshot after a trial this long after the last one


def kept_snapshot(url: str, asked: bool) -> Path | None:
    """The SQLite file whose snapshot a search keeps: where asked (``--snapshot``) or where one is
    already beside it (a committed study stays current); None otherwise or for a server database."""
    from nas.store.urls import sqlite_path

    path = sqlite_path(url)
    return path if path is not None and (asked or snapshot_of(path).exists()) else None


def snapshot_of(database: Path) -> Path:
    return database.with_name(database.name + SUFFIX)


def write_snapshot(database: Path) -> Path:
    """Write ``database``'s snapshot beside it (replacing the last one) and return its path."""
    target = snapshot_of(database)
    with tempfile.TemporaryDirectory(dir=database.parent, prefix=".snapshot-") as tmp:
        copy = Path(tmp) / database.name
        source, dest = sqlite3.connect(f"file:{database}?mode=ro", uri=True), sqlite3.connect(copy)
        try:
            source.backup(dest)
            dest.execute("VACUUM")
        finally:
            source.close()
            dest.close()
        packed = Path(tmp) / target.name
        with open(copy, "rb") as f, open(packed, "wb") as raw, gzip.GzipFile(filename=database.name, mode="wb",
                                                                                fileobj=raw, mtime=0) as out:
            shutil.copyfileobj(f, out, 1 << 20)
        os.replace(packed, target)
    return target


def restore_snapshot(database: Path) -> bool:
    """Make ``database`` from its snapshot where the file is missing and the snapshot is there; a
    damaged snapshot is one :class:`StorageError` line and stays as it is."""
    from nas.store.urls import StorageError

    packed = snapshot_of(database)
    if database.exists() or not packed.is_file():
        return False
    try:
        _unpack(packed, database)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise StorageError(f"cannot restore {database} from {packed}: {e}; fetch the file again") from None
    return True


def _unpack(packed: Path, database: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=database.parent, prefix=".restore-")
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(packed, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as any new file, not mkstemp's owner-only mode
        os.replace(tmp, database)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
