"""Export: turn a trial of a study into a model file (weights, spec and figures) and a spec file.

The study holds each trial's spec, recipe and seed, so the database alone rebuilds the model: the
exporter trains the spec with its recipe and seed on all 60,000 training images (as the
reference networks were trained) and reports the final-epoch test accuracy. Files are written
to a temporary name and moved into place, so a failed export never damages an existing file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from nas.builder import Net, build_model, count_params
from nas.data import Splits
from nas.engine import EpochCallback, train
from nas.spec import Candidate


@dataclass(frozen=True)
class ExportResult:
    model_path: Path | None
    spec_path: Path
    test_acc: float | None
    params: int


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` only if it succeeded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_candidate(candidate: Candidate, out: Path, data: Splits | None, device: str = "cpu", seed: int = 0,
                     epochs: int | None = None, meta: dict[str, Any] | None = None,
                     on_epoch: EpochCallback | None = None) -> ExportResult:
    """Write ``out.json`` (the spec) and, when ``data`` is given, train and write ``out`` (the model)."""
    out = Path(out)
    spec_path = out.with_suffix(".json")
    recipe = replace(candidate.recipe, epochs=epochs or candidate.recipe.epochs)
    candidate = replace(candidate, recipe=recipe)
    atomic_write(spec_path, lambda p: p.write_text(candidate.to_json(pretty=True)))
    params = count_params(candidate.arch)
    if data is None:
        return ExportResult(None, spec_path, None, params)
    result = train(candidate.arch, recipe, data, device, seed, on_epoch=on_epoch)
    if result.stopped:
        raise ValueError(f"training did not finish ({result.stopped}); no model file written")
    state = {k: v.cpu() for k, v in result.model.state_dict().items()}
    payload = {"spec": candidate.to_dict(), "state_dict": state, "test_acc": result.test_acc, "params": params,
               "seed": seed, "epochs": recipe.epochs, **(meta or {})}
    atomic_write(out, lambda p: torch.save(payload, p))
    return ExportResult(out, spec_path, result.test_acc, params)


def load_model(path: str | Path) -> tuple[Net, dict[str, Any]]:
    """Rebuild an exported model (eval mode) and return it with the file's other entries."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    candidate = Candidate.from_dict(payload["spec"])
    model = build_model(candidate.arch)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), {k: v for k, v in payload.items() if k != "state_dict"}
