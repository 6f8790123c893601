"""The trainer: trains one spec with one recipe on device-resident data. Knows nothing of Optuna.

The whole data set sits on the device as uint8 tensors. A batch is an index slice of a
device-side permutation; augmentation (per-image random rotation and translation) is one
batched ``affine_grid`` / ``grid_sample`` on the device; the loss is summed on the device and
read once per epoch, so the step loop never waits for the device. Evaluation runs in large
batches under ``torch.inference_mode``. Tensors are channels-last (1.2-1.7x faster convs on
the CPU here too); on CUDA the forward pass runs in bf16 autocast.
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
from nas.data import MEAN, STD, Splits
from nas.spec import ArchSpec, Recipe


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    val_acc: float | None  # None without a validation split
    test_acc: float | None  # None unless asked for every epoch
    seconds: float  # wall time of the epoch: training pass and its evaluation


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


# Called after each epoch; returning True stops training (e.g. a pruner's verdict).
EpochCallback = Callable[[EpochMetrics], "bool | None"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present. Asking for a GPU that is not there is a ``ValueError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is visible on this machine; use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
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
    if recipe.schedule == "step":
        return sched.StepLR(optimizer, recipe.step_size, recipe.gamma), False
    if recipe.schedule == "multistep":
        return sched.MultiStepLR(optimizer, list(recipe.milestones), recipe.gamma), False
    if recipe.schedule == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total), True
    if recipe.schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=total), True
    return None, False


@torch.inference_mode()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int | None = None) -> float:
    """Fraction of images classified correctly, counted on the device and read once."""
    model.eval()
    cuda = images.device.type == "cuda"
    batch_size = batch_size or (10_000 if cuda else 1_000)
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    for start in range(0, len(labels), batch_size):
        x = normalize(images[start:start + batch_size]).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            correct += (model(x).argmax(1) == labels[start:start + batch_size]).sum()
    return correct.item() / len(labels)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, images: torch.Tensor,
                labels: torch.Tensor, generator: torch.Generator,
                scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, per_batch: bool = False,
                on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """One pass over the training images; returns the summed loss as a device tensor (no sync)."""
    model.train()
    device = images.device
    cuda = device.type == "cuda"
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
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
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
          on_batch: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``arch`` with ``recipe`` for ``recipe.epochs`` epochs on ``data``.

    Calls ``on_epoch`` after every epoch; if it returns True, training stops there. A non-finite
    training loss also stops training, with the reason in ``TrainResult.stopped``. The test set
    is evaluated after the last epoch run (and after every epoch with ``test_every_epoch``).
    Same seed, same device and same data give the same result on the CPU.
    """
    device = torch.device(device)
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
                               scheduler, per_batch, on_batch)
        train_loss = loss_sum.item() / len(data.train_labels)
        finite = math.isfinite(train_loss)
        val_acc = accuracy(model, data.val_images, data.val_labels) if data.val_images is not None else None
        test_acc = accuracy(model, data.test_images, data.test_labels) if test_every_epoch else None
        metrics = EpochMetrics(epoch, train_loss, val_acc, test_acc, time.perf_counter() - start)
        result.epochs.append(metrics)
        asked_to_stop = on_epoch is not None and on_epoch(metrics)
        if not finite:
            result.stopped = f"training loss became {train_loss} in epoch {epoch}; try a lower learning rate"
        elif asked_to_stop:
            result.stopped = f"stopped by the caller after epoch {epoch}"
        if result.stopped:
            break
    last = result.epochs[-1]
    result.test_acc = last.test_acc if last.test_acc is not None else accuracy(model, data.test_images, data.test_labels)
    return result
