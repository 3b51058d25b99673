"""Image decoding and conversion: the one place where files become ``uint8`` arrays.

Every source goes through :func:`load_image` (bytes or a path -> a fully decoded, upright PIL
image, or :class:`UnusableImage` with a short reason) and :func:`to_array` (any Pillow mode ->
``uint8 [R, R, C]``). The shard writer and the loader store and read arrays with
:func:`encode_png` / :func:`decode_png`.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:
    import pyspng
except ImportError:  # no wheel for the platform (Linux on ARM), or a torch-only GPU box
    pyspng = None

# Anti-aliased when shrinking (Pillow widens the kernel by the scale factor), sharp when growing.
RESAMPLE = Image.Resampling.LANCZOS
PNG_COMPRESS_LEVEL = 6  # fixed, so the same array always gives the same PNG bytes
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # the first 8 bytes of every PNG file


class UnusableImage(Exception):
    """An input that cannot be used as an image; ``reason`` is short and meant for people."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TooLarge(UnusableImage):
    """An image over a pixel limit, refused from its header before any pixel is decoded.

    ``pixels`` is its size in words: ``5000x4000`` (width x height), or ``over 89478485``
    where Pillow's own decompression-bomb check (``Image.MAX_IMAGE_PIXELS``) stops it before
    it reports a size.
    """

    def __init__(self, reason: str, pixels: str):
        super().__init__(reason)
        self.pixels = pixels


def load_image(source: str | os.PathLike | bytes, *, max_pixels: int) -> Image.Image:
    """Decode a file (a path) or encoded bytes into a fully loaded, upright PIL image.

    EXIF orientation is applied. Images with more than ``max_pixels`` pixels are rejected
    before their pixels are decoded; Pillow's own decompression-bomb warning (above
    ``Image.MAX_IMAGE_PIXELS``) counts as a rejection too. The mode is left as decoded
    (``to_array`` converts it). Raises :class:`UnusableImage` for empty, missing, unreadable,
    non-image, truncated or oversized inputs and for directories.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise UnusableImage("empty file")
        return _decode(io.BytesIO(source), max_pixels)

    path = Path(source)
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise UnusableImage("dangling symbolic link") from None
        raise UnusableImage("unreadable: No such file or directory") from None
    except OSError as exc:
        raise UnusableImage(f"unreadable: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UnusableImage("is a directory")
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or device would block or never end when read.
        raise UnusableImage("not a regular file")
    if st.st_size == 0:
        raise UnusableImage("empty file")
    try:
        with open(path, "rb") as fp:
            return _decode(fp, max_pixels)
    except OSError as exc:  # _decode turns its own errors into UnusableImage: this is open()
        raise UnusableImage(f"unreadable: {exc.strerror}") from None


def image_size(data: bytes, *, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` of encoded image bytes from their header alone: no pixel is
    decoded (before EXIF orientation, which does not change the count). Raises
    :class:`UnusableImage` as :func:`load_image` does, :class:`TooLarge` over ``max_pixels``."""
    if len(data) == 0:
        raise UnusableImage("empty file")
    with _open(io.BytesIO(data), max_pixels) as img:
        return img.size


def _open(fp: io.IOBase, max_pixels: int) -> Image.Image:
    """``Image.open``: the header only, its size checked against ``max_pixels``."""
    # catch_warnings restores the filters on exit, so nothing leaks into the caller.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fp)
        except Image.DecompressionBombError as exc:  # over twice Pillow's limit
            pixels = f"over {2 * Image.MAX_IMAGE_PIXELS}"
            raise TooLarge(f"decompression bomb: {exc}", pixels) from None
        except Image.DecompressionBombWarning as exc:
            raise TooLarge(f"decompression bomb: {exc}", f"over {Image.MAX_IMAGE_PIXELS}") from None
        except UnidentifiedImageError:
            raise UnusableImage("not an image: cannot identify image file") from None
        except OSError as exc:
            raise UnusableImage(f"unreadable: {exc.strerror or exc}") from None
    # Image.open reads only the header: check the size before any pixel is decoded.
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        reason = f"decompression bomb: {width}×{height} pixels > limit {max_pixels}"
        raise TooLarge(reason, f"{width}x{height}")  # as image viewers write it in messages
    return img


def _decode(fp: io.IOBase, max_pixels: int) -> Image.Image:
    img = _open(fp, max_pixels)
    try:
        img.load()
        return ImageOps.exif_transpose(img)
    # Decoders of hostile or damaged files raise many types (OSError, SyntaxError,
    # ValueError, struct.error, ...): any of them means this one input is unusable.
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnusableImage(f"truncated or corrupt image: {message}") from None


def to_array(img: Image.Image, *, channels: int, resolution: int) -> np.ndarray:
    """Convert any Pillow image to ``uint8 [resolution, resolution, channels]``.

    Modes: palette ("P", with or without transparency), bilevel ("1"), "L", "RGB", "CMYK",
    "YCbCr" and the other modes Pillow converts to RGB. Transparent images ("RGBA", "LA",
    "PA", "P" with transparency) are composited over a WHITE background. 16-bit and 32-bit
    integer grayscale ("I;16*", "I") are read as 0..65535 and scaled (not clipped) to 0..255.
    Float ("F") is taken as 0..1 when all its values lie there, else as 0..255 (Pillow's own
    convention) and clipped. Then 3 -> 1 channel uses ITU-R 601 luma (Pillow "L"), 1 -> 3
    replicates the gray value, and the image is centre-cropped to a square and resized with
    Lanczos (anti-aliased when shrinking; small images are enlarged).
    """
    assert channels in (1, 3), channels
    img = _to_l_or_rgb(img)
    if channels == 1 and img.mode == "RGB":
        img = img.convert("L")
    img = ImageOps.fit(img, (resolution, resolution), method=RESAMPLE)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], channels, axis=2)  # [R, R] -> [R, R, C]
    assert arr.shape == (resolution, resolution, channels), arr.shape
    return np.ascontiguousarray(arr)


