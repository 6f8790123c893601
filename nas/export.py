"""Export: a trained network as a folder of files that run without this package.

The folder holds ``model.pt`` (weights and spec: ``torch.load(..., weights_only=True)`` and
:func:`load_model`), ``model.pt2`` (a ``torch.export`` program: ``torch.export.load(p).module()``),
``model.onnx`` (for onnxruntime), ``spec.json`` (architecture and recipe) and ``metrics.json``
(figures, settings, versions). The two programs take a dynamic batch. Before anything is written,
every format is run on real test images and compared with the PyTorch module; a set that disagrees
is not written. The folder is built beside its destination and moved into place whole, so a
failed export leaves nothing half-written and never damages an existing folder.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from nas.builder import Net, build_model
from nas.config import SettingError
from nas.data import MEAN, STD
from nas.engine import normalize
from nas.spec import Candidate
from nas.study import pid_alive

INPUT = {"image": "28x28 grayscale, uint8 (0 = black background, 255 = white ink), as in MNIST",
         "tensor": "float32, shape (N, 1, 28, 28), NCHW; N is free (dynamic batch)",
         "preprocess": f"x = (image / 255 - {MEAN}) / {STD}", "mean": MEAN, "std": STD}
OUTPUT = {"tensor": "float32, shape (N, 10)",
          "meaning": "log-probabilities (log_softmax) of the digits 0-9; argmax is the predicted digit"}
TOLERANCE = 1e-4  # max abs difference of the log-probabilities against the PyTorch module
FILES = ("model.pt", "model.pt2", "model.onnx", "spec.json", "metrics.json")


class ExportError(ValueError):
    """The export cannot be made; nothing was written."""


@dataclass
class Parity:
    format: str
    images: int
    max_abs_diff: float
    same_class: int  # images whose predicted class agrees with the PyTorch module

    @property
    def ok(self) -> bool:
        return self.max_abs_diff < TOLERANCE and self.same_class == self.images

    def line(self) -> str:
        verdict = "ok" if self.ok else "DISAGREES"
        return (f"{self.format:<10} {self.images:,} test images: max |log-prob difference| {self.max_abs_diff:.2e} "
                f"(< {TOLERANCE:g} needed), same class on {self.same_class:,}/{self.images:,}: {verdict}")


@dataclass
class ExportResult:
    folder: Path
    parity: list[Parity] = field(default_factory=list)


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` only if it succeeded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def recover_interrupted(out: Path) -> None:
    """Undo what an export to ``out`` that was killed (SIGKILL, power loss) left beside it: its staging
    folder is removed, and a previous export it had moved aside is put back if ``out`` is missing.
    Only folders of processes no longer alive are touched; each name carries its process id."""
    if not out.parent.is_dir():
        return
    for path in out.parent.glob(f".{glob.escape(out.name)}.*"):
        found = re.fullmatch(r"(?:(\d+)\.[a-z0-9_]+|old-(\d+))", path.name[len(out.name) + 2:])
        if not found or not path.is_dir() or pid_alive(int(found[1] or found[2])):
            continue
        if found[2] and not out.exists():
            os.replace(path, out)  # the export it was replacing: back in place
        else:
            shutil.rmtree(path, ignore_errors=True)


def check_destination(out: Path, force: bool) -> None:
    """Refuse what would damage or cannot hold the export, before any work is done (after putting back
    what an interrupted export left, see ``recover_interrupted``)."""
    recover_interrupted(out)
    for parent in [out.parent, *out.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise SettingError("out", f"cannot make {out}: {parent} is a file, not a folder")
            break
    if out.exists() and not out.is_dir():
        raise SettingError("out", f"{out} is a file; the export is a folder: pick another `out`")
    if out.exists() and any(out.iterdir()) and not force:
        raise SettingError("out", f"{out} already exists and is not empty; pass `force` to replace it, "
                           "or pick another `out`")


def export_folder(model: Net, candidate: Candidate, metrics: dict[str, Any], out: Path, check_images: torch.Tensor,
                  force: bool = False) -> ExportResult:
    """Write the five files into ``out`` after checking every format on ``check_images`` (uint8,
    N x 28 x 28, real test images)."""
    out = Path(out)
    check_destination(out, force)
    model = model.cpu().to(memory_format=torch.contiguous_format).eval()
    x = normalize(check_images.cpu()).contiguous()
    with torch.inference_mode():
        reference = model(x)
    out.parent.mkdir(parents=True, exist_ok=True)  # staging beside it: the last move is a rename, not a copy
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.{os.getpid()}."))
    try:
        os.chmod(staging, 0o777 & ~_umask())
        parity = [_write_pt2(model, x, reference, staging / "model.pt2"),
                  _write_onnx(model, x, reference, staging / "model.onnx")]
        bad = [p for p in parity if not p.ok]
        if bad:
            raise ExportError(f"{bad[0].format} disagrees with the PyTorch model ({bad[0].line()}); nothing written")
        metrics = {**metrics, "input": INPUT, "output": OUTPUT,
                   "parity": {p.format: {"images": p.images, "max_abs_diff": p.max_abs_diff,
                                         "same_class": p.same_class} for p in parity}}
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save({"spec": candidate.to_dict(), "state_dict": state, "input": INPUT, "output": OUTPUT,
                    "metrics": metrics}, staging / "model.pt")
        (staging / "spec.json").write_text(candidate.to_json(pretty=True))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        for name in FILES:
            os.chmod(staging / name, 0o666 & ~_umask())
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out, parity)


def _move_into_place(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging``: the old folder is moved aside first and removed only after."""
    out.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _compare(name: str, got: torch.Tensor, reference: torch.Tensor) -> Parity:
    got = torch.as_tensor(got, dtype=torch.float32)
    return Parity(name, len(reference), float((got - reference).abs().max()),
                  int((got.argmax(1) == reference.argmax(1)).sum()))


def _dynamic_batch() -> dict[str, Any]:
    return {"x": {0: torch.export.Dim("batch", min=1, max=1 << 20)}}


def _write_pt2(model: Net, x: torch.Tensor, reference: torch.Tensor, path: Path) -> Parity:
    program = torch.export.export(model, (x[:2].clone(),), dynamic_shapes=_dynamic_batch())  # clone: not the whole batch
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    with torch.inference_mode():
        return _compare("model.pt2", loaded(x), reference)


def _write_onnx(model: Net, x: torch.Tensor, reference: torch.Tensor, path: Path) -> Parity:
    import onnx
    import onnxruntime

    with warnings.catch_warnings(), open(os.devnull, "w") as quiet:
        warnings.simplefilter("ignore")
        import contextlib

        with contextlib.redirect_stdout(quiet):  # the exporter reports its steps on stdout
            torch.onnx.export(model, (x[:2].clone(),), str(path), dynamo=True, dynamic_shapes=_dynamic_batch(),
                              input_names=["image"], output_names=["log_probs"], external_data=False)
    onnx.checker.check_model(onnx.load(str(path)))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _compare("model.onnx", session.run(None, {"image": x.numpy()})[0], reference)


def load_model(path: str | Path) -> tuple[Net, dict[str, Any]]:
    """Rebuild an exported model (eval mode) from ``model.pt``; returns it and the file's other entries."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    candidate = Candidate.from_dict(payload["spec"])
    model = build_model(candidate.arch)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), {k: v for k, v in payload.items() if k != "state_dict"}


def state_bytes(model: Net) -> bytes:
    """A model's weights as the bytes of a ``torch.save`` file (for a trial's artifact)."""
    import io

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()
