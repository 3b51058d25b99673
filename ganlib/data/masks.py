"""Hole masks for inpainting: boxes, free-form brush strokes, and a mix of the two.

A mask is a boolean array ``[H, W]``, True on the hole (the pixels to repair); the torch
helpers stack masks as ``[B, 1, H, W]`` float, 1 on the hole. Every mask's hole covers a
fraction of the image inside ``area_range = (lo, hi)``: shapes are added until the hole reaches
a target area drawn uniformly from the range, and a shape that would push it past ``hi`` is
refused and proposed again smaller.

- ``box``: axis-aligned rectangles, aspect ratio between 1:2 and 2:1 (Context Encoders,
  Pathak et al. 2016; usually one box, more when the boxes overlap or the image is too small).
- ``stroke``: free-form brush strokes as in DeepFill v2 (Yu et al. 2019) and LaMa (Suvorov
  et al. 2022): from a random start, 4-10 vertices joined by thick segments with round caps,
  each segment turning by a random angle; segment lengths and brush widths scale with the image.
- ``mix``: each mask is all boxes or all strokes, with probability 1/2 (LaMa's mixed masks).

Training masks come from the caller's ``numpy.random.Generator``. Evaluation masks
(:func:`eval_mask`) are fixed per sample key and seed, so every run, method and machine scores
the same holes: the generator is seeded from a SHA-256 of the key (not Python's salted
``hash()``), and the drawing uses only ``Generator.random()`` (whose doubles NumPy does not
change between versions) and integer vertex positions, so that a last-bit difference in
``sin``/``cos`` between math libraries cannot move a pixel.

The hole-area bins of the metrics are here too (:func:`area_bin`), next to the areas they bin.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from ganlib.config import MASK_KINDS

# Hole-area bins of the metrics, as (label, lo, hi) in fractions of the image: lo <= f < hi,
# the last bin closed at 1. The labels are percents, spelled so that they are valid MLflow
# metric names ("%" and "+" are not).
AREA_BINS = (
    ("0-10", 0.0, 0.1),
    ("10-20", 0.1, 0.2),
    ("20-30", 0.2, 0.3),
    ("30-40", 0.3, 0.4),
    ("40-50", 0.4, 0.5),
    ("50-100", 0.5, 1.0),
)
_MAX_PROPOSALS = 64  # shapes tried per mask before the dilation top-up (practically never hit)
_SHRINK = 0.7  # a refused stroke is proposed again this much smaller
# Stroke geometry, as fractions of the image's shorter side (DeepFill v2's 256-pixel
# generator: brush widths 12-40 px and segments up to ~60 px, i.e. 5-15 % and ~25 %).
_VERTICES = (4, 10)
_SEGMENT_LENGTH = (0.08, 0.25)
_BRUSH_WIDTH = (0.05, 0.15)
_MAX_TURN = 2 * math.pi / 5  # a segment's direction turns by at most this from the last one

_Propose = Callable[[np.random.Generator, tuple[int, int], int, int, float], np.ndarray]


def area_bin(fraction: float) -> str:
    """The label of the hole-area bin (:data:`AREA_BINS`) that ``fraction`` in [0, 1] falls in."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"hole fraction must be in [0, 1], got {fraction}")
    for label, _, hi in AREA_BINS[:-1]:
        if fraction < hi:
            return label
    return AREA_BINS[-1][0]


def random_mask(
    rng: np.random.Generator,
    shape: tuple[int, int],
    *,
    kind: str,
    area_range: tuple[float, float],
) -> np.ndarray:
    """A random hole mask, bool ``[H, W]`` (True = hole), its area fraction in ``area_range``."""
    height, width = _check_shape(shape)
    lo_px, hi_px = _area_pixels(height * width, area_range)
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; known: {', '.join(MASK_KINDS)}")
    if kind == "mix":
        kind = "box" if rng.random() < 0.5 else "stroke"
    propose = _propose_box if kind == "box" else _propose_stroke
    return _grow(rng, (height, width), propose, lo_px, hi_px)


