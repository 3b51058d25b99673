"""The evaluate stage's library for ``task: inpainting``: repairs scored per hole-area bin,
next to the classical fills, under the same fixed masks.

The mask protocol: the first ``eval_images`` val images (manifest order), each under one
evaluation mask per hole-area bin of :data:`~ganlib.data.masks.AREA_BINS`, drawn by
:func:`~ganlib.data.masks.eval_mask` from the key ``f"{sample key}/{bin label}"``, the
configured mask kind and the stage's seed: every run, method and machine scores the same holes.
Each bin's masks are drawn in :data:`EVAL_AREAS`, the bin's range with its upper bound open
(so a mask never lands in the next bin), the first bin from 1 % (a hole of a few pixels
measures nothing) and the last, "50 %+", up to 70 % (LaMa's largest masks; beyond that there
is little left to inpaint from).

Every method's composite is rounded to 8-bit levels (:func:`~ganlib.data.pixels.quantize`)
before it is scored, as the registered model returns it; the valid pixels stay exact. Per
method and bin: PSNR, SSIM and hole L1 (:func:`~ganlib.metrics.inpainting.inpainting_table`),
and FID of the bin's composites against the same images' originals, with the featurize
stage's extractor ("all": every bin's composites against the originals). FIDs over a few
hundred images are biased upwards by the sample size; they compare methods under one card,
not with published numbers.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ganlib.artifacts import load_extractor
from ganlib.config import EvalConfig, InpaintingConfig, Params
from ganlib.data.loader import iter_split
from ganlib.data.masks import AREA_BINS, eval_masks
from ganlib.data.pixels import quantize
from ganlib.errors import GanlibError
from ganlib.evaluation.baselines import BASELINES, baseline_batch
from ganlib.evaluation.common import load_task_generator
from ganlib.grid import save_grid
from ganlib.metrics.extractors import Extractor, check_compatible
from ganlib.metrics.generation import fid_to_features, mean_cov
from ganlib.metrics.inpainting import image_metrics, inpainting_table
from ganlib.metrics.protocol import protocol_card, protocol_hash
from ganlib.tasks.inpainting import TASK, inpaint

# The hole areas each bin's evaluation masks are drawn in, lo <= area < hi (see the module
# docstring).
EVAL_AREAS: dict[str, tuple[float, float]] = {
    label: (max(lo, 0.01), min(hi, 0.7)) for label, lo, hi in AREA_BINS
}
_OPEN = 1e-6  # hi - _OPEN excludes hi for images up to a million pixels
METHODS = ("ganlib", *BASELINES)  # ganlib's G, then biharmonic, mean_fill, pull_push
VALUE_RANGE = (-1.0, 1.0)  # the loader's images
SAMPLES = 64  # ganlib repairs in eval/samples.png
SHEET_ROWS = 12  # rows of eval/sheets/inpainting.png: each bin twice
MIN_EVAL_IMAGES = 2  # FID needs a covariance


def bin_masks(
    keys: Sequence[str], shape: tuple[int, int], *, kind: str, seed: int
) -> dict[str, Tensor]:
    """The evaluation masks of sample ``keys``, one per hole-area bin:
    ``{bin label: [B, 1, H, W]}``, 1 on the hole."""
    return {
        label: eval_masks(
            [f"{key}/{label}" for key in keys],
            shape,
            kind=kind,
            area_range=(lo, hi - _OPEN),
            seed=seed,
        )
        for label, (lo, hi) in EVAL_AREAS.items()
    }


def repair(method: str, G: nn.Module, real: Tensor, mask: Tensor) -> Tensor:
    """``method``'s composite of ``real`` ``[B, C, H, W]`` in [-1, 1] under ``mask``
    ``[B, 1, H, W]``, rounded to 8-bit levels as a saved image is: ``[B, C, H, W]``."""
    if method == "ganlib":
        return quantize(inpaint(G, real, mask))
    return quantize(baseline_batch(method, real, mask))


def evaluate_inpainter(
    generator_dir: Path,
    shards: str | Path,
    featurize_dir: Path,
    task_cfg: InpaintingConfig,
    eval_cfg: EvalConfig,
    *,
    seed: int,
    out: Path,
) -> dict[str, Any]:
    """Score the exported inpainting generator and the classical fills under the mask
    protocol; writes ``out/samples.png`` and ``out/sheets/inpainting.png`` and returns
    ``eval/metrics.json``.

    Returns ``table`` (``{method: {"all" | bin: {psnr, ssim, l1_hole, fid, n}}}``), ganlib's
    overall ``l1_hole``, ``psnr``, ``ssim`` and ``fid`` at the top level, ``promotion`` (the
    metric the register stage compares, lower is better), ``protocol`` (the card, with the
    mask protocol), ``protocol_hash`` and ``generator_step``.
    """
    G, gmeta, info = load_task_generator(generator_dir, shards, TASK.name, "an inpainting one")
    channels, resolution = info["channels"], info["resolution"]
    extractor, emeta = load_extractor(featurize_dir)
    check_compatible(emeta, channels=channels, resolution=resolution)

    # -- every method on every (image, bin), in batches of the val split -------------------
    scores: dict[str, dict[str, list[Tensor]]] = {m: defaultdict(list) for m in METHODS}
    feats: dict[str, dict[str, list[np.ndarray]]] = {m: defaultdict(list) for m in METHODS}
    real_feats: list[np.ndarray] = []
    shown: dict[str, dict[int, Tensor]] = defaultdict(dict)  # the sheets' images by index
    n = 0
    for batch in iter_split(shards, "val", eval_cfg.batch_size):
        take = min(len(batch["key"]), task_cfg.eval_images - n)
        real, keys = batch["image"][:take], batch["key"][:take]  # [B, C, H, W] in [-1, 1]
        real_feats.append(_features(extractor, real))
        masks = bin_masks(keys, (resolution, resolution), kind=task_cfg.mask_kind, seed=seed)
        for label, mask in masks.items():
            for method in METHODS:
                fake = repair(method, G, real, mask)  # [B, C, H, W]
                per_image = image_metrics(fake, real, mask, value_range=VALUE_RANGE)  # {k: [B]}
                for name, values in per_image.items():
                    scores[method][name].append(values)
                feats[method][label].append(_features(extractor, fake))
                if method in ("ganlib", "biharmonic"):
                    _keep_shown(shown, method, fake, mask, label, start=n)
            _keep_shown(shown, "real", real, mask, label, start=n)
        n += take
        if n >= task_cfg.eval_images:
            break
    if n < MIN_EVAL_IMAGES:
        raise GanlibError(
            f"the val split holds {n} images, fewer than {MIN_EVAL_IMAGES}; raise data.val_fraction"
        )

    # -- the table: means per bin, then FID per bin against the originals -------------------
    table = inpainting_table({m: {k: torch.cat(v) for k, v in scores[m].items()} for m in METHODS})
    mu, sigma = mean_cov(np.concatenate(real_feats))
    for method in METHODS:
        per_bin = {label: np.concatenate(f) for label, f in feats[method].items()}
        for label, f in per_bin.items():
            table[method][label]["fid"] = fid_to_features(mu, sigma, f)["fid"]
        every = np.concatenate(list(per_bin.values()))
        table[method]["all"]["fid"] = fid_to_features(mu, sigma, every)["fid"]
    for method in METHODS:  # each mask was drawn in its bin's range: it is scored in that bin
        assert all(table[method][label]["n"] == n for label in EVAL_AREAS), table[method]

    card = protocol_card(
        emeta,
        split="val",
        num_real=n,
        num_fake=n * len(EVAL_AREAS),
        resolution=resolution,
        channels=channels,
        seed=seed,
    )
    card["masks"] = {
        "kind": task_cfg.mask_kind,
        "bins": {label: list(area) for label, area in EVAL_AREAS.items()},  # [lo, hi)
        "key": "{sample key}/{bin label}",
        "seed": int(seed),
        "eval_images": n,
        "quantized": True,
    }

    out.mkdir(parents=True, exist_ok=True)
    scale = max(1, 128 // resolution)
    save_grid(_in_order(shown["ganlib"]), out / "samples.png", scale=scale)
    sheets = out / "sheets"
    shutil.rmtree(sheets, ignore_errors=True)
    _before_after_sheet(shown, sheets / "inpainting.png", scale)

    overall = table["ganlib"]["all"]
    return {
        "task": "inpainting",
        **{k: overall[k] for k in ("l1_hole", "psnr", "ssim", "fid")},
        "table": table,
        "promotion": {"metric": TASK.promotion_metric, "value": overall[TASK.promotion_metric]},
        "protocol": card,
        "protocol_hash": protocol_hash(card),
        "generator_step": gmeta["step"],
    }


def _features(extractor: Extractor, images: Tensor) -> np.ndarray:
    return extractor.features(images).cpu().numpy()  # [B, D]


def _keep_shown(
    shown: dict[str, dict[int, Tensor]],
    name: str,
    images: Tensor,
    mask: Tensor,
    label: str,
    *,
    start: int,
) -> None:
    """Keep image ``start + i`` of the batch for the sheets if ``label`` is the bin it is
    shown at: image ``j`` at bin ``j mod 6``, so that consecutive images walk through the bins."""
    labels = list(EVAL_AREAS)
    for i in range(len(images)):
        j = start + i
        if j < SAMPLES and labels[j % len(labels)] == label:
            shown[name][j] = images[i]  # [C, H, W]
            if name == "real":
                shown["hole"][j] = mask[i]  # [1, H, W]


def _in_order(images: dict[int, Tensor]) -> Tensor:
    return torch.stack([images[j] for j in sorted(images)])  # [N, C, H, W]


def _before_after_sheet(shown: dict[str, dict[int, Tensor]], path: Path, scale: int) -> None:
    """Rows of (input with its hole in white, ganlib, biharmonic, original)."""
    real, hole = _in_order(shown["real"])[:SHEET_ROWS], _in_order(shown["hole"])[:SHEET_ROWS]
    ganlib = _in_order(shown["ganlib"])[:SHEET_ROWS]
    biharmonic = _in_order(shown["biharmonic"])[:SHEET_ROWS]
    masked = real * (1 - hole) + hole  # [R, C, H, W], white on the hole
    tiles = torch.stack([masked, ganlib, biharmonic, real], dim=1)  # [R, 4, C, H, W]
    save_grid(tiles.flatten(0, 1), path, nrow=4, scale=scale)


def evaluate(
    generator_dir: Path, shards: str | Path, featurize_dir: Path, params: Params, out: Path
) -> dict[str, Any]:
    """The evaluate stage's entry (:meth:`ganlib.tasks.base.Task.evaluate`)."""
    return evaluate_inpainter(
        generator_dir,
        shards,
        featurize_dir,
        params.inpainting,
        params.eval,
        seed=params.seed,
        out=out,
    )
