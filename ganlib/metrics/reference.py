"""Reference statistics: the features of real images that generated ones are compared with.

:func:`compute_outputs` runs an extractor over image batches; :func:`save_reference` stores
the mean and covariance of all the features (FID) with a seeded subset of the features
themselves (KID, precision/recall, density/coverage), and :func:`load_reference` reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from ganlib.errors import GanlibError
from ganlib.metrics.extractors import Extractor
from ganlib.metrics.generation import mean_cov

REFERENCE = "reference.npz"  # the conventional name of the reference statistics file


@dataclass(frozen=True)
class Reference:
    """Reference statistics of real images, as :func:`save_reference` stores them."""

    features: np.ndarray  # [M, D] float32, a deterministic subset of at most max_samples
    mu: np.ndarray  # [D] float64, mean of all N features
    sigma: np.ndarray  # [D, D] float64, covariance of all N features
    probs: np.ndarray | None  # [M, K] float32 class probabilities of the same M, or None
    num_samples: int  # N, the number of images the statistics describe


def compute_outputs(
    extractor: Extractor, batches: Iterable[Tensor]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features ``[N, D]`` and class probabilities ``[N, K]`` (or None) of image batches.

    ``batches`` yields ``[B, C, H, W]`` tensors in [-1, 1], e.g.
    ``(b["image"] for b in iter_split(root, "val", 256))``. Both arrays are float32.
    """
    feats, probs = [], []
    for x in batches:
        f, p = extractor.outputs(x)
        feats.append(f.cpu().numpy())
        if p is not None:
            probs.append(p.cpu().numpy())
    if not feats:
        raise GanlibError("no images to compute features of: the split is empty")
    return np.concatenate(feats), np.concatenate(probs) if probs else None


def compute_features(extractor: Extractor, batches: Iterable[Tensor]) -> np.ndarray:
    """Features ``[N, D]`` (float32) of image batches; see :func:`compute_outputs`."""
    return compute_outputs(extractor, batches)[0]


def save_reference(
    path: Path,
    features: np.ndarray,
    probs: np.ndarray | None = None,
    *,
    max_samples: int | None = None,
    seed: int = 0,
) -> Reference:
    """Write the reference statistics of real ``features`` [N, D] (and ``probs`` [N, K]).

    ``mu`` and ``sigma`` describe all N features; the stored features (and probs), which
    KID, precision/recall and density/coverage compare against, are capped at
    ``max_samples``, a subset drawn from ``seed`` and kept in order. The ``.npz`` file is
    byte-identical for the same input.
    """
    features = np.asarray(features)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be [N >= 2, D], got {list(features.shape)}")
    if probs is not None and len(probs) != len(features):
        raise ValueError(f"probs has {len(probs)} rows, features {len(features)}")
    n = len(features)
    mu, sigma = mean_cov(features)
    keep = np.arange(n)
    if max_samples is not None and n > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))
    arrays = {
        "features": features[keep].astype(np.float32),
        "mu": mu,
        "sigma": sigma,
        "num_samples": np.int64(n),
    }
    if probs is not None:
        arrays["probs"] = np.asarray(probs)[keep].astype(np.float32)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return Reference(
        features=arrays["features"],
        mu=mu,
        sigma=sigma,
        probs=arrays.get("probs"),
        num_samples=n,
    )


def reference_from_batches(
    extractor: Extractor,
    batches: Iterable[Tensor],
    n: int,
    path: Path,
    *,
    max_samples: int | None = None,
    seed: int = 0,
) -> Reference:
    """:func:`save_reference` of the features of ``n`` images in ``batches``, streaming:
    memory holds the running sums (``[D]`` and ``[D, D]`` float64) and the seeded subset of at
    most ``max_samples`` features that are kept (the same rows :func:`save_reference` keeps),
    never all N features (at 10 M images and D = 2048 those would be 80 GB)."""
    keep = np.arange(n)
    if max_samples is not None and n > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))
    kept_f, kept_p, seen = [], [], 0
    shift = s1 = s2 = None  # sums of (x - shift) and its outer products, shift = batch 1's mean
    for x in batches:
        f, p = extractor.outputs(x)
        f = f.cpu().numpy()  # [B, D]
        d = f.astype(np.float64)
        if shift is None:
            shift = d.mean(axis=0)
            s1, s2 = np.zeros_like(shift), np.zeros((len(shift), len(shift)))
        d -= shift
        s1 += d.sum(axis=0)
        s2 += d.T @ d
        lo, hi = np.searchsorted(keep, [seen, seen + len(f)])
        kept_f.append(f[keep[lo:hi] - seen])
        if p is not None:
            kept_p.append(p.cpu().numpy()[keep[lo:hi] - seen])
        seen += len(f)
    if seen != n or n < 2:
        raise GanlibError(f"expected {n} images to compute features of, got {seen}")
    mean = s1 / n
    sigma = (s2 - n * np.outer(mean, mean)) / (n - 1)
    arrays = {
        "features": np.concatenate(kept_f).astype(np.float32),
        "mu": shift + mean,
        "sigma": sigma,
        "num_samples": np.int64(n),
    }
    if kept_p:
        arrays["probs"] = np.concatenate(kept_p).astype(np.float32)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return Reference(
        features=arrays["features"],
        mu=arrays["mu"],
        sigma=sigma,
        probs=arrays.get("probs"),
        num_samples=n,
    )


def load_reference(path: Path) -> Reference:
    """Read the statistics :func:`save_reference` wrote."""
    path = Path(path)
    if not path.is_file():
        raise GanlibError(f"{path}: no reference statistics; run the featurize stage first")
    with np.load(path, allow_pickle=False) as z:
        return Reference(
            features=z["features"],
            mu=z["mu"],
            sigma=z["sigma"],
            probs=z["probs"] if "probs" in z.files else None,
            num_samples=int(z["num_samples"]),
        )
