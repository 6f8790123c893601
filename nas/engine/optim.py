"""A recipe's starting weights, optimizer and learning-rate schedule."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nas.arch import Recipe

# The public 4,838-parameter net's schedule (docs/reference/public-nets.md), as fractions of the run and
# of the peak rate: from lr/10 up to lr at 2/12 of the epochs, down to lr/50 at 5/12, then to 0.
PIECEWISE_AT, PIECEWISE_RATE = (0.0, 2 / 12, 5 / 12, 1.0), (0.1, 1.0, 0.02, 0.0)


def init_weights(model: nn.Module, recipe: Recipe) -> None:
    """The recipe's starting weights: PyTorch's default (Kaiming-uniform), or Xavier-uniform conv and
    linear weights with zero biases (BatchNorm keeps 1 and 0)."""
    if recipe.init == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


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
    if recipe.schedule == "piecewise":  # set once per epoch, as published
        at = [f * recipe.epochs for f in PIECEWISE_AT]
        return sched.LambdaLR(optimizer, lambda epoch: float(np.interp(epoch, at, PIECEWISE_RATE))), False
    return None, False
