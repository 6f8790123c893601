"""Benchmarks that append each finished run to a CSV at once, so runs split across processes share one
file and an interrupted benchmark keeps what it finished."""

from __future__ import annotations

import csv
from pathlib import Path


def append_row(path: Path, fields: list[str], row: dict) -> None:
    """``row`` appended to the CSV at ``path``, with the header first where the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fields)
        if new:
            writer.writeheader()
        writer.writerow(row)
