"""A candidate: an architecture with its recipe, what a spec file holds and what a trial trains."""

from __future__ import annotations

import hashlib
import json
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.arch.checks import check_keys
from nas.arch.spec import ArchSpec
from nas.arch.recipe import Recipe
from nas.system import check_nesting, json_object_pairs, read_text_file

MAX_SPEC_BYTES = 1_000_000
MAX_NAME = 200


@dataclass(frozen=True)
class Candidate:
    """An architecture with its recipe: what a spec file holds and what a trial trains."""

    arch: ArchSpec
    recipe: Recipe = field(default_factory=Recipe)
    name: str = ""

    def __post_init__(self) -> None:
        # The name is printed in one-line reports and becomes part of file and study names.
        if not (isinstance(self.name, str) and len(self.name) <= MAX_NAME and self.name.isprintable()):
            raise ValueError(f"name must be one line of printable text of at most {MAX_NAME} characters, got "
                             f"{reprlib.repr(self.name)}")

    @property
    def key(self) -> str:
        """Canonical string of architecture and recipe (the name is not part of it)."""
        return f"{self.arch.key}|{self.recipe.key}"

    @property
    def digest(self) -> str:
        """Short stable id of :attr:`key`, for logs and file names."""
        return hashlib.sha1(self.key.encode()).hexdigest()[:10]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name} if self.name else {}
        return {**d, "arch": self.arch.to_dict(), "recipe": self.recipe.to_dict()}

    def to_json(self, pretty: bool = False, notes: str = "", measured: dict[str, Any] | None = None) -> str:
        """JSON text; ``pretty`` puts one layer per line, as the preset files are written."""
        d = self.to_dict()
        if notes or measured:
            extra = {"notes": notes} if notes else {}
            extra.update({"measured": measured} if measured else {})
            d = {"name": self.name, **extra, **{k: v for k, v in d.items() if k != "name"}}
        if not pretty:
            return json.dumps(d)
        layers = ",\n".join("      " + json.dumps(layer) for layer in d["arch"]["layers"])
        d["arch"]["layers"] = ["@LAYERS@"]
        text = json.dumps(d, indent=2)
        return text.replace('[\n      "@LAYERS@"\n    ]', "[\n" + layers + "\n    ]") + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        # "notes" and "measured" (final test accuracy over seeds) describe a preset file; the candidate ignores them.
        check_keys("spec", d, {"name", "arch", "recipe", "notes", "measured"}, required={"arch"})
        return cls(ArchSpec.from_dict(d["arch"]), Recipe.from_dict(d.get("recipe", {})), d.get("name", ""))

    @classmethod
    def from_json(cls, text: str) -> Candidate:
        def refuse(constant: str) -> None:
            raise ValueError(f"{constant} is not a number a spec can hold")

        check_nesting(text, "the spec")
        try:
            data = json.loads(text, parse_constant=refuse, object_pairs_hook=json_object_pairs)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e}") from None
        except RecursionError:
            raise ValueError("not a spec: the JSON is nested too deeply") from None
        return cls.from_dict(data)


def load_spec_file(path: str | Path) -> Candidate:
    """Read a spec file; every problem is a ``ValueError`` that names the file."""
    text = read_text_file(Path(path), MAX_SPEC_BYTES, "spec file", "JSON")
    try:
        return Candidate.from_json(text)
    except (ValueError, TypeError) as e:
        raise ValueError(f"spec file {path}: {e}") from None
