"""What a source yields: a usable sample, or a skipped input with its reason."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Labels are class indices 0 <= y < MAX_CLASSES: a bound on what a source may claim, so that
# a stray 1e9 is refused instead of becoming a billion-entry class list (summaries, one-hot
# heads, class-conditional embeddings all grow with the largest label).
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class Sample:
    """One converted sample, ready to be written to a shard.

    ``images`` maps the WebDataset field name to a ``uint8`` array ``[H, W, C]`` (C = 1 or 3),
    already converted to ``data.channels`` and resized to ``data.resolution``: ``"png"`` for
    single images, ``"a.png"`` / ``"b.png"`` for translation pairs.
    """

    key: str  # stable and unique within a source; letters, digits, "_" and "-" only
    images: dict[str, np.ndarray]
    label: int | None  # class index 0 <= label < MAX_CLASSES, or None when it has no label
    origin: str  # where it came from (a path, "path#row", "builtin:digits#17"), for people


@dataclass(frozen=True)
class Skipped:
    """An input that could not be used; it is counted and listed in ``stats.json``."""

    path: str
    reason: str
