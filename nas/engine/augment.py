"""Preparing images on the device: normalization and batched random augmentation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nas.engine.data import MEAN, STD


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, S, S) or (N, C, S, S) -> float in [0, 1], (N, C, S, S)."""
    images = images.unsqueeze(1) if images.dim() == 3 else images
    return images.float().div_(255)


def normalize(images: torch.Tensor, mean: tuple[float, ...] = (MEAN,), std: tuple[float, ...] = (STD,)) -> torch.Tensor:
    """uint8 images, or float ones in [0, 1] (N, C, S, S) -> normalized with the data set's per-channel
    mean and std (MNIST's by default)."""
    if images.dtype == torch.uint8:
        images = to_unit(images)
    if len(mean) == 1:
        return (images - mean[0]) / std[0]
    shape = (1, len(mean), 1, 1)
    return (images - images.new_tensor(mean).view(shape)) / images.new_tensor(std).view(shape)


def random_affine(images: torch.Tensor, degrees: float, translate: float, generator: torch.Generator,
                  scale: float = 0.0, crop: float = 0.0) -> torch.Tensor:
    """Rotate each image by its own random angle in [-degrees, degrees], zoom it by a factor in
    [1 - scale, 1 + scale] and shift it by up to ``translate`` of its side, in one batched op. With
    ``crop``, each image is first cut to a random area in [1 - crop, 1] of it, aspect ratio 3/4 to 4/3,
    and resized back (torchvision's RandomResizedCrop, whose out-of-bounds draws it redraws and this
    clamps), then rotated (RandomResizedCrop then RandomRotation). Input and output: float
    (N, 1, H, W) in [0, 1], background 0 (the zero padding of ``grid_sample`` is black, as in
    torchvision's default fill)."""
    n, device = images.shape[0], images.device
    angle = (torch.rand(n, device=device, generator=generator) * 2 - 1) * math.radians(degrees)
    shift = (torch.rand(n, 2, device=device, generator=generator) * 2 - 1) * (2 * translate)  # grid spans [-1, 1]
    cos, sin = torch.cos(angle), torch.sin(angle)
    if scale:  # drawn only when asked, so recipes without it see the same random stream as before
        zoom = 1 + (torch.rand(n, device=device, generator=generator) * 2 - 1) * scale
        cos, sin = cos / zoom, sin / zoom  # the sampling grid shrinks as the image grows
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    if crop:  # drawn last and only when asked, as scale is
        area = 1 - torch.rand(n, device=device, generator=generator) * crop
        ratio = torch.exp((torch.rand(n, device=device, generator=generator) * 2 - 1) * math.log(4 / 3))
        side = torch.stack([(area * ratio).sqrt(), (area / ratio).sqrt()], 1).clamp(max=1)  # width, height
        centre = (torch.rand(n, 2, device=device, generator=generator) * 2 - 1) * (1 - side)
        # output -> rotated -> cropped: the crop scales each row of the rotation and moves its centre
        theta = theta * side.unsqueeze(2)
        theta[:, :, 2] += centre
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
