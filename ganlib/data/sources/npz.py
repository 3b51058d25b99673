"""``npz:PATH``: a ``numpy.savez`` archive with ``x`` (uint8 images) and optionally ``y``."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from ganlib.config import DataConfig
from ganlib.data.images import to_array
from ganlib.data.records import MAX_CLASSES, Sample, Skipped
from ganlib.data.sources._common import Source, _label, make_key
from ganlib.errors import GanlibError

# -- npz:PATH --------------------------------------------------------------------------------


def open_npz(cfg: DataConfig) -> Source:
    path = Path(cfg.location)
    if not path.is_file():
        raise GanlibError(f"data.source: npz file '{path}' does not exist")
    if not zipfile.is_zipfile(path):
        raise GanlibError(f"data.source: '{path}' is not an .npz archive (numpy.savez)")
    with np.load(path) as npz:  # members are read only when indexed
        arrays = ", ".join(npz.files) or "none"
        if "x" not in npz.files:
            raise GanlibError(f"data.source: npz '{path}' has no array 'x'; arrays: {arrays}")
        try:
            y = npz["y"] if "y" in npz.files else None
        except ValueError as exc:  # an object array: numpy refuses to unpickle it
            raise GanlibError(f"data.source: npz '{path}': y: {exc}") from None
    with zipfile.ZipFile(path) as zf:
        if "x.npy" not in zf.namelist():
            raise GanlibError(
                f"data.source: npz '{path}': its member x is not an .npy array; write the "
                "archive with numpy.savez(path, x=images)"
            )
        with zf.open("x.npy") as fp:
            shape, fortran_order, dtype = _npy_header(fp, path)
    ok_shape = len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3, 4))
    if dtype != np.uint8 or not ok_shape or 0 in shape[1:]:
        raise GanlibError(
            f"data.source: npz '{path}': x is {dtype} {shape}, expected uint8 [N, H, W] or "
            "[N, H, W, C] with C = 1, 3 or 4"
        )
    if shape[1] * shape[2] > cfg.max_image_pixels:  # every row is that size: refuse them all
        raise GanlibError(
            f"data.source: npz '{path}': x holds {shape[1]}x{shape[2]} images, over "
            f"data.max_image_pixels ({cfg.max_image_pixels}); resize them or raise the limit"
        )
    if y is not None and (y.shape != (shape[0],) or not np.issubdtype(y.dtype, np.integer)):
        raise GanlibError(
            f"data.source: npz '{path}': y is {y.dtype} {y.shape}, expected {shape[0]} integers"
        )
    if y is not None:  # y is in memory anyway: check every label before any image is read
        bad = np.flatnonzero((y < 0) | (y >= MAX_CLASSES))
        if len(bad):
            where = f"data.source: npz '{path}': y[{bad[0]}]"
            _label(y[bad[0]].item(), where, unlabelled="save the archive without y to ignore it")
    items = partial(_npz_items, path, shape, fortran_order, y, cfg)
    return Source(classes=None, total=shape[0], items=items)


def _npy_header(fp: IO[bytes], path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)
    raise GanlibError(f"data.source: npz '{path}': x.npy has unsupported format {version}")


def _npy_rows(path: Path, shape: tuple[int, ...], fortran_order: bool) -> Iterator[np.ndarray]:
    """``x[i]`` one at a time, read from the (possibly compressed) zip member as a stream."""
    if fortran_order:
        # Column-major items are not contiguous in the file; load x whole (rare: np.save of
        # a transposed array).
        with np.load(path) as npz:
            yield from npz["x"]
        return
    size = math.prod(shape[1:])
    with zipfile.ZipFile(path) as zf, zf.open("x.npy") as fp:
        _npy_header(fp, path)
        for _ in range(shape[0]):
            buf = fp.read(size)
            if len(buf) != size:
                raise GanlibError(f"data.source: npz '{path}': x.npy is truncated")
            yield np.frombuffer(buf, dtype=np.uint8).reshape(shape[1:])


def _npz_items(
    path: Path,
    shape: tuple[int, ...],
    fortran_order: bool,
    y: np.ndarray | None,
    cfg: DataConfig,
) -> Iterator[Sample | Skipped]:
    for i, image in enumerate(_npy_rows(path, shape, fortran_order)):
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]  # Pillow wants [H, W] for gray
        # [H, W] -> L, [H, W, 3] -> RGB, [H, W, 4] -> RGBA (composited over white)
        img = Image.fromarray(np.ascontiguousarray(image))
        arr = to_array(img, channels=cfg.channels, resolution=cfg.resolution)
        label = None if y is None else int(y[i])  # checked by open_npz
        yield Sample(make_key(path.stem, f"{i:07d}"), {"png": arr}, label, f"{path}#{i}")
