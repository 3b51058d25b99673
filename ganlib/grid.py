"""Image grids (sample sheets) as PNG files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganlib.data.pixels import to_uint8


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """Tile ``[N, C, H, W]`` images in [-1, 1] into one ``uint8 [H', W', C]`` sheet."""
    tiles = to_uint8(images)  # [N, H, W, C]
    n, h, w, c = tiles.shape
    rows = math.ceil(n / nrow)
    sheet = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), np.uint8)
    for i, tile in enumerate(tiles):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        sheet[y : y + h, x : x + w] = tile
    return sheet


def save_png(array: np.ndarray, path: Path) -> Path:
    """Write a ``uint8 [H, W, C]`` array (C = 1 or 3) as PNG, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path


MAX_TILE = 256  # a sheet's tiles are at most this many pixels a side (8x8 of 1024 px: 64 Mpx)


def save_grid(
    images: torch.Tensor, path: Path, nrow: int = 8, scale: int = 1, max_tile: int | None = MAX_TILE
) -> Path:
    """Save a grid of ``[N, C, H, W]`` images in [-1, 1]; ``scale`` enlarges small images,
    and images larger than ``max_tile`` are shrunk to it (area averaging) for the sheet;
    ``max_tile=None`` keeps every pixel."""
    if max_tile is not None and max(images.shape[-2:]) > max_tile:
        side = max(images.shape[-2:])
        size = (images.shape[-2] * max_tile // side, images.shape[-1] * max_tile // side)
        images = torch.nn.functional.interpolate(images.float(), size=size, mode="area")
    sheet = make_grid(images, nrow)
    if scale > 1:
        sheet = sheet.repeat(scale, axis=0).repeat(scale, axis=1)
    return save_png(sheet, path)
