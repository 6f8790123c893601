"""The one error a user can fix: a setting (a parameter of the library) that cannot be used.

Every package raises it, or a subclass (data, storage, export), so it lives below them all. The
library names parameters; only the command line turns a name into its flag.
"""

from __future__ import annotations


class SettingError(ValueError):
    """A setting that cannot be used; ``name`` is the parameter (the CLI turns it into a flag, and each
    other parameter the message names in backquotes, `like_this`)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
