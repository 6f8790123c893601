"""No output may overwrite an input, a store, or another output.

Every command that writes names its outputs, its inputs (space, spec, data files) and the stores it
must never write over (a study database and its journal, an artifact store) and calls
:func:`check_outputs` before any work; a collision is a one-line :class:`~nas.errors.SettingError`
naming the output's parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from nas.errors import SettingError

DATABASE_SIDE_FILES = ("-journal", "-wal", "-shm", ".lock")  # SQLite's own files beside a database, and our lock


def _resolved(path: Path) -> Path:
    return Path(path).expanduser().resolve()


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def database_files(path: Path | None) -> list[Path]:
    """A SQLite database file and the files SQLite and this tool keep beside it."""
    if path is None:
        return []
    return [path] + [path.with_name(path.name + suffix) for suffix in DATABASE_SIDE_FILES]


def check_outputs(outputs: dict[str, Path | None], inputs: dict[str, Path | None] | None = None,
                  stores: dict[str, Path | None] | None = None) -> None:
    """Refuse an output (parameter name -> path) that is an input or holds one, that is a store or lies
    inside or around one, or that is another output. Paths are compared resolved, so two spellings of
    one file agree."""
    outs = {name: _resolved(p) for name, p in outputs.items() if p is not None}
    ins = {name: _resolved(p) for name, p in (inputs or {}).items() if p is not None}
    kept = {name: _resolved(p) for name, p in (stores or {}).items() if p is not None}
    seen: dict[Path, str] = {}
    for name, out in outs.items():
        for what, path in ins.items():
            if _within(path, out):
                raise SettingError(name, f"{out} is {'the' if path == out else 'around the'} {what} this command "
                                   f"reads; pick another `{name}`")
        for what, path in kept.items():
            if _within(out, path) or _within(path, out):
                where = "is" if out == path else ("lies inside" if _within(out, path) else "holds")
                raise SettingError(name, f"{out} {where} the {what}; writing there would destroy it, so pick "
                                   f"another `{name}`")
        for path, other in seen.items():
            if _within(out, path) or _within(path, out):
                where = "is also" if out == path else ("lies inside" if _within(out, path) else "holds")
                raise SettingError(name, f"{out} {where} the `{other}` of this command; give each output its own "
                                   "path, apart from the others (a folder output is replaced whole)")
        seen[out] = name


def check_writable_folder(name: str, folder: Path) -> None:
    """The folder (made if missing) can hold new files: its nearest existing ancestor is a writable folder."""
    import os

    folder = _resolved(folder)
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise SettingError(name, f"cannot make {folder}: {path} is a file, not a folder")
            if not os.access(path, os.W_OK | os.X_OK):
                raise SettingError(name, f"cannot write into {path}: permission denied; pick another `{name}`")
            return


# ---------------------------------------------------------------- files the tool owns

OWNER_SUFFIX = ".nas-mnist"  # `.NAME.nas-mnist` beside a file NAME the tool wrote: who wrote it, and its digest


def owner_record(path: Path) -> Path:
    return path.with_name(f".{path.name}{OWNER_SUFFIX}")


def _digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_own_file(name: str, path: Path, writer: str) -> None:
    """``path`` may be (re)written by ``writer``: it is no folder, pipe or link, and if it exists it is
    exactly the file this tool last wrote there (its owner record holds the file's sha256). A file
    that merely looks like one of ours, or one of ours the user has since edited, is the user's."""
    import json
    import os

    if path.is_symlink() or (path.exists() and not path.is_file()):
        kind = ("a folder; give a file name" if path.is_dir() else
                "a link" if path.is_symlink() else "not a regular file (a pipe, device or socket)")
        raise SettingError(name, f"{path} is {kind}; pick another `{name}`")
    check_writable_folder(name, path.parent)
    if not path.exists():
        return
    try:
        record = json.loads(owner_record(path).read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or not os.access(path, os.R_OK):
        raise SettingError(name, f"{path} exists and is not a file {writer} wrote; it replaces only its own files, "
                           f"so pick another `{name}`")
    if record.get("sha256") != _digest(path):
        raise SettingError(name, f"{path} has changed since {record.get('written_by', writer)} wrote it; it is "
                           f"yours now, so pick another `{name}`")


def write_own_files(files: dict[Path, Callable[[Path], Any]], writer: str) -> None:
    """Write every file all or nothing (see :func:`~nas.system.atomic_write_all`), each with its owner
    record, so that a later run may replace it (:func:`check_own_file`)."""
    import json

    from nas.system import atomic_write_all

    atomic_write_all(files)
    atomic_write_all({owner_record(path): (lambda p, path=path: p.write_text(json.dumps(
        {"written_by": writer, "file": path.name, "sha256": _digest(path)}) + "\n")) for path in files})


def check_file_size_limit(name: str, need: int, what: str) -> None:
    """The process may write a file of ``need`` bytes: a lower ``ulimit -f`` makes torch's and onnx's
    writers abort the process from C++ (no exception to catch), so it is refused before any work."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and soft < need:
        raise SettingError(name, f"the file size limit (ulimit -f) is {soft:,} bytes, and {what} takes files of up "
                           f"to about {need:,}; raise it (ulimit -f unlimited) and run the command again")
