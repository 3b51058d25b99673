"""Fidelity metrics: PSNR/SSIM/L1 known values."""

import pytest
import torch

from ganlib.metrics.fidelity import PSNR_CAP_DB, image_scores, l1


def test_psnr_ssim_l1_known_values():
    target = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.8
    pred = target + 0.1  # MSE 0.01 on a range of 1: PSNR 20 dB; off by 10 % of the range
    scores = image_scores(pred, target, value_range=(0.0, 1.0))
    assert scores["psnr"].shape == (3,)
    assert scores["psnr"].tolist() == pytest.approx([20.0] * 3, abs=1e-3)
    assert scores["l1"].tolist() == pytest.approx([0.1] * 3, abs=1e-6)
    assert (scores["ssim"] < 1).all()
    same = image_scores(target, target, value_range=(0.0, 1.0))
    assert (same["ssim"] == 1).all() and (same["l1"] == 0).all()
    assert (same["psnr"] == PSNR_CAP_DB).all()  # not inf: means stay finite
    # On the loader's [-1, 1] the same error is half the range's share: 0.1 / 2 = 5 %.
    assert l1(pred, target, value_range=(-1.0, 1.0)).tolist() == pytest.approx([0.05] * 3)
