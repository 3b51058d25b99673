"""DiffAugment: shapes, gradients, determinism under the global seed, and what each op does."""

import pytest
import torch

from ganlib.data.augment import (
    POLICIES,
    contrast,
    cutout,
    diff_augment,
    saturation,
    translation,
)

ALL = "color,translation,cutout"


def _images(n=4, c=3, size=16):
    torch.manual_seed(123)
    return torch.rand(n, c, size, size) * 2 - 1  # [-1, 1]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("policy", [*POLICIES, ALL])
def test_shape_and_gradient(policy, channels):
    x = _images(c=channels).requires_grad_(True)
    out = diff_augment(x, policy)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_deterministic_under_manual_seed():
    x = _images()
    torch.manual_seed(7)
    a = diff_augment(x, ALL)
    torch.manual_seed(7)
    b = diff_augment(x, ALL)
    torch.manual_seed(8)
    c = diff_augment(x, ALL)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_empty_policy_is_identity():
    x = _images()
    assert torch.equal(diff_augment(x, ""), x)


def test_bad_policy_lists_the_valid_ones():
    with pytest.raises(ValueError, match="flip.*valid: color, translation, cutout"):
        diff_augment(_images(), "color,flip")


def test_saturation_is_identity_on_one_channel():
    x = _images(c=1)
    assert torch.equal(saturation(x), x)


def test_contrast_keeps_constant_images():
    x = torch.full((2, 3, 8, 8), 0.25)
    assert torch.allclose(contrast(x), x)


def test_translation_is_a_zero_filled_shift_of_at_most_one_eighth():
    x = _images(n=8, size=16)  # shifts of up to 2 pixels
    out = translation(x)
    for sample, shifted in zip(x, out, strict=True):
        candidates = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                expected = torch.zeros_like(sample)
                src = sample[:, max(0, -dy) : 16 - max(0, dy), max(0, -dx) : 16 - max(0, dx)]
                expected[:, max(0, dy) : 16 - max(0, -dy), max(0, dx) : 16 - max(0, -dx)] = src
                candidates.append(torch.equal(shifted, expected))
        assert sum(candidates) == 1


def test_cutout_zeroes_one_clipped_half_size_square():
    x = torch.ones(16, 3, 16, 16)
    out = cutout(x)
    assert ((out == 0) | (out == 1)).all()
    holes = out[:, 0] == 0  # [N, H, W], the same hole in every channel
    assert torch.equal(holes[:, None].expand_as(out), out == 0)
    for hole in holes:
        rows, cols = hole.any(dim=1).sum().item(), hole.any(dim=0).sum().item()
        assert hole.sum().item() == rows * cols  # a rectangle
        assert 4 <= rows <= 8 and 4 <= cols <= 8  # an 8x8 square, clipped by at most half


def test_xflip_mirrors_left_to_right():
    x = torch.arange(8.0).reshape(1, 1, 2, 4)
    assert torch.equal(diff_augment(x, "xflip"), x.flip(3))


def test_probability_applies_each_transform_to_that_share_of_samples():
    x = torch.randn(400, 3, 8, 8)
    assert torch.equal(diff_augment(x, "color,translation,cutout,xflip", p=0.0), x)
    torch.manual_seed(0)
    always = diff_augment(x, "xflip", p=1.0)
    torch.manual_seed(0)
    assert torch.equal(always, diff_augment(x, "xflip"))  # p = 1 draws nothing extra
    flipped = diff_augment(x, "xflip", p=0.3)
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())  # each sample whole: flipped or not
    assert 0.2 < mirrored.float().mean().item() < 0.4
    with pytest.raises(ValueError, match=r"probability must be in \[0, 1\]"):
        diff_augment(x, "xflip", p=1.5)
