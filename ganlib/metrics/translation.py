"""Translation metrics: distance to the ground truth, cycle error, and the identity baseline.

Per image (``pred``, ``target`` ``[B, C, H, W]`` with values in ``value_range``):

- ``psnr`` and ``ssim``: as for inpainting (:func:`ganlib.metrics.inpainting.psnr` /
  :func:`~ganlib.metrics.inpainting.ssim`, torchmetrics with ``data_range = value_range``),
  PSNR capped at :data:`~ganlib.metrics.inpainting.PSNR_CAP_DB` so that one exact image
  (a flat patch the style leaves as it is) cannot make a mean infinite;
- ``l1``: mean absolute error as a fraction of the value range (0.1 = off by 10 % of full
  scale on average), whatever ``value_range`` is.

:func:`translation_metrics` runs a translator over evaluation batches and averages:
``AtoB/*`` scores ``G_AB(a)`` against ``b``, ``BtoA/*`` ``G_BA(b)`` against ``a`` (where the
batches hold true pairs); ``identity/*`` scores the input itself as the output, the baseline a
translator must beat (the three metrics are symmetric, so it serves both directions);
``cycle/A`` is the ``l1`` of ``G_BA(G_AB(a))`` to ``a`` and ``cycle/B`` the other way round.
FID to the target domain comes from :mod:`ganlib.metrics.generation` on the translated images
(``on_batch`` hands them over).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ganlib.metrics.inpainting import PSNR_CAP_DB, psnr, ssim
from ganlib.tasks.translation import translate

VALUE_RANGE = (-1.0, 1.0)  # the loader's images


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


@torch.no_grad()
def translation_metrics(
    batches: Iterable[dict[str, Any]],
    G_AB: nn.Module,
    G_BA: nn.Module | None = None,
    *,
    value_range: tuple[float, float] = VALUE_RANGE,
    on_batch: Callable[[dict[str, Tensor]], None] | None = None,
) -> dict[str, float]:
    """Means over every image of ``batches`` (loader batches with ``"a"`` and/or ``"b"``).

    ``G_AB`` (and ``G_BA`` for CycleGAN) are used as given: pass them in eval mode, on the
    device the batches should go to. A batch with both ``"a"`` and ``"b"`` is a batch of
    true pairs (pix2pix data, or the hidden ground truth of an unpaired demo); one with a
    single domain (``iter_split(..., fields=("a.png",))`` of unpaired shards) gives the cycle
    error only. ``on_batch`` receives each batch's images on the CPU, ``{"a", "fake_b",
    "b", "fake_a"}`` as far as they exist, e.g. to collect features for FID.

    Returns ``{"AtoB/psnr", "AtoB/ssim", "AtoB/l1", "BtoA/...", "identity/...", "cycle/A",
    "cycle/B"}`` as far as the batches and models allow, plus the image counts ``n/pairs``,
    ``n/A`` and ``n/B``.
    """
    device = next(G_AB.parameters()).device
    values: dict[str, list[Tensor]] = defaultdict(list)  # name -> per-image values, [B] each
    counts = {"n/pairs": 0, "n/A": 0, "n/B": 0}

    def add(prefix: str, scores: dict[str, Tensor]) -> None:
        for name, v in scores.items():
            values[f"{prefix}/{name}"].append(v)

    for batch in batches:
        a, b = batch.get("a"), batch.get("b")
        a = None if a is None else a.to(device)
        b = None if b is None else b.to(device)
        images: dict[str, Tensor] = {}
        if a is not None:
            counts["n/A"] += a.shape[0]
            images["a"] = a
            images["fake_b"] = fake_b = translate(G_AB, a)  # [B, C, H, W]
            if G_BA is not None:
                rec_a = translate(G_BA, fake_b)
                values["cycle/A"].append(l1(rec_a, a, value_range=value_range).cpu())
        if b is not None:
            counts["n/B"] += b.shape[0]
            images["b"] = b
            if G_BA is not None:
                images["fake_a"] = fake_a = translate(G_BA, b)
                rec_b = translate(G_AB, fake_a)
                values["cycle/B"].append(l1(rec_b, b, value_range=value_range).cpu())
        if a is not None and b is not None:
            counts["n/pairs"] += a.shape[0]
            add("identity", image_scores(a, b, value_range=value_range))
            add("AtoB", image_scores(images["fake_b"], b, value_range=value_range))
            if G_BA is not None:
                add("BtoA", image_scores(images["fake_a"], a, value_range=value_range))
        if on_batch is not None:
            on_batch({k: v.cpu() for k, v in images.items()})
    means = {name: torch.cat(v).mean().item() for name, v in sorted(values.items())}
    return means | {k: float(n) for k, n in counts.items()}
