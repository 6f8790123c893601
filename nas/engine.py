"""The trainer: trains one spec with one recipe on device-resident data. Knows nothing of Optuna.

The whole data set sits on the device as uint8 tensors. A batch is an index slice of a
device-side permutation; augmentation (per-image random rotation and translation) is one
batched ``affine_grid`` / ``grid_sample`` on the device; the loss is summed on the device and
read once per epoch, so the step loop never waits for the device. Evaluation runs in large
batches under ``torch.inference_mode``. Tensors are channels-last (1.2-1.7x faster convs on
the CPU here too). Training may run its forward pass in bf16 autocast (``precision``: on CUDA,
and on CPUs with native bf16 instructions); evaluation is always fp32, as the exported model runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas.builder import build_model
from nas.config import SettingError
from nas.data import MEAN, STD, Splits
from nas.spec import ArchSpec, Recipe


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    val_acc: float | None  # None without a validation split
    test_acc: float | None  # None unless asked for every epoch
    seconds: float  # wall time of the epoch: training pass and its evaluation
    eval_seconds: float = 0.0  # of which evaluation


@dataclass
class TrainResult:
    epochs: list[EpochMetrics] = field(default_factory=list)
    test_acc: float | None = None  # after the last epoch run
    stopped: str | None = None  # why training ended early, None if it ran every epoch
    model: nn.Module | None = None

    @property
    def val_acc(self) -> float | None:
        return self.epochs[-1].val_acc if self.epochs else None

    @property
    def epoch_seconds(self) -> list[float]:
        return [m.seconds for m in self.epochs]


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: torch.device | str, ranking_only: bool = False) -> str:
    """``auto``: bf16 on CUDA. On the CPU, fp32 where the accuracy itself counts: bf16 autocast
    cost 0.06-0.08 points of final test accuracy here (benchmarks/precision.py, two presets, three
    seeds); bf16 only for runs that just rank candidates (``ranking_only``: screening rungs), and
    only on CPUs with native bf16 (AVX-512 BF16 or AMX)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        return "bf16"
    return "bf16" if ranking_only and torch.cpu._is_avx512_bf16_supported() else "fp32"


def check_fits(arch: ArchSpec, data: Splits) -> None:
    """The spec must take the data's images (1 channel, their size) and score its 10 classes."""
    size = data.train_images.shape[-1]
    if (arch.in_channels, arch.in_size, arch.classes) != (1, size, 10):
        raise ValueError(f"the spec takes {arch.in_channels}-channel {arch.in_size}x{arch.in_size} images and scores "
                         f"{arch.classes} classes, but MNIST images are 1-channel {size}x{size} with 10 classes; "
                         f"set in_channels 1, in_size {size} and classes 10")


# Called after each epoch; returning True stops training (e.g. a pruner's verdict).
EpochCallback = Callable[[EpochMetrics], "bool | None"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present. Asking for a GPU that is not there is a ``ValueError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SettingError("device", f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError("device", f"{name}: no CUDA GPU is visible on this machine; use cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingError("device", f"{name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type != "cpu":
        raise SettingError("device", f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) or float in [0, 1] (N, 1, 28, 28) -> normalized float (N, 1, 28, 28)."""
    if images.dtype == torch.uint8:
        images = images.unsqueeze(1).float().div_(255)
    return (images - MEAN) / STD


def random_affine(images: torch.Tensor, degrees: float, translate: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each image by its own random angle in [-degrees, degrees] and shift it by up to
    ``translate`` of its side, in one batched op. Input and output: float (N, 1, H, W) in [0, 1],
    background 0 (the zero padding of ``grid_sample`` is black, as in torchvision's default fill)."""
    n, device = images.shape[0], images.device
    angle = (torch.rand(n, device=device, generator=generator) * 2 - 1) * math.radians(degrees)
    shift = (torch.rand(n, 2, device=device, generator=generator) * 2 - 1) * (2 * translate)  # grid spans [-1, 1]
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = model.parameters()
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                               weight_decay=recipe.weight_decay)
    cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int
                   ) -> tuple[torch.optim.lr_scheduler.LRScheduler | None, bool]:
    """The recipe's schedule, and whether it steps per batch (True) or per epoch (False)."""
    total = recipe.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler
    # Step and multistep decay at batch positions, so fractional epochs (compressed recipes) work;
    # at whole epochs this is exactly the per-epoch StepLR / MultiStepLR.
    if recipe.schedule == "step":
        return sched.StepLR(optimizer, max(1, round(recipe.step_size * steps_per_epoch)), recipe.gamma), True
    if recipe.schedule == "multistep":
        at = [max(1, round(m * steps_per_epoch)) for m in recipe.milestones]  # repeats decay twice
        return sched.MultiStepLR(optimizer, at, recipe.gamma), True
    if recipe.schedule == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total), True
    if recipe.schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=total), True
    return None, False


