"""No output may overwrite an input, a store, or another output.

Every command that writes names its outputs, its inputs (space, spec, data files) and the stores it
must never write over (a study database and its journal, an artifact store) and calls
:func:`check_outputs` before any work; a collision is a one-line :class:`~nas.errors.SettingError`
naming the output's parameter.
"""

from __future__ import annotations

from pathlib import Path

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
        if out in seen:
            raise SettingError(name, f"{out} is also the `{seen[out]}` of this command; give each output its own path")
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
