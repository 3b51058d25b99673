"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same random, differentiable transforms are applied to real *and* fake images before D
(the caller does both), so D cannot memorise a small training set, while G still gets
gradients through the augmentation. Images are ``[N, C, H, W]`` in [-1, 1]; every sample
draws its own parameters from the global torch RNG on the images' device, so saving and
restoring RNG states makes a resumed run repeat the same augmentations.
"""

from __future__ import annotations

import torch
from torch import Tensor


def brightness(x: Tensor) -> Tensor:
    """Add one offset ~ U(-0.5, 0.5) per image."""
    return x + (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def saturation(x: Tensor) -> Tensor:
    """Scale each pixel's distance from its channel mean by a factor ~ U(0, 2) per image.

    On 1-channel images every pixel equals its channel mean, so this is exactly the identity.
    """
    mean = x.mean(dim=1, keepdim=True)  # [N, 1, H, W]
    factor = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * 2
    return (x - mean) * factor + mean


def contrast(x: Tensor) -> Tensor:
    """Scale each image's distance from its overall mean by a factor ~ U(0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [N, 1, 1, 1]
    factor = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5
    return (x - mean) * factor + mean


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ``ratio`` of its size in x and y, filling with zeros."""
    n, _, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), device=x.device)
    # Output pixel (i, j) reads input pixel (i - dy, j - dx). Indices are taken in a copy
    # padded by one zero pixel on every side; clamping sends every out-of-image read to
    # that border, so uncovered pixels become 0 with one gather and no per-sample loop.
    rows = (torch.arange(h, device=x.device)[None, :, None] - dy + 1).clamp(0, h + 1)  # [N, H, 1]
    cols = (torch.arange(w, device=x.device)[None, None, :] - dx + 1).clamp(0, w + 1)  # [N, 1, W]
    batch = torch.arange(n, device=x.device)[:, None, None]  # [N, 1, 1]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # [N, H+2, W+2, C]
    return padded[batch, rows, cols].permute(0, 3, 1, 2)  # [N, C, H, W]


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Zero one square of ``ratio`` of the image size per image (DeVries & Taylor 2017).

    The square's centre is uniform over the pixels, so the square may be clipped by the border.
    """
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (n, 1, 1), device=x.device) - size_y // 2  # [N, 1, 1]
    left = torch.randint(0, w, (n, 1, 1), device=x.device) - size_x // 2  # [N, 1, 1]
    rows = torch.arange(h, device=x.device)[None, :, None]  # [1, H, 1]
    cols = torch.arange(w, device=x.device)[None, None, :]  # [1, 1, W]
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return x * (~inside)[:, None].to(x.dtype)  # mask: [N, 1, H, W]


def xflip(x: Tensor) -> Tensor:
    """Mirror every image left to right (applied per sample with the pipeline's probability;
    alone, at probability 1, it is a plain flip)."""
    return x.flip(3)


POLICIES = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
    "xflip": (xflip,),
}


def diff_augment(x: Tensor, policy: str = "color,translation,cutout", p: float = 1.0) -> Tensor:
    """Apply the comma-separated ``policy`` (names from ``POLICIES``) in order; "" = identity.

    Each transform is applied to each sample with probability ``p`` (ADA's fixed-probability
    pipeline, R3GAN's schedule ramps it from 0); at ``p = 1`` every sample gets every transform
    and no extra random numbers are drawn, as before ``p`` existed. ``x``: ``[N, C, H, W]``;
    returns the same shape, differentiable with respect to ``x``.
    """
    names = [name.strip() for name in policy.split(",") if name.strip()]
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(
            f"unknown DiffAugment policy {', '.join(unknown)}; valid: {', '.join(POLICIES)}"
        )
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"augmentation probability must be in [0, 1], got {p}")
    if p == 0.0:
        return x
    for name in names:
        for transform in POLICIES[name]:
            if p == 1.0:
                x = transform(x)
                continue
            chosen = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p  # [N, 1, 1, 1]
            x = torch.where(chosen, transform(x), x)
    return x
