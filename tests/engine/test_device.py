"""Devices and precision: the rule for every device, and each CUDA branch, exercised on the CPU with the
device's capabilities substituted. Tests marked ``cuda`` need a real GPU (benchmarks/gpu_check.py)."""

import pytest
import torch

from nas.engine import device as device_module
from nas.engine.device import (DeviceCaps, caps_of, check_kernels, choose_precision, eval_batch, resolve_device,
                               resolve_precision, worker_device)
from nas.errors import SettingError

CPU, CPU_BF16 = DeviceCaps("cpu", False), DeviceCaps("cpu", True)
A100, T4, P100 = DeviceCaps("cuda", True, True), DeviceCaps("cuda", False, True), DeviceCaps("cuda", False, False)


@pytest.mark.parametrize("caps, screening", [(CPU, "fp32"), (CPU_BF16, "bf16"), (A100, "bf16"), (T4, "fp16"),
                                             (P100, "fp32")])
def test_reported_accuracy_is_always_fp32_and_screening_uses_only_native_formats(caps, screening):
    assert choose_precision("auto", caps) == "fp32"  # full fidelity, nas-train, nas-export
    assert choose_precision("auto", caps, ranking_only=True) == screening
    assert choose_precision("bf16", caps) == "bf16"  # asked for: given as asked


def test_fp16_is_for_gpus_and_unknown_precisions_are_named():
    assert choose_precision("fp16", T4) == "fp16"
    with pytest.raises(SettingError, match="fp16 .* is for CUDA GPUs"):
        choose_precision("fp16", CPU)
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16"):
        choose_precision("fp8", CPU)


def fake_gpu(monkeypatch, capability=(8, 0), count=1, bf16=True, archs=("sm_75", "sm_80", "sm_86", "sm_90")):
    """torch.cuda as a machine with ``count`` GPUs of ``capability`` would answer it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16 or including_emulation)


def test_a_gpu_reads_its_own_capabilities_not_emulation(monkeypatch):
    fake_gpu(monkeypatch, capability=(7, 5), bf16=False)  # a T4: bf16 only through emulation
    caps = caps_of("cuda")
    assert caps == DeviceCaps("cuda", False, True, "Fake GPU")
    assert resolve_precision("auto", "cuda", ranking_only=True) == "fp16"
    fake_gpu(monkeypatch, capability=(9, 0))
    assert resolve_precision("auto", "cuda:0", ranking_only=True) == "bf16"
    assert resolve_precision("auto", "cuda:0") == "fp32"


def test_a_gpu_this_torch_has_no_kernels_for_is_refused_in_one_line(monkeypatch):
    fake_gpu(monkeypatch, capability=(7, 0))  # a V100 against a wheel built for sm_75 and newer
    with pytest.raises(SettingError, match=r"compute capability 7.0, but torch .* sm_75.*install a torch build"):
        resolve_device("cuda")
    fake_gpu(monkeypatch, capability=(8, 9))  # an sm_86 cubin runs on 8.9; so does compute_80 PTX
    check_kernels(0)
    fake_gpu(monkeypatch, capability=(9, 0), archs=("sm_80", "compute_80"))
    check_kernels(0)
    fake_gpu(monkeypatch, capability=(6, 0), archs=("sm_70", "compute_70"))
    with pytest.raises(SettingError, match="compute capability 6.0"):
        check_kernels(0)


def test_devices_are_checked_and_auto_takes_the_gpu(monkeypatch):
    fake_gpu(monkeypatch, count=2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(SettingError, match="only 2 CUDA device"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(SettingError, match="no CUDA GPU is visible"):
        resolve_device("cuda")


def test_workers_take_one_gpu_each_and_share_them_beyond():
    assert [worker_device("cuda", i, 2) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert worker_device("cuda", 3, 1) == "cuda" and worker_device("cuda:1", 3, 4) == "cuda:1"
    assert worker_device("cpu", 1, 4) == "cpu"


def test_evaluation_batches_fit_a_small_gpu():
    assert eval_batch(torch.device("cpu")) == 1000 and eval_batch(torch.device("cuda")) == 2000


def test_a_cuda_device_is_made_exact_and_repeatable(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(d))
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda on, warn_only: calls.append((on, warn_only)))
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        device_module.prepare_device(torch.device("cuda:1"))
        assert calls == [torch.device("cuda:1"), (True, True)]
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = before
        torch.backends.cudnn.deterministic = False
    device_module.prepare_device(torch.device("cpu"))  # the CPU needs nothing
    assert len(calls) == 2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_trains_in_fp16_and_bf16_and_scores_like_the_cpu():
    from conftest import synthetic_digits

    from nas.arch.presets import load_preset
    from nas.engine.splits import Splits
    from nas.engine.trainer import accuracy, train

    images, labels = synthetic_digits(2000, 1)
    data = Splits(torch.from_numpy(images[:1500]), torch.from_numpy(labels[:1500]).long(),
                  torch.from_numpy(images[1500:]), torch.from_numpy(labels[1500:]).long(),
                  torch.from_numpy(images[1500:]), torch.from_numpy(labels[1500:]).long())
    c = load_preset("ref-10066")
    recipe = c.recipe.compressed(2)
    for precision in ("fp32", "bf16", "fp16"):
        result = train(c.arch, recipe, data, "cuda", 0, precision=precision)
        assert result.val_acc > 0.5, precision
    on_gpu = accuracy(result.model, data.test_images.cuda(), data.test_labels.cuda())
    on_cpu = accuracy(result.model.cpu(), data.test_images, data.test_labels)
    assert abs(on_gpu - on_cpu) <= 2 / len(data.test_labels)  # fp32 without TF32: the same images, but for ties


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check runs in full")
def test_the_gpu_check_says_in_one_line_that_there_is_no_gpu_and_exits_0():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.strip().count("\n") == 0 and "no CUDA device is visible" in proc.stdout


def test_auto_jobs_fill_the_cpus_cores_or_each_gpus_free_memory(monkeypatch):
    import os

    from nas.engine.device import auto_jobs

    assert auto_jobs(torch.device("cpu")) == os.cpu_count()
    fake_gpu(monkeypatch, count=2)
    free = iter([80 * 2**30, 3.2 * 2**30])  # an idle 80 GB GPU (capped at 4 workers), and a nearly full one
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (next(free), 80 * 2**30))
    assert auto_jobs(torch.device("cuda")) == 4 + 2
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (0.5 * 2**30, 80 * 2**30))
    assert auto_jobs(torch.device("cuda:1")) == 1  # never none


def test_a_placement_resolves_the_device_and_both_precisions_once(monkeypatch):
    from nas.engine.device import Placement, place

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    native = place("cpu")
    assert native == Placement("cpu", "fp32", "bf16") and native.label == "cpu, fp32, screening bf16"
    assert native.precision_for(ranking_only=True) == "bf16" and native.precision_for(ranking_only=False) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert place("cpu") == Placement("cpu", "fp32", "fp32") and place("cpu").label == "cpu, fp32"
    assert place("cpu", "bf16") == Placement("cpu", "bf16", "bf16")  # asked for: every rung
    with pytest.raises(SettingError, match="fp16"):
        place("cpu", "fp16")


@pytest.mark.parametrize("omp, expected", [("1", 1), ("3", 3), ("", None), ("0", None), ("two", None)])
def test_a_run_without_threads_takes_omp_num_threads_where_set_else_every_core(monkeypatch, omp, expected):
    import os

    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert device_module.default_threads() == (expected or os.cpu_count())
