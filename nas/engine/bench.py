"""Benchmark: one training epoch through the engine against the classic loop, in one run.

The classic loop is what the reference networks' notebooks run: torchvision's ``MNIST`` dataset
with per-image PIL ``transforms`` (the recipe's augmentation, ``ToTensor``, ``Normalize``), a
``DataLoader`` with ``num_workers=2`` and shuffling, and the loss read with ``.item()`` every
step. Both train the same network with the same recipe (same batch size) on the same 60,000
images; only the time of one epoch is compared.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from nas.engine.data import OFFICIAL_FILES, DataInfo, find_file
from nas.engine.splits import Splits
from nas.engine.device import prepare_device, resolve_precision
from nas.engine.optim import make_optimizer
from nas.engine.trainer import train_epoch
from nas.arch import ArchSpec, Recipe
from nas.arch.builder import build_model


@dataclass(frozen=True)
class BenchResult:
    engine_seconds: float
    dataloader_seconds: float
    device: str
    precision: str = "fp32"  # of the engine's training steps; the classic loop is fp32

    @property
    def speedup(self) -> float:
        return self.dataloader_seconds / self.engine_seconds

    def summary(self) -> str:
        return (f"speedup {self.speedup:.2f}x (engine {self.engine_seconds:.1f} s, "
                f"dataloader {self.dataloader_seconds:.1f} s, {self.device}, engine {self.precision})")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


WARM_UP_BATCHES = 3  # steps before the clock starts: one-time set-up (CUDA context, kernel choice) is not timed


def time_engine_epoch(arch: ArchSpec, recipe: Recipe, data: Splits, device: torch.device, seed: int = 0,
                      precision: str = "auto", on_batch: Callable[[int], None] | None = None) -> float:
    torch.manual_seed(seed)
    prepare_device(device)
    data = data.to(device)
    model = build_model(arch).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    generator = torch.Generator(device).manual_seed(seed)
    precision = resolve_precision(precision, device)
    warm = WARM_UP_BATCHES * recipe.batch_size  # the same steps as timed: real images, precision, layout
    train_epoch(model, optimizer, recipe, data.train_images[:warm], data.train_labels[:warm], generator,
                precision=precision, info=data.info).item()
    start = time.perf_counter()
    train_epoch(model, optimizer, recipe, data.train_images, data.train_labels, generator, on_batch=on_batch,
                precision=precision, info=data.info).item()
    return time.perf_counter() - start


def torchvision_root(data_dir: Path, workdir: Path) -> Path:
    """A folder laid out as torchvision's ``MNIST`` expects (``MNIST/raw``, uncompressed)."""
    raw = workdir / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in OFFICIAL_FILES:
        source = find_file(data_dir, name)
        opener = gzip.open if source.suffix == ".gz" else open
        with opener(source, "rb") as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return workdir


def time_dataloader_epoch(arch: ArchSpec, recipe: Recipe, data_dir: Path, device: torch.device, seed: int = 0,
                          num_workers: int = 2, subset: int | None = None,
                          on_batch: Callable[[int], None] | None = None, info: DataInfo = DataInfo()) -> float:
    from torchvision import datasets, transforms

    steps = []
    if recipe.rotation:
        steps.append(transforms.RandomRotation(recipe.rotation))
    if recipe.translate:
        steps.append(transforms.RandomAffine(0, translate=(recipe.translate, recipe.translate)))
    steps += [transforms.ToTensor(), transforms.Normalize(info.mean, info.std)]
    torch.manual_seed(seed)
    model = build_model(arch).to(device)
    optimizer = make_optimizer(model, recipe)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = datasets.MNIST(str(torchvision_root(data_dir, Path(tmp))), train=True,
                                 transform=transforms.Compose(steps))
        if subset is not None:
            dataset = torch.utils.data.Subset(dataset, range(subset))
        loader = torch.utils.data.DataLoader(dataset, batch_size=recipe.batch_size, shuffle=True,
                                             num_workers=num_workers, pin_memory=device.type == "cuda")
        model.train()
        pin = device.type == "cuda"
        batches = iter(loader)
        timed = 0
        start = None
        for i, (x, y) in enumerate(batches):
            if i == WARM_UP_BATCHES:  # the workers have started and the kernels are chosen: the clock starts
                _sync(device)
                start = time.perf_counter()
            x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
            loss = F.nll_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # the classic loop reads the loss every step
            timed += len(y) if start is not None else 0
            if on_batch is not None:
                on_batch(len(y))
        _sync(device)
        if start is None:
            return 0.0
        return (time.perf_counter() - start) * len(dataset) / max(1, timed)  # the whole epoch at the timed pace


def run_bench(arch: ArchSpec, recipe: Recipe, data: Splits, data_dir: Path, device: torch.device,
              precision: str = "auto", on_batch: Callable[[str, int], None] | None = None) -> BenchResult:
    """Time one epoch through each path, engine first, on the same training images (``data``'s: all
    60,000, or the first N of them). ``on_batch(path, images)`` follows the progress."""
    def progress(path: str) -> Callable[[int], None] | None:
        return None if on_batch is None else (lambda n: on_batch(path, n))

    subset = len(data.train_labels)
    engine = time_engine_epoch(arch, recipe, data, device, precision=precision, on_batch=progress("engine"))
    dataloader = time_dataloader_epoch(arch, recipe, data_dir, device, subset=subset, on_batch=progress("dataloader"),
                                       info=data.info)
    return BenchResult(engine, dataloader, str(device), resolve_precision(precision, device))
