"""Hole masks: area always in range, evaluation masks fixed per key and seed, area bins."""

import hashlib

import numpy as np
import pytest
import torch

from ganlib.data import masks
from ganlib.data.masks import (
    AREA_BINS,
    MASK_KINDS,
    area_bin,
    eval_mask,
    eval_masks,
    random_mask,
    random_masks,
)

EVAL = {"kind": "mix", "area_range": (0.05, 0.6), "seed": 0}


@pytest.mark.parametrize("area_range", [(0.1, 0.5), (0.3, 0.4), (0.0, 0.1), (0.6, 0.9)])
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_area_in_range_over_many_draws(kind, area_range):
    rng = np.random.default_rng(0)
    lo, hi = area_range
    for shape in [(64, 64), (40, 56)]:
        fractions = []
        for _ in range(200):
            mask = random_mask(rng, shape, kind=kind, area_range=area_range)
            assert mask.dtype == bool and mask.shape == shape
            fractions.append(mask.mean())
        fractions = np.array(fractions)
        assert fractions.min() >= lo and fractions.max() <= hi, (kind, shape)
        assert np.unique(fractions).size > 20  # random areas, not a fixed size


def test_kinds_differ():
    rng = np.random.default_rng(1)
    box = random_mask(rng, (64, 64), kind="box", area_range=(0.3, 0.4))
    rows, cols = np.flatnonzero(box.any(axis=1)), np.flatnonzero(box.any(axis=0))
    # A box hole with an area of 30-40 % mostly fills its bounding box; a stroke hole does not.
    assert box.sum() / (rows.size * cols.size) > 0.5
    fill = []
    for _ in range(20):
        stroke = random_mask(rng, (64, 64), kind="stroke", area_range=(0.1, 0.2))
        ys, xs = np.nonzero(stroke)
        fill.append(stroke.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)))
    assert np.median(fill) < 0.5


def test_dilation_top_up_reaches_the_exact_target():
    for start in (np.zeros((16, 16), bool), np.eye(16, dtype=bool)):
        grown = masks._dilate_to(start, 77)
        assert grown.sum() == 77 and (grown | start).sum() == 77  # only adds pixels


def test_batches_are_float_01_with_a_channel_axis():
    batch = random_masks(
        np.random.default_rng(0), 5, (32, 48), kind="stroke", area_range=(0.1, 0.3)
    )
    assert batch.shape == (5, 1, 32, 48) and batch.dtype == torch.float32
    assert set(batch.unique().tolist()) == {0.0, 1.0}
    keys = ["a", "b", "c"]
    fixed = eval_masks(keys, (32, 32), **EVAL)
    assert fixed.shape == (3, 1, 32, 32)
    for mask, key in zip(fixed, keys, strict=True):
        assert torch.equal(mask[0].bool(), torch.from_numpy(eval_mask(key, (32, 32), **EVAL)))


def test_eval_masks_fixed_per_key_and_seed():
    key = "photos-astronaut-s96-y48-x96"
    first = eval_mask(key, (64, 64), **EVAL)
    np.random.seed(123)  # the global RNG plays no part
    torch.manual_seed(123)
    assert np.array_equal(eval_mask(key, (64, 64), **EVAL), first)
    assert not np.array_equal(eval_mask(key + "x", (64, 64), **EVAL), first)
    assert not np.array_equal(eval_mask(key, (64, 64), **{**EVAL, "seed": 1}), first)
    distinct = {eval_mask(f"k{i}", (64, 64), **EVAL).tobytes() for i in range(50)}
    assert len(distinct) == 50


def test_eval_mask_is_pinned():
    # The evaluation protocol: if this changes, every stored hole-area number changes meaning.
    # Update the digest only together with the protocol (and say so in the commit).
    mask = eval_mask("photos-astronaut-s96-y48-x96", (64, 64), **EVAL)
    digest = hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()[:16]
    assert (mask.sum(), digest) == (1353, "3fd13dc684bae874")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "circle", "area_range": (0.1, 0.2)},
        {"kind": "box", "area_range": (0.3, 0.2)},
        {"kind": "box", "area_range": (-0.1, 0.2)},
        {"kind": "box", "area_range": (0.1, 1.5)},
        {"kind": "box", "area_range": (0.101, 0.102)},  # no whole pixel count of 8x8 in it
    ],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        random_mask(np.random.default_rng(0), (8, 8), **kwargs)


def test_area_bins():
    cases = {
        0.0: "0-10",
        0.0999: "0-10",
        0.1: "10-20",
        0.25: "20-30",
        0.3: "30-40",
        0.4999: "40-50",
        0.5: "50-100",
        1.0: "50-100",
    }
    for fraction, label in cases.items():
        assert area_bin(fraction) == label
    assert [label for label, _, _ in AREA_BINS] == [
        "0-10", "10-20", "20-30", "30-40", "40-50", "50-100",
    ]  # fmt: skip
    for bad in (-0.01, 1.01):
        with pytest.raises(ValueError):
            area_bin(bad)
