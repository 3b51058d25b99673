"""The inpainting pyfunc's contract (``predict_frame``): batch sizes, any image size, exact
valid pixels, and a one-line error naming the row for each bad input."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from ganlib.artifacts import export_generator, load_generator
from ganlib.data.pixels import to_uint8
from ganlib.errors import GanlibError
from ganlib.models.unet import UNetGenerator
from ganlib.tasks.inpainting import demo_mask, inpaint, predict_frame


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An untrained inpainting U-Net for 64px RGB, exported and loaded as the pyfunc does."""
    torch.manual_seed(0)
    G = UNetGenerator(in_channels=4, out_channels=3, width=8, resolution=64)
    state = {"G_ema": G.state_dict(), "model_config": G.config, "task": "inpainting",
             "task_config": {}, "resolution": 64, "channels": 3, "classes": None, "step": 0,
             "identity": "test"}  # fmt: skip
    return load_generator(export_generator(state, tmp_path_factory.mktemp("g") / "generator"))


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def image(height=64, width=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def box(height=64, width=64, top=16, left=8, size=24) -> np.ndarray:
    """A white-on-black mask, uint8 ``[H, W]``."""
    m = np.zeros((height, width), np.uint8)
    m[top : top + size, left : left + size] = 255
    return m


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame({"image": [r[0] for r in rows], "mask": [r[1] for r in rows]})


def expected(G, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What inpaint gives for one uint8 image and a 0/255 mask."""
    t = torch.from_numpy(x).permute(2, 0, 1)[None].float() / 127.5 - 1
    m = torch.from_numpy(mask >= 128)[None, None].float()
    return to_uint8(inpaint(G, t, m))[0]


def test_batches_of_one_and_three(model):
    G, meta = model
    rows = [(png(image(seed=i)), png(box(top=4 + 8 * i))) for i in range(3)]
    one = predict_frame(G, meta, frame(rows[0]))
    three = predict_frame(G, meta, frame(*rows))
    assert one.dtype == np.uint8 and one.shape == (1, 64, 64, 3)
    assert three.dtype == np.uint8 and three.shape == (3, 64, 64, 3)
    assert np.array_equal(three[0], one[0])  # a row does not depend on the others
    for i, out in enumerate(three):
        x, mask = image(seed=i), box(top=4 + 8 * i)
        assert np.array_equal(out, expected(G, x, mask))
        assert np.array_equal(out[mask == 0], x[mask == 0])  # valid pixels exact
        assert not np.array_equal(out[mask > 0], x[mask > 0])  # the hole is G's


def test_an_image_larger_than_the_training_size(model):
    G, meta = model
    x, mask = image(90, 100), box(90, 100, top=30, left=40, size=40)  # not multiples of 16
    out = predict_frame(G, meta, frame((png(x), png(mask))))
    assert out.shape == (1, 90, 100, 3)
    assert np.array_equal(out[0], expected(G, x, mask))
    assert np.array_equal(out[0][mask == 0], x[mask == 0])


def test_empty_frame(model):
    G, meta = model
    assert predict_frame(G, meta, frame()).shape == (0, 64, 64, 3)


def test_a_mask_without_hole_returns_the_image(model):
    G, meta = model
    x = image()
    out = predict_frame(G, meta, frame((png(x), png(np.zeros((64, 64), np.uint8)))))
    assert np.array_equal(out[0], x)


def test_mask_modes_and_threshold(model):
    """Any mask mode works: luma >= 128 is hole, so grey 127 is known and 128 hole."""
    G, meta = model
    x, mask = image(), box()
    rgb_mask = np.repeat(mask[..., None], 3, axis=2)
    grey = np.where(mask > 0, 128, 127).astype(np.uint8)
    outs = [
        predict_frame(G, meta, frame((png(x), png(m))))[0]
        for m in (mask, rgb_mask, grey, mask > 0)  # L, RGB, grey levels, bilevel "1"
    ]
    for out in outs:
        assert np.array_equal(out, outs[0])


def test_alpha_is_composited_over_white_and_gray_replicated(model):
    G, meta = model
    x, mask = image(), box()
    rgba = np.concatenate([x, np.zeros((64, 64, 1), np.uint8)], axis=2)
    rgba[:32, :, 3] = 255  # the top half opaque, the bottom transparent
    out = predict_frame(G, meta, frame((png(rgba), png(mask))))[0]
    valid = mask == 0
    assert np.array_equal(out[:32][valid[:32]], x[:32][valid[:32]])
    assert (out[32:][valid[32:]] == 255).all()

    gray = image()[..., 0]
    out = predict_frame(G, meta, frame((png(gray), png(mask))))[0]
    for c in range(3):
        assert np.array_equal(out[..., c][valid], gray[valid])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [(png(image()), png(box())), (png(image(90, 100)), png(box(64, 64)))],
            "row 1: mask: 64x64 pixels, but the image is 100x90; give a mask of the image's size",
        ),
        (
            [(png(image()), png(np.full((64, 64), 255, np.uint8)))],
            "row 0: mask: every pixel is hole",
        ),
        (
            [(png(image()), png(box())), (png(image(32, 32)), png(box(32, 32, 4, 4, 8)))],
            "row 1: image: 32x32 pixels, but row 0 is 64x64; the rows of one call must have",
        ),
        ([(b"not an image", png(box()))], "row 0: image: not an image"),
        ([(png(image()), b"")], "row 0: mask: empty file"),
        ([(None, png(box()))], "row 0: image: expected PNG bytes, got None"),
        ([(png(image()), "mask.png")], "row 0: mask: expected PNG bytes, got str"),
    ],
)
def test_bad_rows_give_one_line_errors(model, rows, message):
    G, meta = model
    with pytest.raises(GanlibError) as info:
        predict_frame(G, meta, frame(*rows))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_bad_frames(model):
    G, meta = model
    with pytest.raises(GanlibError, match="needs columns image and mask .* missing mask"):
        predict_frame(G, meta, pd.DataFrame({"image": [png(image())]}))
    with pytest.raises(GanlibError, match="a generation model, not an inpainting one"):
        predict_frame(G, {**meta, "task": "generation"}, frame((png(image()), png(box()))))


def test_demo_mask():
    mask = demo_mask(90, 100, seed=1)
    assert mask.dtype == bool and mask.shape == (90, 100)
    assert 0.2 <= mask.mean() <= 0.4
    assert np.array_equal(mask, demo_mask(90, 100, seed=1))
    assert not np.array_equal(mask, demo_mask(90, 100, seed=2))
    with pytest.raises(GanlibError, match="random mask for a 2x1 image"):
        demo_mask(1, 2, seed=0)
