"""Trial weights as Optuna artifacts: each trained trial's final weights are kept in a
``FileSystemArtifactStore`` beside the storage, so optuna-dashboard offers them for download and
``nas-export --no-retrain`` exports them without training again."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta, upload_artifact

from nas.engine.weights import read_weights
from nas.errors import SettingError
from nas.store.urls import sqlite_path

WEIGHTS = "weights.pt"


def artifact_dir(storage_url: str, override: str | None = None) -> Path:
    """``override``, else beside a SQLite file (``studies/mnist.db`` -> ``studies/mnist.artifacts``),
    else ``studies/artifacts`` (with a database server, point every machine at one shared folder)."""
    if override:
        return Path(override)
    path = sqlite_path(storage_url)
    return path.with_suffix(".artifacts") if path is not None else Path("studies") / "artifacts"


def stores(storage_url: str, artifacts: str | None = None) -> dict[str, Path | None]:
    """What a search keeps and no output may touch: its database files (SQLite) and its artifact store."""
    from nas.outputs import database_files

    found: dict[str, Path | None] = {"artifact store": artifact_dir(storage_url, artifacts)}
    for i, path in enumerate(database_files(sqlite_path(storage_url))):
        found["study database" if i == 0 else f"study database's {path.name}"] = path
    return found


def check_run_paths(storage_url: str, artifacts: str | None, inputs: dict[str, Path | None]) -> None:
    """Before a search writes anything: its database and artifact store are no input and can be written."""
    from nas.outputs import check_outputs, check_writable_folder

    folder = artifact_dir(storage_url, artifacts)
    check_outputs({"storage": sqlite_path(storage_url), "artifacts": folder}, inputs)
    check_writable_folder("artifacts", folder)


def save_weights(trial: optuna.Trial, state_bytes: bytes, directory: Path) -> str:
    """Store a running trial's weights (the bytes of a ``torch.save`` file); returns the artifact id."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / WEIGHTS  # the artifact keeps the file's name
        path.write_bytes(state_bytes)
        return upload_artifact(artifact_store=FileSystemArtifactStore(str(directory)), file_path=str(path),
                               study_or_trial=trial, mimetype="application/octet-stream")


def load_weights(trial: optuna.trial.FrozenTrial, study: optuna.Study, directory: Path) -> dict[str, Any]:
    """The trial's stored weights (a state dict)."""
    metas = [m for m in get_all_artifact_meta(trial, storage=study._storage) if m.filename == WEIGHTS]
    if not metas:
        raise SettingError("no_retrain", f"trial {trial.number} has no stored weights (it was not trained, or was "
                           "trained before weights were kept); export it with retraining")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / WEIGHTS
        try:
            download_artifact(artifact_store=FileSystemArtifactStore(str(directory)), file_path=str(path),
                              artifact_id=metas[-1].artifact_id)
        except Exception as e:  # noqa: BLE001 - the store raises its own kinds for a missing file
            raise SettingError("artifacts", f"trial {trial.number}'s weights are not in {directory} ({e}); "
                               "point it at the search's artifact folder") from None
        return read_weights(path, "artifacts", f"trial {trial.number}'s stored weights")


def state_bytes(model: torch.nn.Module) -> bytes:
    """A model's weights as the bytes of a ``torch.save`` file (for a trial's artifact)."""
    import io

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()
