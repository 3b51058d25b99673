"""Pieces every source family shares: :class:`Source`, sample keys and image conversion.

The family modules and ``__init__`` (which re-exports the public names) import from here, so
no family module needs ``ganlib.data.sources`` itself at load time: no import cycle.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ganlib.config import DataConfig
from ganlib.data.images import load_image, to_array
from ganlib.data.records import MAX_CLASSES, Sample, Skipped
from ganlib.errors import GanlibError

# WebDataset splits a tar member name at the first dot after the last slash, so keys hold
# neither; these characters survive every file system and shell untouched.
KEY_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_PLAIN_PART = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class Source:
    """An opened source: iterate it (as often as needed) for ``Sample | Skipped``."""

    classes: list[str] | None  # class names indexed by label; None when unnamed or unlabelled
    total: int | None  # how many items an iteration yields, when cheaply known (progress bars)
    items: Callable[[], Iterator[Sample | Skipped]] = field(repr=False)
    # The same items as picklable zero-argument callables (plus ready Skipped), in the same
    # order, for a process pool to decode (imagefolder); None: items() is all there is.
    tasks: Callable[[], Iterator[Callable[[], Sample | Skipped] | Skipped]] | None = field(
        default=None, repr=False
    )

    def __iter__(self) -> Iterator[Sample | Skipped]:
        return self.items()

    def lazy(self) -> Iterator[Sample | Skipped | Callable[[], Sample | Skipped]]:
        """What a parallel writer maps over: the tasks when the source has them, else the
        items themselves."""
        return self.tasks() if self.tasks is not None else self.items()


def make_key(*parts: str) -> str:
    """A stable sample key from one or more parts, made of :data:`KEY_CHARS` only.

    Parts made of letters, digits and ``_`` are joined with ``-`` as they are
    (``make_key("digits", "00017") == "digits-00017"``). Otherwise (a dot, a slash, a space,
    a ``-`` inside a part, ...) the slug is lossy, so ``--`` and a 10-hex-digit SHA-256 of the
    exact parts are appended: ``cat/img.1`` and ``cat/img_1`` stay distinct. Plain keys never
    contain ``--``, so they never meet a hashed one. Stable across runs and machines.
    """
    assert parts, "make_key needs at least one part"
    key = "-".join(_UNSAFE.sub("_", part) or "_" for part in parts)
    if all(_PLAIN_PART.fullmatch(part) for part in parts):
        return key
    # JSON keeps the part boundaries (and odd file-name bytes) in what is hashed.
    digest = hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:10]
    return f"{key}--{digest}"


def _convert(src: str | os.PathLike | bytes, cfg: DataConfig) -> np.ndarray:
    img = load_image(src, max_pixels=cfg.max_image_pixels)
    return to_array(img, channels=cfg.channels, resolution=cfg.resolution)


def _label(
    value: object, where: str, classes: list[str] | None = None, unlabelled: str = ""
) -> int | None:
    """The class index of a source's label ``value`` (None: no label), or a one-line
    :class:`GanlibError` naming ``where`` (the sample) when it is not an integer
    ``0 <= value < K``: K is the number of ``classes`` when the source names them, else
    :data:`~ganlib.data.records.MAX_CLASSES`. Negative labels are refused rather than read
    as "no label" (Hugging Face's -1), which silently took those samples out of their class;
    ``unlabelled`` says how the source marks a sample without a label instead.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise GanlibError(f"{where}: label {value!r} is not an integer class index")
    n = len(classes) if classes else MAX_CLASSES
    if not 0 <= value < n:
        bound = "classes named in the source" if classes else "ganlib.data.records.MAX_CLASSES"
        hint = f"; a negative label is not 'no label': {unlabelled}" if value < 0 else ""
        raise GanlibError(
            f"{where}: label {value} is not a class index 0 <= y < {n:,} ({bound}){hint}"
        )
    return int(value)


def _check_classes(classes: list[str] | None, where: str) -> list[str] | None:
    """``classes`` if at most :data:`~ganlib.data.records.MAX_CLASSES`; None for none."""
    if classes and len(classes) > MAX_CLASSES:
        raise GanlibError(
            f"{where}: {len(classes):,} classes, more than ganlib's {MAX_CLASSES:,} "
            "(ganlib.data.records.MAX_CLASSES)"
        )
    return classes or None