def eval_mask(
    key: str,
    shape: tuple[int, int],
    *,
    kind: str,
    area_range: tuple[float, float],
    seed: int,
) -> np.ndarray:
    """The evaluation mask of sample ``key``: bool ``[H, W]``, the same for the same key, shape,
    kind, range and seed on every machine and in every run."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return random_mask(rng, shape, kind=kind, area_range=area_range)


def random_masks(
    rng: np.random.Generator,
    batch_size: int,
    shape: tuple[int, int],
    *,
    kind: str,
    area_range: tuple[float, float],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A batch of training masks, float ``[B, 1, H, W]``, 1 on the hole."""
    masks = [random_mask(rng, shape, kind=kind, area_range=area_range) for _ in range(batch_size)]
    return _stack(masks, device)


def eval_masks(
    keys: Sequence[str],
    shape: tuple[int, int],
    *,
    kind: str,
    area_range: tuple[float, float],
    seed: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The evaluation masks of ``keys``, float ``[B, 1, H, W]``, 1 on the hole."""
    masks = [eval_mask(k, shape, kind=kind, area_range=area_range, seed=seed) for k in keys]
    return _stack(masks, device)


def _stack(masks: list[np.ndarray], device: torch.device | str | None) -> torch.Tensor:
    return torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)).to(device)


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(s) for s in shape)
    if height < 1 or width < 1:
        raise ValueError(f"mask shape must be (H, W) with H, W >= 1, got {tuple(shape)}")
    return height, width


def _area_pixels(total: int, area_range: tuple[float, float]) -> tuple[int, int]:
    """``area_range`` as hole pixel counts ``(lo, hi)``; refuses ranges no mask can meet."""
    lo, hi = (float(a) for a in area_range)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"area_range must satisfy 0 <= lo <= hi <= 1, got {tuple(area_range)}")
    lo_px, hi_px = math.ceil(lo * total), math.floor(hi * total)
    if lo_px > hi_px:
        raise ValueError(
            f"area_range {tuple(area_range)} holds no whole number of pixels of a "
            f"{total}-pixel image; widen it"
        )
    return lo_px, hi_px


def _uniform(rng: np.random.Generator, a: float, b: float) -> float:
    # Only Generator.random(): its doubles are stable across NumPy versions (see module doc).
    return a + (b - a) * rng.random()


def _integer(rng: np.random.Generator, lo: int, hi: int) -> int:
    """An integer in [lo, hi], both included."""
    return min(lo + int(rng.random() * (hi - lo + 1)), hi)


def _grow(
    rng: np.random.Generator, shape: tuple[int, int], propose: _Propose, lo_px: int, hi_px: int
) -> np.ndarray:
    """Add proposed shapes until the hole reaches a target area in ``[lo_px, hi_px]``.

    A shape that would take the hole past ``hi_px`` is refused and the next proposal is made
    smaller, so the area never leaves the range. If the proposals run out (not seen in
    practice), the hole is grown by dilation to the target.
    """
    target = _integer(rng, lo_px, hi_px)
    mask = np.zeros(shape, dtype=bool)
    area, scale = 0, 1.0
    for _ in range(_MAX_PROPOSALS):
        if area >= target:
            return mask
        grown = mask | propose(rng, shape, target - area, hi_px - area, scale)
        grown_area = int(grown.sum())
        if grown_area <= hi_px:
            mask, area = grown, grown_area
        else:
            scale *= _SHRINK
    return _dilate_to(mask, target)


def _dilate_to(mask: np.ndarray, target: int) -> np.ndarray:
    """Grow ``mask`` at its border, in raster order, until it holds exactly ``target`` pixels."""
    mask = mask.copy()
    if not mask.any():
        mask[mask.shape[0] // 2, mask.shape[1] // 2] = True
    while (area := int(mask.sum())) < target:
        ring = np.flatnonzero(ndimage.binary_dilation(mask) & ~mask)
        mask.flat[ring[: target - area]] = True
    return mask


def _propose_box(
    rng: np.random.Generator, shape: tuple[int, int], need: int, budget: int, scale: float
) -> np.ndarray:
    """One rectangle of about ``need`` pixels and at most ``budget``; ``scale`` is unused (a box
    never exceeds the budget)."""
    height, width = shape
    area = max(1.0, min(need * _uniform(rng, 0.8, 1.2), budget))
    aspect = math.exp(_uniform(rng, -math.log(2), math.log(2)))  # height / width
    h = min(height, max(1, round(math.sqrt(area * aspect))))
    w = min(width, max(1, round(area / h)), budget // h)
    if w == 0:  # budget < h: a one-pixel-high strip instead
        h, w = 1, min(width, budget)
    top, left = _integer(rng, 0, height - h), _integer(rng, 0, width - w)
    box = np.zeros(shape, dtype=bool)
    box[top : top + h, left : left + w] = True
    return box


def _propose_stroke(
    rng: np.random.Generator, shape: tuple[int, int], need: int, budget: int, scale: float
) -> np.ndarray:
    """One brush stroke: a polyline of thick, round-capped segments; ``scale`` shrinks it."""
    height, width = shape
    side = min(height, width)
    radius = max(0.5, scale * side * _uniform(rng, *_BRUSH_WIDTH) / 2)
    n_vertices = max(1, round(scale * _integer(rng, *_VERTICES)))
    vertices = [(_integer(rng, 0, height - 1), _integer(rng, 0, width - 1))]
    angle = _uniform(rng, 0.0, 2 * math.pi)
    for _ in range(n_vertices - 1):
        angle += _uniform(rng, -_MAX_TURN, _MAX_TURN)
        length = scale * side * _uniform(rng, *_SEGMENT_LENGTH)
        y, x = vertices[-1]
        # Integer vertices, clipped to the image: no rounding differences between machines.
        vertices.append(
            (
                min(max(round(y + length * math.sin(angle)), 0), height - 1),
                min(max(round(x + length * math.cos(angle)), 0), width - 1),
            )
        )
    return _paint_polyline(shape, np.array(vertices, dtype=np.float64), radius)


def _paint_polyline(shape: tuple[int, int], vertices: np.ndarray, radius: float) -> np.ndarray:
    """The pixels whose centres lie within ``radius`` of a polyline, ``vertices`` ``[V, 2]``
    (y, x); all segments in one vectorised pass over the polyline's bounding box."""
    if len(vertices) == 1:
        vertices = np.concatenate([vertices, vertices])  # a dot: one zero-length segment
    reach = math.ceil(radius)
    top, left = np.maximum(vertices.min(axis=0).astype(int) - reach, 0)
    bottom = min(int(vertices[:, 0].max()) + reach, shape[0] - 1)
    right = min(int(vertices[:, 1].max()) + reach, shape[1] - 1)
    y0 = vertices[:-1, 0, None, None]  # [S, 1, 1], S = V - 1 segments
    x0 = vertices[:-1, 1, None, None]
    dy = vertices[1:, 0, None, None] - y0  # [S, 1, 1]
    dx = vertices[1:, 1, None, None] - x0
    py = np.arange(top, bottom + 1, dtype=np.float64)[None, :, None] - y0  # [S, h, 1]
    px = np.arange(left, right + 1, dtype=np.float64)[None, None, :] - x0  # [S, 1, w]
    length2 = dy * dy + dx * dx
    # Projection of each pixel on each segment, clamped to its ends (round caps); a
    # zero-length segment has dy = dx = 0, so t = 0 whatever the divisor.
    t = np.clip((py * dy + px * dx) / np.where(length2 > 0, length2, 1.0), 0.0, 1.0)  # [S, h, w]
    ey, ex = py - t * dy, px - t * dx
    near = ((ey * ey + ex * ex) <= radius * radius).any(axis=0)  # [h, w]
    stroke = np.zeros(shape, dtype=bool)
    stroke[top : bottom + 1, left : right + 1] = near
    return stroke
