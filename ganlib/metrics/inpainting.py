"""Inpainting metrics, per image so they can be grouped by hole area, and classical baselines.

Per image (``pred``, ``target`` ``[B, C, H, W]`` with values in ``value_range``, ``mask``
``[B, 1, H, W]``, 1 on the hole):

- ``psnr``: peak signal-to-noise ratio of the whole composited image, in dB, with the peak
  set by ``value_range`` (``(-1, 1)`` for the loader's images, ``(0, 1)`` or ``(0, 255)``
  elsewhere): ``10 log10((hi - lo)^2 / MSE)``, inf for identical images.
- ``ssim``: structural similarity (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5) of the
  whole image, with the same ``value_range``; 1 for identical images.
- ``l1_hole``: mean absolute error over the hole's elements, as a fraction of the value range
  (0.1 = off by 10 % of full scale on average), whatever ``value_range`` is.

PSNR and SSIM score the whole composite, as inpainting papers do; its valid pixels are exact,
so they measure the fill in its context, and are diluted by small holes: compare them within a
hole-area bin (:func:`inpainting_table`). Both come from torchmetrics, which also clamps the
images to ``value_range``.

Baselines, over numpy images ``[H, W]`` or ``[H, W, C]`` (uint8 or float) and a bool mask
``[H, W]`` (True = hole): :func:`biharmonic` (scikit-image's ``inpaint_biharmonic``, Damelin &
Hoang 2018), :func:`mean_fill`, and :func:`pull_push_fill` (G's starting point). All return
the input's dtype with the valid pixels unchanged, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from skimage.restoration import inpaint_biharmonic
from torch import Tensor
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from ganlib.data.masks import AREA_BINS, area_bin
from ganlib.tasks.inpainting import pull_push

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


def l1_hole(
    pred: Tensor, target: Tensor, mask: Tensor, *, value_range: tuple[float, float]
) -> Tensor:
    """Mean ``|pred - target|`` over each image's hole elements, over ``hi - lo``: ``[B]``
    (NaN for an image without a hole)."""
    lo, hi = value_range
    err = (pred.double() - target.double()).abs() * mask  # [B, C, H, W], 0 off the hole
    area = mask.double().sum(dim=(1, 2, 3)) * pred.shape[1]  # [B] hole elements
    return err.sum(dim=(1, 2, 3)) / area / (hi - lo)


def image_metrics(
    pred: Tensor, target: Tensor, mask: Tensor, *, value_range: tuple[float, float]
) -> dict[str, Tensor]:
    """Every metric per image, plus each image's ``hole_fraction``: ``{name: [B]}`` on the CPU.

    ``pred`` should be the composite (valid pixels copied from ``target``), as every method in
    the table produces it.
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"pred and target must be [B, C, H, W], got {pred.shape}, {target.shape}")
    if mask.shape != (pred.shape[0], 1, *pred.shape[2:]):
        raise ValueError(f"mask must be [B, 1, H, W], got {list(mask.shape)}")
    out = {
        "psnr": psnr(pred, target, value_range=value_range),
        "ssim": ssim(pred, target, value_range=value_range),
        "l1_hole": l1_hole(pred, target, mask, value_range=value_range),
        "hole_fraction": mask.double().mean(dim=(1, 2, 3)),
    }
    return {k: v.cpu() for k, v in out.items()}


def inpainting_table(
    results: Mapping[str, Mapping[str, Sequence[float] | np.ndarray | Tensor]],
) -> dict[str, dict[str, dict[str, float]]]:
    """Means per method, overall and per hole-area bin.

    ``results``: ``{method: {metric: [N] per-image values, ..., "hole_fraction": [N]}}``, e.g.
    :func:`image_metrics` concatenated over the evaluation set. Returns
    ``{method: {"all" | bin label: {metric: mean, ..., "n": count}}}``, bins in
    :data:`~ganlib.data.masks.AREA_BINS` order; a bin without images is left out. PSNRs are
    capped at :data:`PSNR_CAP_DB` first; NaNs (``l1_hole`` of an image without a hole) are
    left out of the means.
    """
    table = {}
    for method, values in results.items():
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
        if "psnr" in arrays:
            arrays["psnr"] = np.minimum(arrays["psnr"], PSNR_CAP_DB)
        fractions = arrays.pop("hole_fraction")
        bins = np.array([area_bin(float(f)) for f in fractions])
        rows = {"all": np.ones(len(fractions), dtype=bool)}
        rows.update({label: bins == label for label, _, _ in AREA_BINS})
        table[method] = {
            name: {k: _mean(v[rows_in]) for k, v in arrays.items()} | {"n": int(rows_in.sum())}
            for name, rows_in in rows.items()
            if rows_in.any()
        }
    return table


