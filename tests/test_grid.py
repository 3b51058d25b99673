"""Sample sheets: tiles, padding, and large images shrunk for the sheet."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ganlib.grid import MAX_TILE, make_grid, save_grid


def test_tiles_sit_on_a_padded_grid():
    images = torch.linspace(-1, 1, 3).reshape(3, 1, 1, 1).expand(3, 1, 4, 4)
    sheet = make_grid(images, nrow=2, pad=2)
    assert sheet.shape == (2 * 6 + 2, 2 * 6 + 2, 1)
    assert (sheet[2:6, 2:6] == 0).all() and (sheet[2:6, 8:12] == 128).all()
    assert (sheet[8:12, 2:6] == 255).all() and (sheet[8:12, 8:12] == 0).all()  # no 4th image


def test_images_above_the_tile_size_are_area_averaged_down(tmp_path):
    """1024-pixel samples: an 8x8 sheet of full tiles would be 64 Mpx; each tile is shrunk to
    MAX_TILE by area averaging (a 4x4 checkerboard block averages to mid grey)."""
    big = torch.ones(2, 3, 1024, 1024)
    big[..., ::2, ::2] = -1
    big[..., 1::2, 1::2] = -1  # a one-pixel checkerboard: its 4x4 means are 0
    path = save_grid(big, tmp_path / "sheet.png", nrow=2)
    sheet = np.asarray(Image.open(path))
    assert sheet.shape == (MAX_TILE + 4, 2 * MAX_TILE + 6, 3)
    assert np.abs(sheet[2 : 2 + MAX_TILE, 2 : 2 + MAX_TILE].astype(int) - 128).max() <= 1
    full = save_grid(big[:1, :, :300, :300], tmp_path / "full.png", nrow=1, max_tile=None)
    assert np.asarray(Image.open(full)).shape == (304, 304, 3)  # every pixel kept
