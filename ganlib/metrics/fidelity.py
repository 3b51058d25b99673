"""Fidelity metrics: how close an image is to its ground truth, per image.

For ``pred``, ``target`` ``[B, C, H, W]`` with values in ``value_range`` (``(-1, 1)`` for the
loader's images, ``(0, 1)`` or ``(0, 255)`` elsewhere), each returns ``[B]``:

- ``psnr``: peak signal-to-noise ratio in dB, the peak set by ``value_range``:
  ``10 log10((hi - lo)^2 / MSE)``, inf for identical images;
- ``ssim``: structural similarity (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5), with
  the same ``value_range``; 1 for identical images;
- ``l1``: mean absolute error as a fraction of the value range (0.1 = off by 10 % of full
  scale on average), whatever ``value_range`` is.

PSNR and SSIM come from torchmetrics, which also clamps the images to ``value_range``.
:func:`image_scores` gives all three, PSNR capped at :data:`PSNR_CAP_DB`.
"""

from __future__ import annotations

import math

from torch import Tensor
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

# Per-image PSNRs are capped at an RMSE of half an 8-bit level (the shards hold 8-bit PNGs, so a
# smaller error is below what the data can show) before they are averaged: one exact fill - a
# constant patch, which mean-fill reproduces exactly - would otherwise make a bin's mean infinite.
PSNR_CAP_DB = 20 * math.log10(2 * 255)  # 54.2 dB, whatever the value range


def psnr(pred: Tensor, target: Tensor, *, value_range: tuple[float, float]) -> Tensor:
    """PSNR in dB per image: ``[B]``."""
    return peak_signal_noise_ratio(
        pred.float(), target.float(), data_range=value_range, reduction="none", dim=(1, 2, 3)
    )


def ssim(pred: Tensor, target: Tensor, *, value_range: tuple[float, float]) -> Tensor:
    """SSIM per image: ``[B]``; H and W must be at least 11 (the window).

    In float32: the Gaussian-window convolutions run ~15x slower in float64 on CPU.
    """
    return structural_similarity_index_measure(
        pred.float(), target.float(), data_range=value_range, reduction="none"
    )


def l1(pred: Tensor, target: Tensor, *, value_range: tuple[float, float]) -> Tensor:
    """Mean ``|pred - target|`` per image over ``hi - lo``: ``[B]``."""
    lo, hi = value_range
    return (pred.double() - target.double()).abs().mean(dim=(1, 2, 3)) / (hi - lo)


def image_scores(
    pred: Tensor, target: Tensor, *, value_range: tuple[float, float]
) -> dict[str, Tensor]:
    """``{"psnr", "ssim", "l1"}``, each ``[B]`` per image, on the CPU."""
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"pred and target must be [B, C, H, W], got {pred.shape}, {target.shape}")
    out = {
        "psnr": psnr(pred, target, value_range=value_range).clamp(max=PSNR_CAP_DB),
        "ssim": ssim(pred, target, value_range=value_range),
        "l1": l1(pred, target, value_range=value_range),
    }
    return {k: v.cpu() for k, v in out.items()}
