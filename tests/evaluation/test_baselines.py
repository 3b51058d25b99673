"""Classical inpainting baselines: valid pixels kept, holes filled, known values, batches."""

import numpy as np
import pytest
import torch

from ganlib.evaluation.baselines import BASELINES, baseline_batch, biharmonic, mean_fill


def _images(b=3, c=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, size, size, generator=g) * 1.6 - 0.8  # in [-0.8, 0.8]


def _ramp(h=24, w=32):
    """A linear ramp in every channel: biharmonic continuation reproduces it exactly."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([0.01 * xx, 0.02 * yy, 0.005 * (xx + yy)], axis=-1)  # [H, W, 3]


def _box_mask(h=24, w=32):
    mask = np.zeros((h, w), dtype=bool)
    mask[6:16, 10:22] = True
    return mask


@pytest.mark.parametrize("name", list(BASELINES))
@pytest.mark.parametrize("kind", ["uint8_rgb", "float_gray", "float32_rgb"])
def test_baselines_keep_valid_pixels_and_fill_the_hole(name, kind):
    rng = np.random.default_rng(0)
    mask = _box_mask()
    image = {
        "uint8_rgb": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
        "float_gray": rng.random((24, 32)),
        "float32_rgb": rng.random((24, 32, 3), dtype=np.float32),
    }[kind]
    filled = BASELINES[name](image, mask)
    assert filled.dtype == image.dtype and filled.shape == image.shape
    assert np.array_equal(filled[~mask], image[~mask])
    assert not np.array_equal(filled[mask], image[mask])
    assert np.array_equal(BASELINES[name](image, np.zeros_like(mask)), image)  # no hole


def test_baseline_known_values():
    image, mask = _ramp(), _box_mask()
    assert np.allclose(biharmonic(image, mask)[mask], image[mask], atol=1e-6)
    filled = mean_fill(image, mask)
    assert np.allclose(filled[mask], image[~mask].mean(axis=0))
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 10
    rgb[0, 0, 0] = 11
    hole = np.zeros((4, 4), dtype=bool)
    hole[3, 3] = True
    rgb[3, 3] = 200  # hidden by the hole, so not part of the mean
    # Valid red: fourteen 10s and one 11, mean 10.07, rounded to 10 for uint8.
    assert mean_fill(rgb, hole)[3, 3].tolist() == [10, 0, 0]


def test_baselines_refuse_bad_masks():
    image = _ramp()
    for bad in (np.ones((24, 32), dtype=bool), np.zeros((24, 31), dtype=bool)):
        for fill in BASELINES.values():
            with pytest.raises(ValueError):
                fill(image, bad)


def test_baseline_batch_on_tensors():
    image = _images(b=2)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:20, 4:30] = 1
    for name in BASELINES:
        out = baseline_batch(name, image, mask)
        assert out.shape == image.shape and out.dtype == image.dtype
        valid = (mask == 0).expand_as(image)
        assert torch.equal(out[valid], image[valid])
    ours = baseline_batch("mean_fill", image, mask)
    np_ours = mean_fill(image[0].permute(1, 2, 0).numpy(), mask[0, 0].numpy() > 0)
    assert np.array_equal(ours[0].permute(1, 2, 0).numpy(), np_ours)
