"""The one conversion between stored pixels and network values.

Shards, users' images and served outputs are 8-bit: ``uint8 [N, H, W, C]``, channels last.
Networks see ``float32 [N, C, H, W]`` in [-1, 1]: ``v / 127.5 - 1``, which maps 0 to -1 and
255 to 1 exactly. :func:`to_uint8` goes back (clamped, rounded to the nearest level), and
:func:`quantize` rounds network values to the levels a stored image can have.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

BATCH_SIDE = 64  # a batch of up to ``cap`` images at this side or below; fewer above it


def batch_for(resolution: int, cap: int) -> int:
    """Images per forward pass at ``resolution``: ``cap`` up to 64 px, then as many as hold
    ``cap`` 64-px images' pixels (at least one): a 250-image probe batch at 1024 px was 16 GB
    of activations; it is 1 image there, 15 at 256 px and unchanged at 32 or 64 px."""
    return max(1, min(cap, cap * BATCH_SIDE**2 // resolution**2))


def from_uint8(images: np.ndarray) -> Tensor:
    """``uint8 [N, H, W, C]`` -> ``float32 [N, C, H, W]`` in [-1, 1] (on the CPU).

    In numpy: torch's intra-op threads cost more than they save on a loader batch, and the
    result is the same whatever the thread settings.
    """
    x = np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2), dtype=np.float32)
    x /= 127.5
    x -= 1.0
    return torch.from_numpy(x)


def to_uint8(images: Tensor) -> np.ndarray:
    """``[N, C, H, W]`` floats in [-1, 1] (any device) -> ``uint8 [N, H, W, C]``."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def quantize(x: Tensor) -> Tensor:
    """Round images in [-1, 1] to the 256 levels that stored (PNG) images have, on their device.

    Real images reach a feature extractor as decoded 8-bit PNGs; generated ones are rounded
    the same way before their features are taken, as StyleGAN's metrics do, so that the two
    differ by content only, not by quantisation. Equal to ``from_uint8(to_uint8(x))``.
    """
    return ((x + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1