def _to_l_or_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    if mode.startswith("I"):  # "I" (int32) and "I;16", "I;16B", "I;16L", "I;16N", ...
        values = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        # Round to nearest: 65535 -> 255, 32768 -> 128, 257 -> 1.
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        mode == "P" and "transparency" in img.info
    )
    try:
        if has_alpha:
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
            # Gray stays gray: luma of (v, v, v) is exactly v.
            return rgb.convert("L") if mode in ("LA", "La") else rgb
        return img.convert("RGB")
    except ValueError:
        raise UnusableImage(f"unsupported image mode {mode!r}") from None


def encode_png(arr: np.ndarray) -> bytes:
    """``uint8 [H, W, 1]`` (stored as mode L) or ``[H, W, 3]`` (RGB) -> PNG bytes.

    Deterministic: fixed compression level and no metadata chunks, so equal arrays give
    equal bytes (with the same Pillow build).
    """
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] in (1, 3), (
        arr.dtype,
        arr.shape,
    )
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes written by :func:`encode_png` -> ``uint8 [H, W, C]`` (C = 1 for L, 3 for RGB).

    With libspng (``pyspng``, a dependency where it has wheels; StyleGAN2-ADA's loader uses it
    too), about 3x faster than Pillow: the loader's decoding is a few percent of a small
    model's training step. The same pixels either way (tested); Pillow where it is missing.
    Raises ``ValueError`` (or the decoder's own error) on data that is not such a PNG.
    """
    if pyspng is None:
        return decode_png_pillow(data)
    _check_crcs(data)  # pyspng has libspng ignore them: damaged bytes would decode as pixels
    arr = pyspng.load(data)  # [H, W] for L, [H, W, 3] for RGB; a fresh, writable array
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"not an 8-bit L or RGB PNG ({arr.dtype}, shape {arr.shape})")
    return arr[:, :, None] if arr.ndim == 2 else arr


def _check_crcs(data: bytes) -> None:
    """``ValueError`` unless ``data`` is a PNG signature and whole chunks whose CRC-32s match
    (a few microseconds: zlib's CRC over the bytes, a handful of chunks)."""
    if data[:8] != PNG_SIGNATURE:
        raise ValueError("no PNG signature")
    view, at = memoryview(data), 8
    while at < len(data):  # a chunk: length (4 bytes), type (4), data (length), CRC (4)
        end = at + 8 + struct.unpack_from(">I", data, at)[0] if at + 12 <= len(data) else None
        if end is None or end + 4 > len(data):
            raise ValueError("truncated PNG")
        if zlib.crc32(view[at + 4 : end]) != struct.unpack_from(">I", data, end)[0]:
            raise ValueError(f"CRC mismatch in the {bytes(view[at + 4 : at + 8])!r} chunk")
        at = end + 4


def decode_png_pillow(data: bytes) -> np.ndarray:
    """:func:`decode_png` through Pillow."""
    with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
        if img.mode not in ("L", "RGB"):
            raise ValueError(f"not an 8-bit L or RGB PNG (mode {img.mode})")
        arr = np.array(img, dtype=np.uint8)  # a writable copy
    return arr[:, :, None] if arr.ndim == 2 else arr


def input_array(
    source: str | os.PathLike | bytes, *, channels: int, name: str, max_pixels: int = 89_478_485
) -> np.ndarray:
    """A user's image for an image-to-image model, at its own size: ``uint8 [H, W, channels]``.

    The conversions of :func:`to_array` without the crop and resize: transparent images are
    composited over white, a grayscale image given to an RGB model has its value replicated,
    an RGB one given to a grayscale model becomes its luma. Raises a one-line
    :class:`~ganlib.errors.GanlibError` naming ``name`` (the file or column) when the input
    is not a usable image, or is over ``max_pixels``: refused from its header, as
    :func:`input_pixels` refuses it.
    """
    assert channels in (1, 3), channels
    try:
        img = _to_l_or_rgb(load_image(source, max_pixels=max_pixels))
    except UnusableImage as exc:
        raise _input_error(name, exc, max_pixels) from None
    if channels == 1 and img.mode == "RGB":
        img = img.convert("L")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], channels, axis=2)  # [H, W] -> [H, W, C]
    return np.ascontiguousarray(arr)


def input_pixels(data: bytes, *, name: str, max_pixels: int) -> int:
    """The pixel count of a user's encoded image from its header alone (nothing is decoded):
    the check a model runs on every image of a request before decoding any. Raises the
    one-line :class:`~ganlib.errors.GanlibError` of :func:`input_array` naming ``name``."""
    try:
        width, height = image_size(data, max_pixels=max_pixels)
    except UnusableImage as exc:
        raise _input_error(name, exc, max_pixels) from None
    return width * height


def _input_error(name: str, exc: UnusableImage, max_pixels: int) -> Exception:
    from ganlib.errors import GanlibError

    if isinstance(exc, TooLarge):
        return GanlibError(
            f"{name}: {exc.pixels} pixels, more than the {max_pixels} per image this model "
            "takes; downscale it"
        )
    return GanlibError(f"{name}: {exc.reason}")
