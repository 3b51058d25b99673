"""Generation metrics: numbers that compare generated images with real ones, in feature space.

Every function takes features (``[N, D]`` arrays from :mod:`ganlib.metrics.reference`) or class
probabilities (``[N, K]``) and returns a small ``dict[str, float]``:

- :func:`fid` / :func:`fid_from_stats` / :func:`fid_to_features` -- Fréchet distance of
  Gaussians fitted to the features (Heusel et al. 2017), as pytorch-fid computes it;
- :func:`kid` -- kernel distance: unbiased MMD² with the cubic polynomial kernel, averaged over
  random subsets (Bińkowski et al. 2018), as torchmetrics computes it;
- :func:`precision_recall` -- k-NN manifold precision and recall (Kynkäänniemi et al. 2019);
- :func:`density_coverage` -- density and coverage (Naeem et al. 2020);
- :func:`classifier_score` -- the Inception-Score formula on a classifier's probabilities;
- :func:`class_coverage` -- which classes the generator produces, to catch mode collapse.

:func:`generation_metrics` computes them all in one dict.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg
from scipy.special import xlogy
from torch import Tensor

# Rows of the [rows, N] distance blocks of the k-NN metrics: 1024 x 10k float32 = 40 MB.
_CHUNK = 1024


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (unbiased, as pytorch-fid) in float64."""
    x = np.asarray(features, dtype=np.float64)  # [N, D]
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be [N >= 2, D], got {list(x.shape)}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def fid_from_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, eps: float = 1e-6
) -> dict[str, float]:
    """``{"fid": ||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½)}`` in float64.

    As pytorch-fid: when ``sqrtm`` fails (a singular product), it is retried with ``eps``
    added to both diagonals; an imaginary part from rounding is dropped, a large one raises.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)  # [D]
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)  # [D, D]
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"shapes differ: mu {mu1.shape} {mu2.shape}, sigma {sigma1.shape} {sigma2.shape}"
        )
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # Singular products are common (fewer samples than dimensions, dead features); the
        # result is checked below. pytorch-fid silences this warning too (disp=False).
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(d) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm: imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    return {"fid": float(value)}


def fid_to_features(mu: np.ndarray, sigma: np.ndarray, features: np.ndarray) -> dict[str, float]:
    """:func:`fid_from_stats` of ``(mu, sigma)`` and the Gaussian fitted to ``features``.

    With fewer samples than dimensions (an evaluation bin of 60 images in Inception's 2048
    dimensions) the fitted covariance is ``B.T @ B`` of rank below ``N``, with ``B`` the centred
    features over ``sqrt(N - 1)``, and ``Tr((S1 S2)^½)`` is exactly the sum of the square roots
    of the eigenvalues of the ``N x N`` matrix ``B S1 B.T`` (the same non-zero spectrum): one
    symmetric eigen-decomposition of ``N x N`` instead of ``sqrtm`` of ``D x D`` (0.75 s at
    D = 2048 on 2 cores). Otherwise :func:`fid_from_stats`, as pytorch-fid.
    """
    x = np.asarray(features, dtype=np.float64)  # [N, D]
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be [N >= 2, D], got {list(x.shape)}")
    n, d = x.shape
    if n > d:
        return fid_from_stats(mu, sigma, *mean_cov(x))
    if mu.shape != (d,) or sigma.shape != (d, d):
        raise ValueError(f"shapes differ: mu {mu.shape}, sigma {sigma.shape}, features {x.shape}")
    mean = x.mean(axis=0)  # [D]
    b = (x - mean) / np.sqrt(n - 1)  # [N, D]
    eig = np.linalg.eigvalsh(b @ sigma @ b.T)  # [N], the spectrum of S1 S2 without its zeros
    diff = mu - mean
    value = diff @ diff + np.trace(sigma) + np.sum(b * b) - 2 * np.sqrt(eig.clip(min=0)).sum()
    return {"fid": float(value)}


def fid(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """``{"fid"}`` between real ``[N, D]`` and fake ``[M, D]`` features."""
    return fid_to_features(*mean_cov(real), fake)


def kid(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """``{"kid_mean", "kid_std"}`` of the unbiased MMD² over ``subsets`` random subset pairs.

    Kernel ``k(x, y) = (x·y / D + 1)³``; each subset pair draws ``subset_size`` real and as
    many fake rows without replacement (clamped to the smaller set), from a generator seeded
    by ``seed`` (the global RNG is not used). float64 throughout.
    """
    # Imported here: torchmetrics costs ~1 s to import, and every training process imports
    # this module (the FID probe) without ever computing a KID.
    from torchmetrics.image.kid import poly_mmd

    real_t = torch.as_tensor(np.asarray(real), dtype=torch.float64)  # [N, D]
    fake_t = torch.as_tensor(np.asarray(fake), dtype=torch.float64)  # [M, D]
    m = min(subset_size, len(real_t), len(fake_t))
    if m < 2 or subsets < 1:
        raise ValueError(f"KID needs subsets >= 1 of >= 2 samples; got {subsets} of {m}")
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        r = real_t[rng.choice(len(real_t), m, replace=False)]  # [m, D]
        f = fake_t[rng.choice(len(fake_t), m, replace=False)]  # [m, D]
        values[i] = float(poly_mmd(r, f))
    std = float(values.std(ddof=1)) if subsets > 1 else 0.0
    return {"kid_mean": float(values.mean()), "kid_std": std}


def _knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance of each row of ``x`` [N, D] to its k-th nearest other row: ``[N]``."""
    if len(x) <= k:
        raise ValueError(f"k-NN metrics need more than k={k} samples per set, got {len(x)}")
    # The (k+1)-th smallest distance: the row itself is the nearest, at 0.
    return torch.cat([torch.cdist(c, x).kthvalue(k + 1, dim=1).values for c in x.split(_CHUNK)])