@torch.inference_mode()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int | None = None) -> float:
    """Fraction of images classified correctly, counted on the device and read once."""
    model.eval()
    batch_size = batch_size or (10_000 if images.device.type == "cuda" else 1_000)
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    for start in range(0, len(labels), batch_size):
        x = normalize(images[start:start + batch_size]).contiguous(memory_format=torch.channels_last)
        correct += (model(x).argmax(1) == labels[start:start + batch_size]).sum()
    return correct.item() / len(labels)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, images: torch.Tensor,
                labels: torch.Tensor, generator: torch.Generator,
                scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, per_batch: bool = False,
                on_batch: Callable[[int], None] | None = None, bf16: bool = False) -> torch.Tensor:
    """One pass over the training images; returns the summed loss as a device tensor (no sync)."""
    model.train()
    device = images.device
    augment = recipe.rotation > 0 or recipe.translate > 0
    order = torch.randperm(len(labels), device=device, generator=generator)
    loss_sum = torch.zeros((), device=device)
    for start in range(0, len(labels), recipe.batch_size):
        idx = order[start:start + recipe.batch_size]
        x = images[idx].unsqueeze(1).float().div_(255)
        if augment:
            x = random_affine(x, recipe.rotation, recipe.translate, generator)
        x = normalize(x).contiguous(memory_format=torch.channels_last)
        y = labels[idx]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            # The model outputs log-probabilities; cross_entropy's log_softmax leaves them unchanged,
            # so this is NLL loss, with label smoothing when the recipe asks for it.
            loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None and per_batch:
            scheduler.step()
        loss_sum += loss.detach() * len(idx)
        if on_batch is not None:
            on_batch(len(idx))
    if scheduler is not None and not per_batch:
        scheduler.step()
    return loss_sum


def train(arch: ArchSpec, recipe: Recipe, data: Splits, device: torch.device | str = "cpu", seed: int = 0,
          on_epoch: EpochCallback | None = None, test_every_epoch: bool = False,
          on_batch: Callable[[int], None] | None = None, precision: str = "auto",
          val_every_epoch: bool = True, evaluate_test: bool = True, ranking_only: bool = False) -> TrainResult:
    """Train ``arch`` with ``recipe`` for ``recipe.epochs`` epochs on ``data``.

    Calls ``on_epoch`` after every epoch; if it returns True, training stops there. A non-finite
    training loss also stops training, with the reason in ``TrainResult.stopped``. The test set
    is evaluated after the last epoch run (and after every epoch with ``test_every_epoch``); the
    validation split after every epoch, or with ``val_every_epoch=False`` after the last only;
    ``evaluate_test=False`` leaves the test set alone (screening runs never report it).
    Same seed, same device, same precision and same data give the same result on the CPU.
    """
    check_fits(arch, data)
    device = torch.device(device)
    bf16 = resolve_precision(precision, device, ranking_only) == "bf16"
    data = data.to(device)  # no copy when already there
    torch.manual_seed(seed)  # weights and dropout masks
    generator = torch.Generator(device).manual_seed(seed)  # order and augmentation
    model = build_model(arch).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    steps = math.ceil(len(data.train_labels) / recipe.batch_size)
    scheduler, per_batch = make_scheduler(optimizer, recipe, steps)
    result = TrainResult(model=model)
    for epoch in range(1, recipe.epochs + 1):
        start = time.perf_counter()
        loss_sum = train_epoch(model, optimizer, recipe, data.train_images, data.train_labels, generator,
                               scheduler, per_batch, on_batch, bf16)
        train_loss = loss_sum.item() / len(data.train_labels)
        finite = math.isfinite(train_loss)
        trained = time.perf_counter()
        validate = data.val_images is not None and (val_every_epoch or epoch == recipe.epochs)
        val_acc = accuracy(model, data.val_images, data.val_labels) if validate else None
        test_acc = accuracy(model, data.test_images, data.test_labels) if test_every_epoch else None
        end = time.perf_counter()
        metrics = EpochMetrics(epoch, train_loss, val_acc, test_acc, end - start, end - trained)
        result.epochs.append(metrics)
        asked_to_stop = on_epoch is not None and on_epoch(metrics)
        if not finite:
            result.stopped = f"training loss became {train_loss} in epoch {epoch}; try a lower learning rate"
        elif asked_to_stop:
            result.stopped = f"stopped by the caller after epoch {epoch}"
        if result.stopped:
            break
    last = result.epochs[-1]
    if last.test_acc is not None:
        result.test_acc = last.test_acc
    elif evaluate_test:
        result.test_acc = accuracy(model, data.test_images, data.test_labels)
    return result


def time_steps(candidate, data: Splits, device: torch.device | str = "cpu", steps: int = 8,
               precision: str = "auto") -> tuple[float, float]:
    """A quick speed probe (about a second): microseconds per training image and per evaluated image."""
    device = torch.device(device)
    recipe = candidate.recipe
    model = build_model(candidate.arch).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    generator = torch.Generator(device).manual_seed(0)
    n = min(len(data.train_labels), recipe.batch_size * (steps + 2))
    images, labels = data.train_images[:n], data.train_labels[:n]
    bf16 = resolve_precision(precision, device) == "bf16"
    train_epoch(model, optimizer, recipe, images[: 2 * recipe.batch_size], labels[: 2 * recipe.batch_size],
                generator, bf16=bf16).item()  # warm-up
    start = time.perf_counter()
    train_epoch(model, optimizer, recipe, images, labels, generator, bf16=bf16).item()
    train_us = 1e6 * (time.perf_counter() - start) / n
    start = time.perf_counter()
    accuracy(model, images, labels)
    return train_us, 1e6 * (time.perf_counter() - start) / n
