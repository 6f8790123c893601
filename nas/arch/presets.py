"""The networks shipped as spec files in ``nas/arch/presets/``: the five reference networks users build by
hand (``ref-*``) and the networks this tool's searches found (``found-*``). A preset file may say how
it was made (``notes``) and what it measured (``measured``: final-epoch test accuracy over seeds)."""

from __future__ import annotations

import re
from pathlib import Path

from nas.arch.candidate import Candidate, load_spec_file

PRESETS_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    """In natural order: found-2k, found-4k, found-8k, found-20k, then the references by size."""
    return sorted((p.stem for p in PRESETS_DIR.glob("*.json")),
                  key=lambda name: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)])


def preset_path(name: str) -> Path:
    if name not in preset_names():
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())} (see nas-show --list)")
    return PRESETS_DIR / f"{name}.json"


def load_preset(name: str) -> Candidate:
    return load_spec_file(preset_path(name))


def preset_file(name: str) -> dict:
    """The preset's JSON as written, notes and measurements included."""
    import json

    from nas.arch.candidate import MAX_SPEC_BYTES
    from nas.system import read_text_file

    return json.loads(read_text_file(preset_path(name), MAX_SPEC_BYTES, "preset file", "JSON"))