def _mean(values: np.ndarray) -> float:
    """The mean of the defined values (``l1_hole`` is NaN for an image without a hole)."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def _check_pair(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mask as bool ``[H, W]``; refuses a mismatched or all-hole mask."""
    mask = np.asarray(mask, dtype=bool)
    if image.ndim not in (2, 3) or mask.shape != image.shape[:2]:
        raise ValueError(
            f"image must be [H, W] or [H, W, C] and mask [H, W]; got {image.shape}, {mask.shape}"
        )
    if mask.all():
        raise ValueError("the mask covers the whole image: nothing to inpaint from")
    return mask


def _as_input_dtype(filled: np.ndarray, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``filled`` in ``image``'s dtype (rounded for integers), valid pixels copied from it."""
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        filled = np.clip(np.rint(filled), info.min, info.max)
    hole = mask if image.ndim == 2 else mask[..., None]
    return np.where(hole, filled.astype(image.dtype), image)


def biharmonic(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill the hole with the smooth (biharmonic) continuation of its surroundings.

    About 15 ms for a 64x64 RGB image with a 30 % box hole on one core, 20-40 ms for strokes
    (longer borders): 2,400 fills of 64x64 images take 25-30 s.
    """
    mask = _check_pair(image, mask)
    if not mask.any():
        return image.copy()
    channel_axis = -1 if image.ndim == 3 else None
    filled = inpaint_biharmonic(image.astype(np.float64), mask, channel_axis=channel_axis)
    return _as_input_dtype(filled, image, mask)


def mean_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill the hole with the mean of the valid pixels, per channel."""
    mask = _check_pair(image, mask)
    mean = image[~mask].astype(np.float64).mean(axis=0)  # [C] or scalar
    filled = np.broadcast_to(mean, image.shape)
    return _as_input_dtype(filled, image, mask)


def pull_push_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill the hole by pull-push (:func:`ganlib.tasks.inpainting.pull_push`), the fill that
    ganlib's G starts from: the table shows what G adds to it."""
    mask = _check_pair(image, mask)
    x = torch.from_numpy(image.astype(np.float64))
    x = x[None, None] if image.ndim == 2 else x.permute(2, 0, 1)[None]  # [1, C, H, W]
    hole = torch.from_numpy(mask.astype(np.float64))[None, None]  # [1, 1, H, W]
    filled = pull_push(x, hole)[0]  # [C, H, W]
    filled = filled[0] if image.ndim == 2 else filled.permute(1, 2, 0)
    return _as_input_dtype(filled.numpy(), image, mask)


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "biharmonic": biharmonic,
    "mean_fill": mean_fill,
    "pull_push": pull_push_fill,
}


def baseline_batch(name: str, image: Tensor, mask: Tensor) -> Tensor:
    """Run the baseline ``name`` of :data:`BASELINES` on a batch: ``image`` ``[B, C, H, W]``
    (any value range), ``mask`` ``[B, 1, H, W]`` -> ``[B, C, H, W]`` like ``image``."""
    if mask.shape != (image.shape[0], 1, *image.shape[2:]):
        raise ValueError(f"mask must be [B, 1, H, W], got {list(mask.shape)}")
    fill = BASELINES[name]
    images = image.detach().cpu().permute(0, 2, 3, 1).numpy()  # [B, H, W, C]
    holes = mask.detach().cpu()[:, 0].numpy() > 0.5  # [B, H, W]
    out = np.stack([fill(x, m) for x, m in zip(images, holes, strict=True)])
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(image.device)
