"""Sources: read what ``data.source`` names and yield converted samples, one at a time.

:func:`open_source` checks the location up front (a missing path, a missing column or a wrong
array type is a one-line :class:`GanlibError`) and returns a :class:`Source`. Iterating it
streams ``Sample | Skipped`` in a deterministic order: images are decoded one at a time, so
memory does not grow with the number of images. Every input is accounted for: what cannot be
used comes out as ``Skipped`` with its path and reason, never silently dropped.

Translation sources yield images of two domains, A and B: ``"a.png"`` and ``"b.png"``
together for pairs (``builtin:photos2art``, ``imagefolder`` with ``data.paired``, ``parquet``
with ``data.image_column_b``), or one of them per sample for independent domains
(``imagefolder`` with ``data.unpaired``; the loader draws A and B independently). Images of
any size are centre-cropped and resized to ``data.resolution`` one by one (``to_array``), so
a pair's two images need not have the same size or aspect ratio.

One module per source family (``builtin``, ``imagefolder``, ``parquet``, ``npz``), each with
an ``open_*`` opener; the shared pieces (:class:`Source`, :func:`make_key`, image conversion)
live in ``_common`` and are re-exported here.
"""

from __future__ import annotations

from ganlib.config import DataConfig
from ganlib.data.sources._common import IMAGE_EXTENSIONS, KEY_CHARS, Source, make_key
from ganlib.data.sources.builtin import open_builtin
from ganlib.data.sources.imagefolder import open_imagefolder
from ganlib.data.sources.npz import open_npz
from ganlib.data.sources.parquet import open_parquet

__all__ = ["IMAGE_EXTENSIONS", "KEY_CHARS", "Source", "make_key", "open_source"]


def open_source(cfg: DataConfig) -> Source:
    """Open ``cfg.source`` (SPEC section 4) for streaming.

    Images come out as ``uint8 [cfg.resolution, cfg.resolution, cfg.channels]``. Raises
    :class:`GanlibError` for a missing path, a table without a usable image column, or an
    array of the wrong type or shape.
    """
    openers = {
        "builtin": open_builtin,  # DataConfig has checked the name
        "imagefolder": open_imagefolder,
        "parquet": open_parquet,
        "npz": open_npz,
    }
    return openers[cfg.scheme](cfg)
