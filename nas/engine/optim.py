"""A recipe's optimizer and learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn

from nas.arch import Recipe

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
