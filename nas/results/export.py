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
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas.engine.augment import normalize
from nas.engine.data import DataInfo
from nas.engine.weights import load_into, read_weights
from nas.errors import SettingError
from nas.arch import Candidate
from nas.arch.builder import build_model
from nas.arch.layers import Net
from nas.system import pid_alive, umask

def contract(info: DataInfo) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the exported model takes and gives, for the data set it was trained on."""
    c, s, k = info.shape
    mean, std = (info.mean[0], info.std[0]) if len(info.mean) == 1 else (list(info.mean), list(info.std))
    what = "grayscale" if c == 1 else f"{c}-channel"
    image = f"{s}x{s} {what}, uint8 (0 = black background, 255 = white ink)" + (", as in MNIST" if info.name ==
                                                                                  "mnist" else "")
    inputs = {"image": image, "tensor": f"float32, shape (N, {c}, {s}, {s}), NCHW; N is free (dynamic batch)",
              "preprocess": f"x = (image / 255 - {mean}) / {std}", "mean": mean, "std": std, "data": info.name}
    classes = "the digits 0-9" if info.name == "mnist" else f"the {k} classes"
    outputs = {"tensor": f"float32, shape (N, {k})",
               "meaning": f"log-probabilities (log_softmax) of {classes}; argmax is the predicted class"}
    return inputs, outputs


INPUT, OUTPUT = contract(DataInfo())  # MNIST's
TOLERANCE = 1e-4  # max abs difference of the log-probabilities against the PyTorch module
FILES = ("model.pt", "model.pt2", "model.onnx", "spec.json", "metrics.json")
PARITY_IMAGES = 1000  # test images every exported format is checked on against PyTorch


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
    latency: dict[str, Any] = field(default_factory=dict)


MOVE_RECORD = ".nas-export-move"  # written into a folder an export stages or moves aside: the proof it is ours


def _claim(folder: Path, role: str, name: str) -> None:
    """Record in ``folder`` that this process made it (``role`` "staging") or moves it aside ("aside")
    under ``name``, so that only a folder carrying this record, for its very name, is ever removed or
    moved back."""
    record = {"written_by": "nas-export", "role": role, "pid": os.getpid(), "folder": name}
    (folder / MOVE_RECORD).write_text(json.dumps(record) + "\n")


def _claimed(folder: Path) -> dict[str, Any] | None:
    """The record :func:`_claim` left in ``folder``, if it is there and names this folder."""
    try:
        record = json.loads((folder / MOVE_RECORD).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and record.get("written_by") == "nas-export" and record.get("folder") == folder.name
    return record if ok and isinstance(record.get("pid"), int) and record.get("role") in ("staging", "aside") else None


def recover_interrupted(out: Path) -> None:
    """Undo what an export to ``out`` that was killed (SIGKILL, power loss) left beside it: its staging
    folder is removed, and a previous export it had moved aside is put back if ``out`` is missing.
    Only folders that carry an export's own record (``MOVE_RECORD``, naming the folder) of a process
    no longer alive are touched; a folder merely named like one is the user's."""
    if not out.parent.is_dir():
        return
    for path in out.parent.glob(f".{glob.escape(out.name)}.*"):
        record = _claimed(path) if path.is_dir() and not path.is_symlink() else None
        if record is None or pid_alive(record["pid"]):
            continue
        if record["role"] == "aside" and not out.exists():
            (path / MOVE_RECORD).unlink()
            os.replace(path, out)  # the export it was replacing: back in place
        else:
            shutil.rmtree(path, ignore_errors=True)


MARK = ".nas-export"  # the file that says a folder is an export of this tool: --force replaces only those
FILE_SUFFIXES = (".json", ".pt", ".pt2", ".onnx", ".html", ".csv", ".db", ".yaml", ".txt")


def is_export(folder: Path) -> bool:
    """A folder this tool exported: it carries the mark, or (exports before the mark) holds only its files."""
    entries = {p.name for p in folder.iterdir()}
    return MARK in entries or ("metrics.json" in entries and entries <= set(FILES))


def export_bytes(params: int = 20_000) -> int:
    """The largest file an export of a network of ``params`` parameters writes, with room to spare
    (model.pt2 of a 10,000-parameter network: 137 KB)."""
    return (1 << 20) + 64 * params


def check_destination(out: Path, force: bool, name: str = "out") -> None:
    """Refuse what would damage or cannot hold the export, before any work is done (after putting back
    what an interrupted export left, see ``recover_interrupted``). ``force`` replaces an earlier export
    only, never another folder."""
    from nas.outputs import check_file_size_limit, check_writable_folder

    if out.suffix.lower() in FILE_SUFFIXES and not out.is_dir():
        raise SettingError(name, f"{out} looks like a file name, but the export is a folder of five files; "
                           "give a folder name (e.g. best)")
    recover_interrupted(out)
    check_writable_folder(name, out.parent)
    check_file_size_limit(name, export_bytes(), "an export")
    if out.exists() and not out.is_dir():
        raise SettingError(name, f"{out} is a file; the export is a folder: pick another `{name}`")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise SettingError(name, f"{out} already exists and is not empty; pass `force` to replace it, "
                               f"or pick another `{name}`")
        if not is_export(out):
            raise SettingError(name, f"{out} is not a folder nas-export wrote (it has no {MARK}); `force` replaces "
                               f"only an earlier export, so pick another `{name}`")