def _manifold_metrics(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Precision, recall, density and coverage in one pass over the [M, N] distances.

    Each set's manifold is the union of balls around its points, each ball's radius the
    distance to that point's k-th nearest neighbour in its own set. A point counts as inside
    when its distance is <= the radius (so identical sets score 1).
    """
    real_t = torch.as_tensor(np.asarray(real), dtype=torch.float32)  # [N, D]
    fake_t = torch.as_tensor(np.asarray(fake), dtype=torch.float32)  # [M, D]
    r_real, r_fake = _knn_radii(real_t, k), _knn_radii(fake_t, k)  # [N], [M]
    fakes_in_real = 0  # fakes inside the real manifold (precision)
    pairs_in_real = 0  # (fake, real ball) pairs with the fake inside the ball (density)
    real_covered = torch.zeros(len(real_t), dtype=torch.bool)  # a fake in its ball (coverage)
    real_in_fake = torch.zeros(len(real_t), dtype=torch.bool)  # inside the fake manifold (recall)
    for f, rf in zip(fake_t.split(_CHUNK), r_fake.split(_CHUNK), strict=True):
        d = torch.cdist(f, real_t)  # [c, N]
        inside = d <= r_real  # [c, N]: fake j inside the ball of real i
        fakes_in_real += int(inside.any(dim=1).sum())
        pairs_in_real += int(inside.sum())
        real_covered |= inside.any(dim=0)
        real_in_fake |= (d <= rf[:, None]).any(dim=0)  # real i inside the ball of fake j
    m = len(fake_t)
    return {
        "precision": fakes_in_real / m,
        "recall": float(real_in_fake.float().mean()),
        "density": pairs_in_real / (k * m),
        "coverage": float(real_covered.float().mean()),
    }


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 5) -> dict[str, float]:
    """``{"precision", "recall"}``: the share of fakes inside the real k-NN manifold, and of
    reals inside the fake one (Kynkäänniemi et al. 2019)."""
    out = _manifold_metrics(real, fake, k)
    return {"precision": out["precision"], "recall": out["recall"]}


def density_coverage(real: np.ndarray, fake: np.ndarray, *, k: int = 5) -> dict[str, float]:
    """``{"density", "coverage"}`` (Naeem et al. 2020): how many real k-NN balls each fake
    falls in, over k (about 1 for matching distributions, unbounded above), and the share of
    real balls that hold at least one fake."""
    out = _manifold_metrics(real, fake, k)
    return {"density": out["density"], "coverage": out["coverage"]}


def _check_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0 or p.shape[1] < 1:
        raise ValueError(f"probs must be [N >= 1, K >= 1], got {list(p.shape)}")
    return p  # [N, K]


def classifier_score(probs: np.ndarray) -> dict[str, float]:
    """``{"classifier_score": exp(E_x KL(p(y|x) || p(y)))}``: the Inception-Score formula.

    From 1 (every image gets the same class distribution) up to K (confident predictions,
    classes used evenly). Computed over all N images at once, not averaged over splits.
    """
    p = _check_probs(probs)  # [N, K]
    p_y = p.mean(axis=0, keepdims=True)  # [1, K]
    kl = (xlogy(p, p) - xlogy(p, p_y)).sum(axis=1)  # [N]
    return {"classifier_score": float(np.exp(kl.mean()))}


def class_coverage(
    probs: np.ndarray, *, min_share: float = 0.1, collapse_below: float = 0.9
) -> dict[str, float]:
    """Which of the K classes the generator produces, from the classifier's probabilities.

    A class counts as produced when at least ``min_share`` of its fair share (N / K) of the
    N fakes are predicted as it. Returns ``class_coverage`` (produced / K),
    ``classes_covered`` (produced), and ``mode_collapse`` (1.0 when the coverage is below
    ``collapse_below``, else 0.0).
    """
    p = _check_probs(probs)  # [N, K]
    n, n_classes = p.shape
    counts = np.bincount(p.argmax(axis=1), minlength=n_classes)  # [K]
    covered = int((counts >= max(min_share * n / n_classes, 1)).sum())
    coverage = covered / n_classes
    return {
        "class_coverage": coverage,
        "classes_covered": float(covered),
        "mode_collapse": float(coverage < collapse_below),
    }


def generation_metrics(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    fake_probs: np.ndarray | None = None,
    k: int = 5,
    kid_subsets: int,
    kid_subset_size: int,
    seed: int,
) -> dict[str, float]:
    """Every generation metric of real ``[N, D]`` and fake ``[M, D]`` features in one dict.

    ``fid``, ``kid_mean``, ``kid_std``, ``precision``, ``recall``, ``density``, ``coverage``;
    with ``fake_probs`` ``[M, K]`` also ``classifier_score``, ``class_coverage``,
    ``classes_covered`` and ``mode_collapse``.
    """
    out = fid(real, fake)
    out |= kid(real, fake, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    out |= _manifold_metrics(real, fake, k)
    if fake_probs is not None:
        out |= classifier_score(fake_probs)
        out |= class_coverage(fake_probs)
    return out
