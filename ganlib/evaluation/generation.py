"""The evaluate stage's library: measure a generator under a protocol card.

The extractor and its reference features come from the featurize stage
(:mod:`ganlib.featurize`). ``evaluate_generator`` measures a generator against that
reference under a protocol card, next to the real-vs-real floor: the val split measured
against the same reference, with as many images as the generator gets, so that both numbers
have the same card. See :mod:`ganlib.metrics.extractors` for the extractors and
:mod:`ganlib.metrics.protocol` for the card.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganlib.artifacts import load_extractor
from ganlib.config import EvalConfig, Params
from ganlib.data.loader import iter_split
from ganlib.data.pixels import batch_for, from_uint8, to_uint8
from ganlib.errors import GanlibError
from ganlib.evaluation.common import load_task_generator
from ganlib.grid import save_grid
from ganlib.metrics.extractors import check_compatible
from ganlib.metrics.generation import class_coverage, fid_to_features, generation_metrics
from ganlib.metrics.protocol import protocol_card, protocol_hash
from ganlib.metrics.reference import REFERENCE, Reference, compute_outputs, load_reference
from ganlib.sampling import generate
from ganlib.tasks.generation import TASK

SHEET_COLUMNS = 10  # images per class row in eval/sheets/classes.png
NEAREST_PAIRS = 16  # generated images shown next to their nearest real val image
MIN_EVAL_IMAGES = 20  # fewer real val images than this make every metric noise


def evaluate_generator(
    generator_dir: Path,
    shards: str | Path,
    featurize_dir: Path,
    cfg: EvalConfig,
    *,
    seed: int,
    out: Path,
) -> dict[str, Any]:
    """Measure the exported generator; writes ``out/samples.png`` and ``out/sheets/`` and
    returns ``eval/metrics.json``: the generator's metrics at the top level, ``promotion``
    (the FID, for the registry), ``floor`` (real
    val images in place of generated ones), ``protocol`` (the card) and ``protocol_hash``."""
    G, gmeta, info = load_task_generator(generator_dir, shards, TASK.name, "a generation one")
    mcfg = gmeta["model_config"]
    extractor, emeta = load_extractor(featurize_dir)
    check_compatible(emeta, channels=info["channels"], resolution=info["resolution"])
    ref = load_reference(featurize_dir / REFERENCE)

    # -- real side of the floor: the val split, subset to n images ------------------------
    # Images are held as stored (uint8, a quarter of floats: 2,000 of 1024 px are 6 GB) and
    # go through the extractor in batches of bounded pixels.
    step = batch_for(info["resolution"], cfg.batch_size)
    val = np.concatenate([to_uint8(b) for b in images_of(shards, "val", step)])  # [V, H, W, C]
    if len(val) < MIN_EVAL_IMAGES:
        raise GanlibError(
            f"the val split holds {len(val)} images, fewer than {MIN_EVAL_IMAGES}; "
            "raise data.val_fraction"
        )
    n = min(cfg.num_fake, len(val))
    if cfg.k >= n:  # before any measurement: precision/recall need k neighbours per image
        raise GanlibError(
            f"eval.k: {cfg.k} neighbours need more than the {n} images measured (eval.num_fake, "
            "clamped to the val split); lower eval.k"
        )
    if n < len(val):
        keep = np.sort(np.random.default_rng(seed).choice(len(val), n, replace=False))
        val = val[keep]
    # -- generated side: seeds seed*10^6 + i, as a user sampling the registered model gets ---
    seeds = [seed * 1_000_000 + i for i in range(n)]
    fake = generate(G, mcfg, seeds)  # uint8 [n, H, W, C]

    def batches(images: np.ndarray) -> Iterator[torch.Tensor]:
        return (from_uint8(images[i : i + step]) for i in range(0, len(images), step))

    fake_f, fake_p = compute_outputs(extractor, batches(fake))
    val_f, val_p = compute_outputs(extractor, batches(val))
    result = _metrics(ref, fake_f, fake_p, cfg, seed)
    floor = _metrics(ref, val_f, val_p, cfg, seed)
    card = protocol_card(
        emeta,
        split="train",
        num_real=ref.num_samples,
        num_fake=n,
        resolution=info["resolution"],
        channels=info["channels"],
        seed=seed,
    )

    out.mkdir(parents=True, exist_ok=True)
    # The grid's 64 seeds are the first seeds measured: reuse those images when there are 64.
    grid_seeds = [seed * 1_000_000 + i for i in range(64)]
    grid = fake[:64] if n >= 64 else generate(G, mcfg, grid_seeds)
    save_grid(from_uint8(grid), out / "samples.png", scale=_scale(info["resolution"]))
    sheets = out / "sheets"
    shutil.rmtree(sheets, ignore_errors=True)
    sheets.mkdir()
    if fake_p is not None:
        _class_sheet(fake, fake_p, sheets / "classes.png", info["resolution"])
    _nearest_sheet(fake, fake_f, val, val_f, sheets / "nearest.png", info["resolution"])
    return {
        **result,
        "promotion": {"metric": TASK.promotion_metric, "value": result[TASK.promotion_metric]},
        "floor": floor,
        "protocol": card,
        "protocol_hash": protocol_hash(card),
        "generator_step": gmeta["step"],
        "extractor_val_accuracy": emeta["report"].get("val_accuracy"),
    }


def _metrics(
    ref: Reference, feats: np.ndarray, probs: np.ndarray | None, cfg: EvalConfig, seed: int
):
    out = generation_metrics(
        ref.features,
        feats,
        fake_probs=probs,
        k=cfg.k,
        kid_subsets=cfg.kid_subsets,
        kid_subset_size=cfg.kid_subset_size,
        seed=seed,
    )
    # FID against the statistics of every reference image, not only the kept features.
    out |= fid_to_features(ref.mu, ref.sigma, feats)
    if probs is not None:  # the mode-collapse flag at this project's threshold
        out |= class_coverage(probs, collapse_below=cfg.min_class_coverage)
    return {k: float(v) for k, v in out.items()}


def images_of(shards: str | Path, split: str, batch_size: int) -> Iterator[torch.Tensor]:
    """The images ``[B, C, H, W]`` in [-1, 1] of one split, in manifest order."""
    return (batch["image"] for batch in iter_split(shards, split, batch_size))


def _scale(resolution: int) -> int:
    return max(1, 128 // resolution)


def _class_sheet(fake: np.ndarray, probs: np.ndarray, path: Path, resolution: int) -> None:
    """One row per class: the generated images (uint8 ``[N, H, W, C]``) the classifier is
    surest are that class; blank cells where the generator made too few of it (mode collapse
    shows as blank rows)."""
    pred, conf = probs.argmax(axis=1), probs.max(axis=1)
    blank = np.zeros_like(fake[0])
    tiles = []
    for c in range(probs.shape[1]):
        idx = np.flatnonzero(pred == c)
        idx = idx[np.argsort(-conf[idx], kind="stable")][:SHEET_COLUMNS]
        tiles += [fake[i] for i in idx] + [blank] * (SHEET_COLUMNS - len(idx))
    save_grid(from_uint8(np.stack(tiles)), path, nrow=SHEET_COLUMNS, scale=_scale(resolution))


def _nearest_sheet(fake, fake_f, val, val_f, path: Path, resolution: int) -> None:
    """Pairs of (generated image, its nearest real val image in feature space); images uint8
    ``[N, H, W, C]``."""
    m = min(NEAREST_PAIRS, len(fake))
    dist = torch.cdist(torch.from_numpy(fake_f[:m]), torch.from_numpy(val_f))  # [m, V]
    nearest = dist.argmin(dim=1)
    tiles = [t for i in range(m) for t in (fake[i], val[nearest[i]])]
    save_grid(from_uint8(np.stack(tiles)), path, nrow=8, scale=_scale(resolution))


def evaluate(
    generator_dir: Path, shards: str | Path, featurize_dir: Path, params: Params, out: Path
) -> dict[str, Any]:
    """The evaluate stage's entry (:meth:`ganlib.tasks.base.Task.evaluate`)."""
    return evaluate_generator(
        generator_dir, shards, featurize_dir, params.eval, seed=params.seed, out=out
    )
