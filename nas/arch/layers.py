"""The torch modules the ops build that torch itself does not have, and the network around them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FlatLinear(nn.Linear):
    """``nn.Linear`` that first flattens a (N, C, 1, 1) map to (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


class SharedConv(nn.Module):
    """One conv (depthwise-separable with ``sep``: a depthwise k x k without bias, then a 1x1) applied
    ``times`` times at the same size, each use followed by ReLU and its own BatchNorm."""

    def __init__(self, channels: int, times: int, k: int, sep: bool, bias: bool, affine: bool) -> None:
        super().__init__()
        pad = k // 2
        self.conv = nn.Sequential(nn.Conv2d(channels, channels, k, padding=pad, groups=channels, bias=False),
                                  nn.Conv2d(channels, channels, 1, bias=bias)) if sep \
            else nn.Conv2d(channels, channels, k, padding=pad, bias=bias)
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels, affine=affine) for _ in range(times))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm in self.norms:
            x = norm(F.relu(self.conv(x)))
        return x


class Net(nn.Sequential):
    """The layers in order; the output is log-probabilities over the classes, shape (N, classes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(super().forward(x).flatten(1), dim=1)
