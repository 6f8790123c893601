"""The torch modules the ops build that torch itself does not have, and the network around them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FlatLinear(nn.Linear):
    """``nn.Linear`` that first flattens a (N, C, 1, 1) map to (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


class Net(nn.Sequential):
    """The layers in order; the output is log-probabilities over the classes, shape (N, classes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(super().forward(x).flatten(1), dim=1)
