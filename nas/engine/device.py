"""Devices and precision: which device a run trains on, and in which number format.

The precision rule (:func:`choose_precision`), one for every device: **fp32 wherever an accuracy is
reported** (full-fidelity trials, ``nas-train``, ``nas-export``), because bf16 autocast cost
ref-19712 0.077 point of final test accuracy (``results/precision.csv``, 3 seeds); reduced precision
only for runs that just rank candidates (screening rungs), and only where the device has it
natively: bf16 on CPUs with AVX-512 BF16 or AMX and on GPUs of compute capability 8.0 and newer,
else fp16 with a gradient scaler on GPUs with tensor cores (7.0 and newer), else fp32. Emulated
bf16 (a T4 passes ``torch.cuda.is_bf16_supported()`` through emulation; most CPUs) is slower than
fp32, never chosen. On CUDA, fp32 means fp32: TF32 matmuls and convs are turned off, so a CUDA-scored
accuracy matches the exported model's on the CPU.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nas.errors import SettingError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT_DEVICE = DEFAULT_PRECISION = "auto"
CUDA_EVAL_BATCH = 2_000  # images per evaluation batch on a GPU: ~0.4 GB for a 32-channel net, not ~2 GB
CPU_EVAL_BATCH = 1_000  # within 0.2 s of the best on these CPUs (README: evaluation batch size)


@dataclass(frozen=True)
class DeviceCaps:
    """What a device can do natively, as the precision rule needs it."""

    type: str  # "cpu" or "cuda"
    native_bf16: bool
    tensor_cores: bool = False  # fp16 matmuls in hardware (CUDA compute capability 7.0 and newer)
    name: str = ""


def caps_of(device: torch.device | str) -> DeviceCaps:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, _ = torch.cuda.get_device_capability(index)
        return DeviceCaps("cuda", torch.cuda.is_bf16_supported(including_emulation=False), major >= 7,
                          torch.cuda.get_device_name(index))
    return DeviceCaps("cpu", bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()))


def choose_precision(asked: str, caps: DeviceCaps, ranking_only: bool = False) -> str:
    """The precision rule (module docstring): what ``asked`` means on a device with ``caps``."""
    if asked not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {asked!r}")
    if asked == "fp16" and caps.type != "cuda":
        raise SettingError("precision", "fp16 (with a gradient scaler) is for CUDA GPUs; use fp32 or bf16 on the CPU")
    if asked != "auto":
        return asked
    if not ranking_only:
        return "fp32"
    if caps.native_bf16:
        return "bf16"
    return "fp16" if caps.type == "cuda" and caps.tensor_cores else "fp32"


def resolve_precision(precision: str, device: torch.device | str, ranking_only: bool = False) -> str:
    """:func:`choose_precision` on the device as it is."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return choose_precision(precision, caps_of(device), ranking_only)


@dataclass(frozen=True)
class Placement:
    """Where a command trains and in which number formats: resolved once, at the command's top, from
    what was asked (``--device``, ``--precision``), and passed down; nothing below resolves "auto"."""

    device: str  # "cpu", "cuda", "cuda:1"
    precision: str  # wherever an accuracy is reported: full fidelity, nas-train, nas-export
    screening: str  # runs that only rank candidates (screening rungs)

    def precision_for(self, ranking_only: bool) -> str:
        return self.screening if ranking_only else self.precision

    @property
    def label(self) -> str:
        """As a run's header says it: ``cpu, fp32, screening bf16``."""
        same = self.precision == self.screening
        return f"{self.device}, {self.precision}" + ("" if same else f", screening {self.screening}")


def place(device: str = DEFAULT_DEVICE, precision: str = DEFAULT_PRECISION) -> Placement:
    """The device asked for (``auto``: CUDA when present) and the precision rule applied on it."""
    resolved = resolve_device(device)
    caps = caps_of(resolved)
    return Placement(str(resolved), choose_precision(precision, caps), choose_precision(precision, caps, True))


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present. Asking for a GPU that is not there, or that this torch build
    has no kernels for, is one :class:`SettingError` line."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SettingError("device", f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError("device", f"{name}: no CUDA GPU is visible on this machine; use cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingError("device", f"{name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        check_kernels(device.index or 0)
    elif device.type != "cpu":
        raise SettingError("device", f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def check_kernels(index: int) -> None:
    """This torch build carries kernels for the GPU: a cubin of its major version at or below its
    minor version, or PTX it can compile. Otherwise every kernel would fail with "no kernel image"."""
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    archs = torch.cuda.get_arch_list()
    built = [(kind, int(m[:-1]), int(m[-1])) for kind, m in (re.fullmatch(r"(sm|compute)_(\d+)[a-z]?", a).groups()
                                                          for a in archs if re.fullmatch(r"(sm|compute)_\d+[a-z]?", a))]
    ok = any(kind == "sm" and a_major == major and a_minor <= minor for kind, a_major, a_minor in built) or \
        any(kind == "compute" and (a_major, a_minor) <= (major, minor) for kind, a_major, a_minor in built)
    if not ok:
        raise SettingError("device", f"cuda:{index} ({torch.cuda.get_device_name(index)}) has compute capability "
                           f"{major}.{minor}, but torch {torch.__version__} carries kernels for {', '.join(archs)} "
                           "only; install a torch build for it (e.g. pip install torch --index-url "
                           "https://download.pytorch.org/whl/cu118 for compute capability 3.7 to 9.0)")


GPU_WORKER_GB = 1.5  # what one search worker holds on a GPU: its CUDA context, the data set, a model's activations
MAX_WORKERS_PER_GPU = 4  # tiny networks leave a GPU idle between kernel launches; more workers fill it, to a point


def default_threads() -> int:
    """CPU threads a run takes when none are asked: ``OMP_NUM_THREADS`` where it is set (as torch itself
    honours it: a test suite or a shared machine caps every process with it), else every core."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else max(1, os.cpu_count() or 1)


def auto_jobs(device: torch.device) -> int:
    """Worker processes for ``--jobs auto``: on GPUs, as many per GPU as its free memory holds (at most
    ``MAX_WORKERS_PER_GPU``), on every GPU visible; on the CPU, one per core (one thread each)."""
    import torch

    if device.type != "cuda":
        return max(1, os.cpu_count() or 1)
    indices = [device.index] if device.index is not None else range(torch.cuda.device_count())
    per_gpu = [min(MAX_WORKERS_PER_GPU, int(torch.cuda.mem_get_info(i)[0] / 2**30 // GPU_WORKER_GB)) for i in indices]
    return max(1, sum(per_gpu))


def worker_device(device: str, worker: int, count: int) -> str:
    """The device of worker ``worker``: with plain ``cuda`` and several GPUs visible, one GPU per worker
    in turn (workers beyond the GPUs share them); a named ``cuda:N`` or the CPU as given."""
    return f"cuda:{worker % count}" if device == "cuda" and count > 1 else device


def prepare_device(device: torch.device) -> None:
    """Make a CUDA device this process's own and its fp32 exact and as repeatable as CUDA allows:
    no TF32, cuDNN's deterministic kernels, deterministic algorithms where torch has them (it warns
    of the ops that have none; see docs/guide.md)."""
    import torch

    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def eval_batch(device: torch.device) -> int:
    return CUDA_EVAL_BATCH if device.type == "cuda" else CPU_EVAL_BATCH
