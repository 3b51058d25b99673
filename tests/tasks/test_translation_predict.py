"""The translation predict contract (pyfunc and CLI): a DataFrame of image bytes and
directions in, ``uint8 [N, H, W, C]`` out; any size; one-line errors naming the row."""

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import ganlib.tasks.translation as translation
from ganlib.artifacts import export_generator, load_generator
from ganlib.data.pixels import to_uint8
from ganlib.errors import GanlibError
from ganlib.models.cyclegan import CycleGenerators
from ganlib.models.unet import UNetGenerator
from ganlib.tasks.translation import predict_frame, translate

R = 32  # the training size


def export(mode: str, directory):
    """``(G, meta)`` of an exported tiny pix2pix or CycleGAN, loaded back."""
    torch.manual_seed(0)
    G = UNetGenerator(3, 3, width=4, resolution=R) if mode == "paired" else (
        CycleGenerators(3, width=4, n_blocks=1))  # fmt: skip
    state = {"G_ema": G.state_dict(), "model_config": G.config, "task": "translation",
             "task_config": {"mode": mode}, "resolution": R, "channels": 3, "classes": None,
             "step": 0, "identity": "test"}  # fmt: skip
    return load_generator(export_generator(state, directory))


@pytest.fixture(scope="module")
def pix2pix(tmp_path_factory):
    return export("paired", tmp_path_factory.mktemp("pix2pix"))


@pytest.fixture(scope="module")
def cyclegan(tmp_path_factory):
    return export("unpaired", tmp_path_factory.mktemp("cyclegan"))


@pytest.fixture(params=["pix2pix", "cyclegan"])
def model(request):
    return request.getfixturevalue(request.param)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def photo(h: int, w: int, seed: int, channels: int = 3) -> np.ndarray:
    shape = (h, w, channels) if channels > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def expected(G, arr: np.ndarray, direction: str = "AtoB") -> np.ndarray:
    net = G.generator(direction) if isinstance(G, CycleGenerators) else G
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1
    return to_uint8(translate(net, x))[0]


def test_batches_of_one_and_three_give_each_image_its_own_translation(model):
    G, meta = model
    images = [photo(R, R, seed) for seed in range(3)]
    one = predict_frame(G, meta, pd.DataFrame({"image": [png(images[0])]}))
    three = predict_frame(G, meta, pd.DataFrame({"image": [png(x) for x in images]}))
    assert one.dtype == three.dtype == np.uint8
    assert one.shape == (1, R, R, 3) and three.shape == (3, R, R, 3)
    np.testing.assert_array_equal(three[0], one[0])  # independent of the other rows
    for row, x in zip(three, images, strict=True):
        np.testing.assert_array_equal(row, expected(G, x))


def test_an_input_larger_than_the_training_size_keeps_its_size(model):
    G, meta = model
    x = photo(90, 100, seed=5)  # 100 wide, 90 high: not a multiple of G's
    out = predict_frame(G, meta, pd.DataFrame({"image": [png(x)]}))
    assert out.shape == (1, 90, 100, 3)
    np.testing.assert_array_equal(out[0], expected(G, x))


def test_alpha_and_gray_inputs_become_rgb(model):
    G, meta = model
    gray = photo(R, R, seed=1, channels=1)
    rgba = np.dstack([photo(R, R, seed=2), np.full((R, R), 255, np.uint8)])
    out = predict_frame(G, meta, pd.DataFrame({"image": [png(gray), png(rgba)]}))
    np.testing.assert_array_equal(out[0], expected(G, np.repeat(gray[:, :, None], 3, axis=2)))
    np.testing.assert_array_equal(out[1], expected(G, rgba[:, :, :3]))  # opaque: as RGB


def test_directions_of_a_cyclegan(cyclegan):
    G, meta = cyclegan
    x = photo(R, R, seed=3)
    frame = pd.DataFrame({"image": [png(x)] * 3, "direction": ["BtoA", None, "AtoB"]})
    out = predict_frame(G, meta, frame)
    np.testing.assert_array_equal(out[0], expected(G, x, "BtoA"))
    np.testing.assert_array_equal(out[1], expected(G, x, "AtoB"))  # missing: the default
    np.testing.assert_array_equal(out[2], out[1])
    assert not np.array_equal(out[0], out[1])


def test_a_paired_model_has_no_btoa(pix2pix):
    G, meta = pix2pix
    frame = pd.DataFrame({"image": [png(photo(R, R, 0))] * 2, "direction": ["AtoB", "BtoA"]})
    with pytest.raises(GanlibError) as info:
        predict_frame(G, meta, frame)
    assert str(info.value) == (
        "direction: row 1 asks for BtoA, but this paired (pix2pix) model translates AtoB "
        "only; BtoA needs a CycleGAN (translation.mode: unpaired)"
    )
    out = predict_frame(G, meta, frame.iloc[:1])
    assert out.shape == (1, R, R, 3)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"png": [b"x"]}, "image: the input needs a column 'image' of image bytes; it has png"),
        ({"image": [b"", b"x"]}, "image: row 0: empty file"),
        ({"image": ["ok", b"junk"]}, "image: row 0 is a str, not image bytes"),
        ({"image": ["VALID", b"junk"]}, "image: row 1: not an image: cannot identify image file"),
        ({"image": ["VALID", "SMALL"]}, "image: row 1 is 20x10 pixels, row 0 32x32; send images"),
        ({"image": ["VALID"], "direction": ["sideways"]}, "direction: row 0 is 'sideways'; use"),
        ({"image": ["VALID"], "direction": ["btoa"]}, "direction: row 0 is 'btoa'; use AtoB or"),
    ],
)
def test_bad_input_is_a_one_line_error_naming_the_row(model, frame, message):
    G, meta = model
    valid, small = png(photo(R, R, 0)), png(photo(10, 20, 0))
    frame = {k: [{"VALID": valid, "SMALL": small}.get(v, v) for v in vs] for k, vs in frame.items()}
    with pytest.raises(GanlibError) as info:
        predict_frame(G, meta, pd.DataFrame(frame))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_oversized_inputs_are_refused_before_decoding(model):
    G, meta = model
    limits = translation.TASK.limits.override({"max_pixels": 30 * 30})
    with pytest.raises(GanlibError, match=r"image: row 0: 32x32 pixels, more than the 900 per"):
        predict_frame(G, meta, pd.DataFrame({"image": [png(photo(R, R, 0))]}), limits)


def test_an_empty_frame_gives_an_empty_array(model):
    G, meta = model
    out = predict_frame(G, meta, pd.DataFrame({"image": pd.Series([], dtype=object)}))
    assert out.shape == (0, R, R, 3) and out.dtype == np.uint8
