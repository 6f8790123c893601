"""The trainer: trains one spec with one recipe on device-resident data. Knows nothing of Optuna.

The whole data set sits on the device as uint8 tensors. A batch is an index slice of a
device-side permutation; augmentation (per-image random rotation, zoom and translation) is one
batched ``affine_grid`` / ``grid_sample`` on the device; the loss is summed on the device and
read once per epoch, so the step loop never waits for the device. Evaluation runs in large
batches under ``torch.inference_mode``. Tensors are channels-last (1.2-1.7x faster convs on
the CPU here too). Training may run its forward pass in bf16 or fp16 autocast where the precision
rule allows it (:mod:`nas.engine.device`); evaluation is always fp32, as the exported model runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas.engine.augment import normalize, random_affine, to_unit
from nas.engine.data import DataInfo
from nas.engine.splits import Splits
from nas.engine.device import eval_batch, prepare_device, resolve_precision
from nas.engine.optim import init_weights, make_optimizer, make_scheduler
from nas.arch import ArchSpec, Recipe
from nas.arch.builder import build_model


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


def check_fits(arch: ArchSpec, data: Splits) -> None:
    """The spec must take the data's images (their channels and size) and score its classes."""
    channels, size, classes = data.info.shape
    if (arch.in_channels, arch.in_size, arch.classes) != (channels, size, classes):
        name = "MNIST" if data.info.name == "mnist" else data.info.name
        raise ValueError(f"the spec takes {arch.in_channels}-channel {arch.in_size}x{arch.in_size} images and scores "
                         f"{arch.classes} classes, but {name} images are {channels}-channel {size}x{size} with "
                         f"{classes} classes; set in_channels {channels}, in_size {size} and classes {classes}")


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}  # precisions that run the forward pass in autocast

# Called after each epoch; returning True stops training (e.g. a pruner's verdict).
EpochCallback = Callable[[EpochMetrics], "bool | None"]


@torch.inference_mode()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int | None = None,
             info: DataInfo = DataInfo(), between: Callable[[], None] | None = None) -> float:
    """Fraction of images classified correctly, counted on the device and read once; ``between`` runs
    before each batch (a caller's chance to stop: a signal need not wait for the whole evaluation)."""
    model.eval()
    batch_size = batch_size or eval_batch(images.device)
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    for start in range(0, len(labels), batch_size):
        if between is not None:
            between()
        x = normalize(images[start:start + batch_size], info.mean, info.std).contiguous(memory_format=torch.channels_last)
        correct += (model(x).argmax(1) == labels[start:start + batch_size]).sum()
    return correct.item() / len(labels)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, images: torch.Tensor,
                labels: torch.Tensor, generator: torch.Generator,
                scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, per_batch: bool = False,
                on_batch: Callable[[int], None] | None = None, precision: str = "fp32",
                scaler: torch.amp.GradScaler | None = None, info: DataInfo = DataInfo()) -> torch.Tensor:
    """One pass over the training images; returns the summed loss as a device tensor (no sync).
    ``precision`` bf16 or fp16 runs the forward pass in autocast (fp16 with ``scaler``'s loss scaling)."""
    model.train()
    device = images.device
    augment = recipe.rotation > 0 or recipe.translate > 0 or recipe.scale > 0 or recipe.crop > 0
    order = torch.randperm(len(labels), device=device, generator=generator)
    loss_sum = torch.zeros((), device=device)
    for start in range(0, len(labels), recipe.batch_size):
        idx = order[start:start + recipe.batch_size]
        x = to_unit(images[idx])
        if augment:
            x = random_affine(x, recipe.rotation, recipe.translate, generator, recipe.scale, recipe.crop)
        x = normalize(x, info.mean, info.std).contiguous(memory_format=torch.channels_last)
        y = labels[idx]
        with torch.autocast(device.type, dtype=AUTOCAST.get(precision, torch.float32), enabled=precision in AUTOCAST):
            # The model outputs log-probabilities; cross_entropy's log_softmax leaves them unchanged,
            # so this is NLL loss, with label smoothing when the recipe asks for it.
            loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
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
          val_every_epoch: bool = True, evaluate_test: bool = True, ranking_only: bool = False,
          between: Callable[[], None] | None = None) -> TrainResult:
    """Train ``arch`` with ``recipe`` for ``recipe.epochs`` epochs on ``data``.

    Calls ``on_epoch`` after every epoch; if it returns True, training stops there. A non-finite
    training loss also stops training, with the reason in ``TrainResult.stopped``. The test set
    is evaluated after the last epoch run (and after every epoch with ``test_every_epoch``); the
    validation split after every epoch, or with ``val_every_epoch=False`` after the last only;
    ``evaluate_test=False`` leaves the test set alone (screening runs never report it). ``between``
    runs before every evaluation batch (``on_batch`` after every training batch).
    Same seed, same device, same precision and same data give the same result on the CPU.
    """
    check_fits(arch, data)
    device = torch.device(device)
    prepare_device(device)
    precision = resolve_precision(precision, device, ranking_only)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    data = data.to(device)  # no copy when already there
    torch.manual_seed(seed)  # weights and dropout masks
    generator = torch.Generator(device).manual_seed(seed)  # order and augmentation
    model = build_model(arch)
    init_weights(model, recipe)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    steps = math.ceil(len(data.train_labels) / recipe.batch_size)
    scheduler, per_batch = make_scheduler(optimizer, recipe, steps)
    result = TrainResult(model=model)
    for epoch in range(1, recipe.epochs + 1):
        start = time.perf_counter()
        loss_sum = train_epoch(model, optimizer, recipe, data.train_images, data.train_labels, generator,
                               scheduler, per_batch, on_batch, precision, scaler, data.info)
        train_loss = loss_sum.item() / len(data.train_labels)
        finite = math.isfinite(train_loss)
        trained = time.perf_counter()
        validate = data.val_images is not None and (val_every_epoch or epoch == recipe.epochs)
        val_acc = accuracy(model, data.val_images, data.val_labels, info=data.info, between=between) \
            if validate else None
        test_acc = accuracy(model, data.test_images, data.test_labels, info=data.info, between=between) \
            if test_every_epoch else None
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
        result.test_acc = accuracy(model, data.test_images, data.test_labels, info=data.info, between=between)
    return result


def time_steps(candidate, data: Splits, device: torch.device | str = "cpu", steps: int = 3,
               precision: str = "auto") -> tuple[float, float]:
    """A quick speed probe (a second or two): microseconds per training image and per evaluated image,
    timed on ``steps`` batches after one warm-up batch (which pays the first call's set-up costs)."""
    device = torch.device(device)
    recipe = candidate.recipe
    model = build_model(candidate.arch).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    generator = torch.Generator(device).manual_seed(0)
    n = min(len(data.train_labels), recipe.batch_size * steps)
    images, labels = data.train_images[:n], data.train_labels[:n]
    precision = resolve_precision(precision, device)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    train_epoch(model, optimizer, recipe, images[: recipe.batch_size], labels[: recipe.batch_size],
                generator, precision=precision, scaler=scaler, info=data.info).item()  # warm-up
    start = time.perf_counter()
    train_epoch(model, optimizer, recipe, images, labels, generator, precision=precision, scaler=scaler,
                info=data.info).item()
    train_us = 1e6 * (time.perf_counter() - start) / n
    start = time.perf_counter()
    accuracy(model, images, labels, info=data.info)
    return train_us, 1e6 * (time.perf_counter() - start) / n
