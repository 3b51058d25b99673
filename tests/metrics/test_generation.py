"""Generation metrics against known answers: identical sets, Gaussians with a closed-form FID,
disjoint clouds, one-class and uniform classifiers, and torchmetrics' KID."""

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from ganlib.metrics.generation import (
    class_coverage,
    classifier_score,
    density_coverage,
    fid,
    fid_from_stats,
    fid_to_features,
    generation_metrics,
    kid,
    mean_cov,
    precision_recall,
)


def gaussian(n: int, mu: np.ndarray, std: np.ndarray, seed: int) -> np.ndarray:
    """n samples of N(mu, diag(std²)): [n, D]."""
    return mu + std * np.random.default_rng(seed).standard_normal((n, len(mu)))


def diagonal_fid(mu1, var1, mu2, var2) -> float:
    """The closed form for diagonal covariances: sum of per-axis 1-D Fréchet distances."""
    return float(((mu1 - mu2) ** 2).sum() + (var1 + var2 - 2 * np.sqrt(var1 * var2)).sum())


MU1, STD1 = np.zeros(8), np.linspace(0.5, 2.0, 8)
MU2, STD2 = np.linspace(-1.0, 1.0, 8), np.linspace(1.5, 0.7, 8)


def test_identical_sets_score_perfectly():
    x = gaussian(400, MU1, STD1, seed=0)
    assert abs(fid(x, x)["fid"]) < 1e-6 * np.trace(np.cov(x, rowvar=False))
    out = precision_recall(x, x) | density_coverage(x, x)
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    assert out["density"] >= 1.0  # every fake is in its own ball and those of its neighbours


def test_fid_from_exact_stats_matches_the_closed_form():
    expected = diagonal_fid(MU1, STD1**2, MU2, STD2**2)
    got = fid_from_stats(MU1, np.diag(STD1**2), MU2, np.diag(STD2**2))["fid"]
    assert got == pytest.approx(expected, abs=1e-6)
    assert fid_from_stats(MU1, np.diag(STD1**2), MU1, np.diag(STD1**2))["fid"] == pytest.approx(
        0.0, abs=1e-9
    )


def test_fid_from_samples_approaches_the_closed_form():
    expected = diagonal_fid(MU1, STD1**2, MU2, STD2**2)  # about 4.5
    got = fid(gaussian(20_000, MU1, STD1, 1), gaussian(20_000, MU2, STD2, 2))["fid"]
    assert got == pytest.approx(expected, rel=0.03)


