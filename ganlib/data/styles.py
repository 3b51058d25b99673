"""The artistic rendering behind ``builtin:photos2art``: domain B of the translation demo.

:func:`cartoon` turns a photo patch into a flat-colour drawing with dark outlines, the classic
"cartoon" filter: edge-preserving smoothing (bilateral), colour quantisation (posterise) and
dark lines where the smoothed image has strong gradients (Sobel). Every step is a local image
operation, so an image-to-image network can learn it, and the result looks plainly different
from a photo, so a distribution metric (FID to the target domain) can tell them apart.
Deterministic: the same array always gives the same output (with the same scikit-image build).
"""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2gray
from skimage.filters import sobel
from skimage.restoration import denoise_bilateral

LEVELS = 5  # posterise: values per channel, evenly spaced over 0..1
# bilateral smoothing: a 5x5 window, Gaussian in space (pixels) and in colour (0..1 units)
SMOOTH_WINDOW, SIGMA_SPATIAL, SIGMA_COLOR = 5, 2.0, 0.12
# Sobel magnitude (0..1 units per pixel) where outlines start and where they are fully dark
EDGE_LOW, EDGE_HIGH = 0.04, 0.12
EDGE_DARKNESS = 0.85  # a full outline keeps 15% of the colour under it


def cartoon(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, C]`` (C = 1 or 3) -> the same image as a cartoon, ``uint8 [H, W, C]``.

    Scale-dependent by nature (window and edge thresholds are in pixels): apply it at the
    resolution the images are stored at.
    """
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (1, 3), (
        image.dtype,
        image.shape,
    )
    rgb = image.shape[2] == 3
    x = image.astype(np.float64) / 255.0  # [H, W, C] in [0, 1]
    smooth = denoise_bilateral(
        x if rgb else x[:, :, 0],
        win_size=SMOOTH_WINDOW,
        sigma_color=SIGMA_COLOR,
        sigma_spatial=SIGMA_SPATIAL,
        channel_axis=-1 if rgb else None,
    ).reshape(x.shape)  # [H, W, C]
    flat = np.round(smooth * (LEVELS - 1)) / (LEVELS - 1)  # [H, W, C], LEVELS values each
    gray = rgb2gray(smooth) if rgb else smooth[:, :, 0]  # [H, W]
    edge = np.clip((sobel(gray) - EDGE_LOW) / (EDGE_HIGH - EDGE_LOW), 0.0, 1.0)  # [H, W]
    out = flat * (1.0 - EDGE_DARKNESS * edge)[:, :, None]
    return np.round(out * 255.0).astype(np.uint8)
