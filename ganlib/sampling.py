"""Images from a trained generator, by seed: the one sampling path of ``ganlib sample`` and of
the registered MLflow model.

An image depends only on its seed (and label): ``z`` comes from a generator seeded with it, and
G sees each ``z`` alone. Batched convolutions are not batch-invariant (a batch of 7 takes other
kernels than a batch of 1, and the ~1e-6 differences flip the uint8 rounding of a few pixels),
so one forward pass per image is what makes "seed 5" the same bytes in any request.

The exported generator's on-disk format is owned by :mod:`ganlib.artifacts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ganlib.data.pixels import to_uint8
from ganlib.errors import GanlibError
from ganlib.models.base import eval_mode


def generate(
    G: torch.nn.Module,
    model_config: dict[str, Any],
    seeds: Sequence[int],
    labels: Sequence[int] | None = None,
) -> np.ndarray:
    """G's images for ``seeds`` as ``uint8 [N, H, W, C]`` (channels last).

    Row ``i`` is drawn from ``z = randn(z_dim)`` of a generator seeded with ``seeds[i]``; a
    conditional G (``num_classes = K > 0``) draws class ``labels[i]``, by default
    ``seeds[i] % K``. Any N works, 0 included; G runs in eval mode without gradients.
    """
    seeds = [int(s) for s in seeds]
    labels = _check_labels(seeds, labels, int(model_config["num_classes"]))
    z_dim, R, C = (int(model_config[k]) for k in ("z_dim", "resolution", "channels"))
    device = next(G.parameters()).device
    out = np.empty((len(seeds), R, R, C), np.uint8)
    with torch.no_grad(), eval_mode(G):
        for i, seed in enumerate(seeds):
            z = torch.randn(1, z_dim, generator=torch.Generator().manual_seed(seed))  # [1, z_dim]
            y = None if labels is None else torch.tensor([labels[i]], device=device)  # [1]
            out[i] = to_uint8(G(z.to(device), y))[0]  # [H, W, C]
    return out


def _check_labels(
    seeds: list[int], labels: Sequence[int] | None, num_classes: int
) -> list[int] | None:
    """One class per seed for a conditional G (``seed % K`` by default), None otherwise."""
    if num_classes == 0:
        if labels is not None:
            raise GanlibError("label: this generator is unconditional; it takes no labels")
        return None
    if labels is None:
        return [s % num_classes for s in seeds]
    labels = [int(y) for y in labels]
    if len(labels) != len(seeds):
        raise GanlibError(f"label: {len(labels)} labels for {len(seeds)} seeds")
    bad = [y for y in labels if not 0 <= y < num_classes]
    if bad:
        raise GanlibError(
            f"label: {bad[0]} is not a class of this generator (0..{num_classes - 1})"
        )
    return labels
