"""What the tool asks of the operating system: whether a process lives, and files written whole."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable


def pid_alive(pid: int) -> bool:
    """Whether a process of this host is running (another user's counts: signalling it is refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` only if it succeeded."""
    atomic_write_all({path: write})


def atomic_write_all(files: dict[Path, Callable[[Path], Any]]) -> None:
    """Write every file (``write(tmp_path)`` each) and move them onto their paths only if all succeeded:
    a full disk halfway leaves none of them written. A file replaced keeps its permissions (a report
    the user made private stays private); a new one gets the umask's."""
    temps: dict[Path, str] = {}
    try:
        for path, write in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temps[path] = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            write(Path(temps[path]))
        for path, tmp in temps.items():
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode) if path.is_file() else 0o666 & ~umask())
        for path, tmp in temps.items():
            os.replace(tmp, path)
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)


MAX_NESTING = 50  # brackets or indentation levels of a spec, space or preset file; theirs is under 10


def read_text_file(path: Path, max_bytes: int, what: str, form: str = "") -> str:
    """The text of a small input file (``what`` names it in errors), refused before it is parsed if it
    is not a regular file (a FIFO would block, /dev/zero never ends), is larger than ``max_bytes``,
    or is not UTF-8. Never reads more than ``max_bytes + 1`` bytes."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, pipe or socket)"
            raise ValueError(f"cannot read {what} {path}: it is {kind}; give the path of a file")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise ValueError(f"{what} {path} is larger than {max_bytes // 1000} KB; it should be a short text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not a text (UTF-8) {form + ' ' if form else ''}file") from None


def nesting_depth(text: str) -> int:
    """How deep brackets nest outside quoted strings, or indentation steps where a line opens a block:
    a cheap bound checked before a JSON or YAML parser (whose recursion it would otherwise exhaust)."""
    depth = deepest = 0
    quote = None
    escaped = False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == "\n":
            quote = None  # an apostrophe in a YAML comment or plain scalar does not open a string
    indents = sorted({len(line) - len(line.lstrip(" -")) for line in text.splitlines() if line.strip()})
    return max(deepest, len(indents) - 1)


def check_nesting(text: str, what: str, limit: int = MAX_NESTING) -> None:
    if nesting_depth(text) > limit:
        raise ValueError(f"{what} is nested too deeply (more than {limit} levels); it is not a file this tool wrote "
                         "or documents")


def json_object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook`` for files a user writes: a key given twice is a mistake
    (the parser would keep the last one silently), so it is refused."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} is given twice in one object; keep one")
        seen[key] = value
    return seen