def test_fid_with_full_covariances_matches_an_eigenvalue_computation():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 6, 6))
    sigma1, sigma2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.standard_normal((2, 6))
    # Tr (S1 S2)^½ = sum of the square roots of the (real, positive) eigenvalues of S1 S2.
    tr_sqrt = np.sqrt(linalg.eigvals(sigma1 @ sigma2).real).sum()
    expected = (mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1 + sigma2) - 2 * tr_sqrt
    assert fid_from_stats(mu1, sigma1, mu2, sigma2)["fid"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("n", [5, 40, 64, 65, 200])
def test_fid_to_few_features_equals_the_sqrtm_route(n):
    """Fewer samples than dimensions take the N x N eigenvalue route, more take sqrtm; both
    equal pytorch-fid's sqrtm of S1 S2 (which stays well-conditioned at 64 dimensions)."""
    rng = np.random.default_rng(n)
    ref = rng.standard_normal((500, 64)) @ rng.standard_normal((64, 64)) * 0.3
    mu, sigma = mean_cov(ref)
    fake = rng.standard_normal((n, 64)) * 1.3 + 0.5
    mu2, sigma2 = mean_cov(fake)
    expected = (mu - mu2) @ (mu - mu2) + np.trace(sigma + sigma2)
    expected -= 2 * np.trace(linalg.sqrtm(sigma @ sigma2).real)
    assert fid_to_features(mu, sigma, fake)["fid"] == pytest.approx(expected, rel=1e-6)
    assert abs(fid_to_features(mu2, sigma2, fake)["fid"]) < 1e-6 * np.trace(sigma2)  # itself


def test_fid_survives_singular_covariances():
    x = gaussian(5, MU1, STD1, seed=4)  # 5 samples in 8 dimensions: rank-4 covariance
    assert abs(fid(x, x)["fid"]) < 1e-3
    with pytest.raises(ValueError, match="mu"):
        fid_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_disjoint_clouds_score_zero():
    real = gaussian(300, MU1, STD1, seed=5)
    fake = gaussian(300, MU1 + 100.0, STD1, seed=6)
    out = precision_recall(real, fake, k=3) | density_coverage(real, fake, k=3)
    assert out == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    real = gaussian(600, MU1, STD1, seed=7)
    same = kid(real, gaussian(600, MU1, STD1, seed=8), subsets=20, subset_size=300, seed=0)
    other = kid(real, gaussian(600, MU2, STD2, seed=9), subsets=20, subset_size=300, seed=0)
    assert abs(same["kid_mean"]) < 3 * same["kid_std"] + 1e-3
    assert other["kid_mean"] > 20 * same["kid_std"]
    again = kid(real, gaussian(600, MU1, STD1, seed=8), subsets=20, subset_size=300, seed=0)
    assert again == same  # seeded subsets
    assert kid(real, real, subsets=1, subset_size=10_000)["kid_std"] == 0.0  # clamped, one subset


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_matches_torchmetrics():
    from torchmetrics.image.kid import KernelInceptionDistance

    real = gaussian(150, MU1, STD1, seed=10)
    fake = gaussian(150, MU2, STD2, seed=11)
    # One subset of all 150: torchmetrics' random subsets are then permutations of the whole
    # sets, which the MMD does not depend on.
    metric = KernelInceptionDistance(feature=nn.Identity(), subsets=1, subset_size=150)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    expected = float(metric.compute()[0])
    assert kid(real, fake, subsets=1, subset_size=150)["kid_mean"] == pytest.approx(expected)


def test_one_class_generator_is_mode_collapse():
    probs = np.full((200, 10), 0.001)
    probs[:, 3] = 0.991  # every fake says "3"
    cov = class_coverage(probs)
    assert cov == {"class_coverage": 0.1, "classes_covered": 1.0, "mode_collapse": 1.0}
    assert classifier_score(probs)["classifier_score"] == pytest.approx(1.0)


def test_uniform_classes_are_covered():
    probs = np.eye(10)[np.arange(500) % 10]  # confident, every class equally often
    assert class_coverage(probs) == {
        "class_coverage": 1.0,
        "classes_covered": 10.0,
        "mode_collapse": 0.0,
    }
    assert classifier_score(probs)["classifier_score"] == pytest.approx(10.0)
    # 9 of 10 classes: coverage 0.9 is not collapse at the default threshold, but is at 0.95.
    nine = np.eye(10)[np.arange(450) % 9]
    assert class_coverage(nine)["mode_collapse"] == 0.0
    assert class_coverage(nine, collapse_below=0.95)["mode_collapse"] == 1.0
    # A class with a few stray predictions (below min_share of its fair share) is not produced.
    stray = np.eye(10)[np.r_[np.arange(990) % 9, np.full(10, 9)]]  # class 9: 10 of 100
    assert class_coverage(stray, min_share=0.2)["classes_covered"] == 9.0


def test_generation_metrics_has_every_number():
    real = gaussian(120, MU1, STD1, seed=12)
    fake = gaussian(100, MU2, STD2, seed=13)
    probs = np.eye(10)[np.arange(100) % 10]
    out = generation_metrics(
        real, fake, fake_probs=probs, kid_subsets=5, kid_subset_size=50, seed=0
    )
    assert set(out) == {
        "fid",
        "kid_mean",
        "kid_std",
        "precision",
        "recall",
        "density",
        "coverage",
        "classifier_score",
        "class_coverage",
        "classes_covered",
        "mode_collapse",
    }
    assert all(isinstance(v, float) and np.isfinite(v) for v in out.values())
    assert out["fid"] == pytest.approx(fid(real, fake)["fid"])
    no_probs = generation_metrics(real, fake, kid_subsets=5, kid_subset_size=50, seed=0)
    assert "classifier_score" not in no_probs
