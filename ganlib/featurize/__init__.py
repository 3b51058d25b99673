"""The featurize stage's library: build the metric extractor and the reference features.

``auto`` picks the classifier for labelled data and the random network otherwise;
``inception`` loads the user's FID Inception weights file. The extractor is stored with the
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

from ganlib.artifacts import save_extractor
from ganlib.config import FeaturizeConfig
from ganlib.data.loader import BATCH_NAMES, iter_split
from ganlib.data.shards import dataset_info, manifest_metadata, read_manifest
from ganlib.errors import GanlibError
from ganlib.featurize.classifier import train_classifier
from ganlib.metrics.extractors import load_inception, random_extractor
from ganlib.metrics.reference import REFERENCE, compute_outputs, save_reference


def resolve_kind(cfg: FeaturizeConfig, labelled: bool) -> str:
    """``auto`` is the classifier on labelled data and the random network otherwise."""
    if cfg.kind == "auto":
        return "classifier" if labelled else "random"
    if cfg.kind == "classifier" and not labelled:
        raise GanlibError(
            "featurize.kind: classifier needs labelled data; the shards have none; "
            "use random or inception"
        )
    return cfg.kind


def featurize(cfg: FeaturizeConfig, shards: Path, out: Path, *, seed: int) -> dict[str, Any]:
    """Build the extractor of ``cfg`` and the train split's reference features into ``out``
    (written whole or not at all); returns the report (``featurize/report.json``)."""
    info = dataset_info(shards)
    kind = resolve_kind(cfg, bool(info["classes"]))
    t0 = time.perf_counter()
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
    else:
        extractor = load_inception(cfg.inception_weights)
    # Single-image shards: their one field; translation shards: the target domain, b.png.
    fields = manifest_metadata(read_manifest(shards, columns=["key"]))["fields"]
    field = "b.png" if "b.png" in fields else "png"
    batches = iter_split(shards, "train", cfg.batch_size, fields=(field,))
    features, probs = compute_outputs(extractor, (b[BATCH_NAMES[field]] for b in batches))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ref = save_reference(tmp / REFERENCE, features, probs, max_samples=cfg.max_reference, seed=seed)
    extra = {"reference_field": field} if field != "png" else {}
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
        "seconds": round(time.perf_counter() - t0, 2),
        **{k: v for k, v in report.items() if isinstance(v, (int, float))},
    }
