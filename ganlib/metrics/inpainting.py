"""Inpainting metrics, per image so they can be grouped by hole area.

Per image (``pred``, ``target`` ``[B, C, H, W]`` with values in ``value_range``, ``mask``
``[B, 1, H, W]``, 1 on the hole): PSNR and SSIM of the whole composited image
(:mod:`ganlib.metrics.fidelity`), and ``l1_hole``, the mean absolute error over the hole's
elements as a fraction of the value range (0.1 = off by 10 % of full scale on average),
whatever ``value_range`` is.

PSNR and SSIM score the whole composite, as inpainting papers do; its valid pixels are exact,
so they measure the fill in its context, and are diluted by small holes: compare them within a
hole-area bin (:func:`inpainting_table`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from torch import Tensor

from ganlib.data.masks import AREA_BINS, area_bin
from ganlib.metrics.fidelity import PSNR_CAP_DB, psnr, ssim


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
