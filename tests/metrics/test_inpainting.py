"""Inpainting metrics: known values, PSNR per image, the per-bin table."""

import math

import pytest
import torch

from ganlib.metrics.fidelity import PSNR_CAP_DB, psnr, ssim
from ganlib.metrics.inpainting import image_metrics, inpainting_table, l1_hole


def _images(b=3, c=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, size, size, generator=g) * 1.6 - 0.8  # in [-0.8, 0.8]


def test_identical_images():
    x = _images()
    assert torch.isinf(psnr(x, x, value_range=(-1.0, 1.0))).all()
    assert torch.allclose(ssim(x, x, value_range=(-1.0, 1.0)), torch.ones(3))


@pytest.mark.parametrize(("value_range", "offset"), [((-1.0, 1.0), 0.2), ((0.0, 1.0), 0.1)])
def test_constant_offset_psnr_and_hole_l1(value_range, offset):
    lo, hi = value_range
    target = _images() * (hi - lo) / 4 + (hi + lo) / 2  # well inside the range
    pred = target + offset
    # PSNR = 10 log10(range^2 / offset^2): 20 dB for an offset of a tenth of the range.
    expected = 20 * math.log10((hi - lo) / offset)
    values = psnr(pred, target, value_range=value_range)
    assert torch.allclose(values, torch.full((3,), expected), atol=1e-4)
    mask = torch.zeros(3, 1, 32, 32)
    mask[:, :, 8:16, 8:24] = 1
    hole_only = torch.where(mask.bool(), pred, target)
    l1 = l1_hole(hole_only, target, mask, value_range=value_range)
    assert torch.allclose(l1, torch.full((3,), offset / (hi - lo)).double())  # 0.1 of the range


def test_psnr_per_image_and_clamped_to_range():
    target = _images()
    pred = target.clone()
    pred[1] += 0.2  # only image 1 differs
    values = psnr(pred, target, value_range=(-1.0, 1.0))
    assert (
        torch.isinf(values[0])
        and torch.isinf(values[2])
        and values[1] == pytest.approx(20, abs=1e-4)
    )
    # Values outside the range are clamped to it, as the images are when shown.
    above = torch.full((1, 1, 16, 16), 3.0)
    assert torch.isinf(psnr(above, torch.ones(1, 1, 16, 16), value_range=(-1.0, 1.0)))


def test_image_metrics_and_table():
    target = _images(b=4)
    mask = torch.zeros(4, 1, 32, 32)
    mask[0, :, :4, :] = 1  # 12.5 % -> 10-20
    mask[1, :, :12, :] = 1  # 37.5 % -> 30-40
    mask[2:, :, :16, :] = 1  # 50 % -> 50-100
    pred = torch.where(mask.bool(), target + 0.1, target)
    metrics = image_metrics(pred, target, mask, value_range=(-1.0, 1.0))
    assert set(metrics) == {"psnr", "ssim", "l1_hole", "hole_fraction"}
    assert all(v.shape == (4,) for v in metrics.values())
    assert metrics["hole_fraction"].tolist() == [0.125, 0.375, 0.5, 0.5]

    results = {
        "ganlib": {"l1_hole": [0.1, 0.2, 0.3, 0.5], "hole_fraction": [0.125, 0.375, 0.5, 0.9]},
        "mean_fill": {"l1_hole": [1.0, 1.0, 2.0, 4.0], "hole_fraction": [0.125, 0.375, 0.5, 0.9]},
    }
    table = inpainting_table(results)
    assert list(table["ganlib"]) == ["all", "10-20", "30-40", "50-100"]  # empty bins left out
    assert table["ganlib"]["all"] == {"l1_hole": pytest.approx(0.275), "n": 4}
    assert table["ganlib"]["50-100"] == {"l1_hole": pytest.approx(0.4), "n": 2}
    assert table["mean_fill"]["10-20"] == {"l1_hole": 1.0, "n": 1}
    table_from_metrics = inpainting_table({"m": metrics})
    assert table_from_metrics["m"]["50-100"]["n"] == 2
    # An exact fill (inf dB) counts as the cap, so that means stay finite.
    exact = inpainting_table({"m": {"psnr": [math.inf, 20.0], "hole_fraction": [0.3, 0.3]}})
    assert exact["m"]["30-40"]["psnr"] == pytest.approx((PSNR_CAP_DB + 20.0) / 2)
    assert abs(PSNR_CAP_DB - 54.15) < 0.01
    # An image without a hole has no hole L1 (NaN); it still counts for the other metrics.
    no_hole = inpainting_table({"m": {"l1_hole": [math.nan, 0.2], "hole_fraction": [0.0, 0.05]}})
    assert no_hole["m"]["0-10"] == {"l1_hole": pytest.approx(0.2), "n": 2}
