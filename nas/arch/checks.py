"""Small checks shared by the spec's records: JSON objects' keys, numbers that are really numbers."""

from __future__ import annotations

import math
from typing import Any


def check_keys(what: str, d: Any, allowed: set[str], required: set[str] = frozenset()) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(d).__name__}")
    unknown = set(d) - allowed
    if unknown:
        raise ValueError(f"{what}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(allowed))}")
    missing = required - set(d)
    if missing:
        raise ValueError(f"{what}: missing key {sorted(missing)[0]!r}")


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