def export_folder(model: Net, candidate: Candidate, metrics: dict[str, Any], out: Path, check_images: torch.Tensor,
                  force: bool = False, info: DataInfo = DataInfo()) -> ExportResult:
    """Write the five files into ``out`` after checking every format on ``check_images`` (uint8,
    N x 28 x 28, real test images)."""
    out = Path(out)
    check_destination(out, force)
    from nas.outputs import check_file_size_limit

    check_file_size_limit("out", export_bytes(sum(p.numel() for p in model.parameters())), "this export")
    model = model.cpu().to(memory_format=torch.contiguous_format).eval()
    x = normalize(check_images.cpu(), info.mean, info.std).contiguous()
    inputs, outputs = contract(info)
    with torch.inference_mode():
        reference = model(x)
    out.parent.mkdir(parents=True, exist_ok=True)  # staging beside it: the last move is a rename, not a copy
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.{os.getpid()}."))
    try:
        _claim(staging, "staging", staging.name)
        os.chmod(staging, 0o777 & ~umask())
        parity = [_write_pt2(model, x, reference, staging / "model.pt2"),
                  _write_onnx(model, x, reference, staging / "model.onnx")]
        bad = [p for p in parity if not p.ok]
        if bad:
            raise ExportError(f"{bad[0].format} disagrees with the PyTorch model ({bad[0].line()}); nothing written")
        metrics = {**metrics, "input": inputs, "output": outputs,
                   "parity": {p.format: {"images": p.images, "max_abs_diff": p.max_abs_diff,
                                         "same_class": p.same_class} for p in parity},
                   "latency": onnx_latency(staging / "model.onnx", x[:1].numpy())}
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save({"spec": candidate.to_dict(), "state_dict": state, "input": inputs, "output": outputs,
                    "metrics": metrics}, staging / "model.pt")
        (staging / "spec.json").write_text(candidate.to_json(pretty=True))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (staging / MARK).write_text(json.dumps({"written_by": "nas-export", "files": list(FILES)}) + "\n")
        for name in (*FILES, MARK):
            os.chmod(staging / name, 0o666 & ~umask())
        _move_into_place(staging, out)
        (out / MOVE_RECORD).unlink()  # the record names the staging folder, so a crash before this leaves it inert
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out, parity, metrics["latency"])


def _move_into_place(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging``: the old folder is moved aside first and removed only after."""
    out.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        _claim(out, "aside", old.name)
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
            (out / MOVE_RECORD).unlink()
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


LATENCY_RUNS = 200  # batch-1 inferences timed (after 20 untimed)


def onnx_latency(path: Path, image: Any) -> dict[str, Any]:
    """What a deployer pays per image: onnxruntime on one CPU thread, batch 1, median and 90th percentile
    over ``LATENCY_RUNS`` runs, in milliseconds (on the machine that exported it: see ``cpu``)."""
    import statistics
    import time

    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(20):
        session.run(None, {"image": image})
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        session.run(None, {"image": image})
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"batch": 1, "threads": 1, "runtime": f"onnxruntime {onnxruntime.__version__}",
            "median_ms": round(statistics.median(times), 4), "p90_ms": round(times[int(0.9 * len(times))], 4),
            "cpu": cpu_name()}


def cpu_name() -> str:
    """The CPU's model name and its widest vector instructions, as figures should record them (one
    model name covers machines with and without AVX-512)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    widest = next((words for flag, words in (("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
                   if flag in flags), None)
    return f"{name}, {widest}" if widest else name


def load_model(path: str | Path) -> tuple[Net, dict[str, Any]]:
    """Rebuild an exported model (eval mode) from ``model.pt``; returns it and the file's other entries."""
    payload = read_weights(Path(path), "path", "the model file")
    if not isinstance(payload.get("spec"), dict) or "state_dict" not in payload:
        raise SettingError("path", f"{path} holds no spec and weights; give the model.pt of an export")
    candidate = Candidate.from_dict(payload["spec"])
    model = load_into(build_model(candidate.arch), payload["state_dict"], "path", f"the weights in {path}")
    return model.eval(), {k: v for k, v in payload.items() if k != "state_dict"}


def stored_model(study: Any, trial: Any, artifacts: Path, data: Any) -> tuple[Net, dict[str, Any]]:
    """A trial's own weights from the search's artifact store (a duplicate's are its original's), as a
    model, with what the export's metrics say of them (test accuracy scored on ``data``'s test set)."""
    from nas.engine.trainer import accuracy
    from nas.results.query import find_trial
    from nas.store.artifacts import load_weights
    from nas.store.record import TrialRecord, candidate_of

    r = TrialRecord.of(trial)
    trained = find_trial(study, r.duplicate_of) if r.outcome == "duplicate" else trial
    model = load_into(build_model(candidate_of(trial).arch), load_weights(trained, study, artifacts),
                      "artifacts", f"trial {trained.number}'s stored weights")
    test_acc = accuracy(model.eval(), data.test_images, data.test_labels, info=data.info)
    return model, {"weights": "the trial's own weights from the search (trained without the validation images)",
                   "retrained": False, "seed": r.seed, "epochs": r.epochs, "test_acc": test_acc}
