"""``builtin:digits``, ``builtin:photos`` and ``builtin:photos2art``: data shipped in wheels."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from ganlib.config import DataConfig
from ganlib.data.images import UnusableImage, load_image, to_array
from ganlib.data.records import Sample, Skipped
from ganlib.data.sources._common import Source, make_key
from ganlib.data.styles import cartoon
from ganlib.errors import GanlibError

# builtin:photos -- photographs bundled inside the scikit-image and scikit-learn wheels, read
# straight from the installed package (skimage.data's fetchers may try to download).
PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "brick": ("skimage", "data/brick.png"),
    "camera": ("skimage", "data/camera.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "coins": ("skimage", "data/coins.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "immunohistochemistry": ("skimage", "data/ihc.png"),
    "moon": ("skimage", "data/moon.png"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),
    "motorcycle_right": ("skimage", "data/motorcycle_right.png"),
    "page": ("skimage", "data/page.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "text": ("skimage", "data/text.png"),
    "china": ("sklearn.datasets", "images/china.jpg"),
    "flower": ("sklearn.datasets", "images/flower.jpg"),
}
PHOTO_SIDES = (96, 128, 192)  # patch sides in original pixels; the stride is half a side
# builtin:photos2art -- the same patches as pairs: A the photo, B its rendering in this style.
PHOTO_STYLES = {"photos": None, "photos2art": cartoon}


def open_builtin(cfg: DataConfig) -> Source:
    """Open ``builtin:digits``, ``builtin:photos`` or ``builtin:photos2art``."""
    # DataConfig has checked the name
    return _digits(cfg) if cfg.location == "digits" else _photos(cfg)


# -- builtin:digits --------------------------------------------------------------------------


def _digits(cfg: DataConfig) -> Source:
    from sklearn.datasets import load_digits  # a slow import; only this source needs it

    digits = load_digits()  # 1,797 images [8, 8] of 0..16, shipped inside scikit-learn
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # [N, 8, 8]

    def items() -> Iterator[Sample | Skipped]:
        for i, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
            arr = to_array(Image.fromarray(image), channels=cfg.channels, resolution=cfg.resolution)
            yield Sample(
                make_key("digits", f"{i:05d}"), {"png": arr}, int(label), f"builtin:digits#{i}"
            )

    return Source(classes=[str(d) for d in range(10)], total=len(pixels), items=items)


# -- builtin:photos --------------------------------------------------------------------------


def _photos(cfg: DataConfig) -> Source:
    """``builtin:photos`` (``png``) or ``builtin:photos2art`` (``a.png`` photo, ``b.png`` art)."""
    paths = {
        name: importlib.resources.files(pkg).joinpath(rel) for name, (pkg, rel) in PHOTOS.items()
    }
    total = 0
    for path in paths.values():
        try:
            with Image.open(path) as img:  # the header only
                total += sum(1 for _ in _patch_grid(*img.size))
        except OSError as exc:
            raise GanlibError(
                f"data.source: {cfg.source} cannot read {path} ({exc}); reinstall "
                "scikit-image and scikit-learn"
            ) from None
    return Source(classes=None, total=total, items=partial(_photo_items, paths, cfg))


def _patch_grid(width: int, height: int) -> Iterator[tuple[int, int, int]]:
    for side in PHOTO_SIDES:
        stride = side // 2
        for y in range(0, height - side + 1, stride):
            for x in range(0, width - side + 1, stride):
                yield side, y, x


def _photo_items(paths: dict[str, Path], cfg: DataConfig) -> Iterator[Sample | Skipped]:
    source, style = cfg.location, PHOTO_STYLES[cfg.location]
    for name, path in paths.items():
        try:
            photo = load_image(path, max_pixels=cfg.max_image_pixels)
        except UnusableImage as exc:  # only when data.max_image_pixels is set very low
            yield Skipped(str(path), exc.reason)
            continue
        for side, y, x in _patch_grid(*photo.size):
            patch = photo.crop((x, y, x + side, y + side))
            arr = to_array(patch, channels=cfg.channels, resolution=cfg.resolution)
            images = {"png": arr} if style is None else {"a.png": arr, "b.png": style(arr)}
            key = make_key(source, name, f"s{side}", f"y{y}", f"x{x}")
            yield Sample(key, images, None, f"builtin:{source}#{name}/s{side}/y{y}/x{x}")
