"""Signals: Ctrl-C and SIGTERM end a run cleanly, at safe points, and workers never outlive their parent."""

from __future__ import annotations

import signal
from typing import Any


class Interrupted(BaseException):
    """SIGTERM (or SIGINT) arrived; like KeyboardInterrupt, it is not an error of the trial."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_PENDING: list[int] = []  # signals received, not yet acted on


def note_signal(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
    _PENDING.append(signum)


def check_signal() -> None:
    """Raise :class:`Interrupted` if SIGTERM or SIGINT came. Called at safe points (every batch,
    epoch and loop step): an exception raised from the handler itself could land inside a database
    transaction and leave it open, holding SQLite's write lock."""
    if _PENDING:
        raise Interrupted(_PENDING[0])


def handled_signal() -> None:
    _PENDING.clear()


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, note_signal)
    signal.signal(signal.SIGINT, note_signal)


def set_pdeathsig() -> None:
    """Linux: this process gets SIGTERM when its parent dies, so workers never outlive it."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
