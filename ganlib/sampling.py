"""Images from a trained generator, by seed: the one sampling path of ``ganlib sample`` and of
the registered MLflow model.

An image depends only on its seed (and label): ``z`` comes from a generator seeded with it, and
G sees each ``z`` alone. Seeds are integers in [0, 2**63), each its own noise (see
:func:`generate`); anything else is a one-line error, never a value coerced to some seed.
Batched convolutions are not batch-invariant (a batch of 7 takes other kernels than a batch of
1, and the ~1e-6 differences flip the uint8 rounding of a few pixels), so one forward pass per
image is what makes "seed 5" the same bytes in any request.

The exported generator's on-disk format is owned by :mod:`ganlib.artifacts`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ganlib.data.pixels import to_uint8
from ganlib.errors import GanlibError
from ganlib.models.base import eval_mode

SEEDS = 2**63  # seeds are integers 0 <= seed < SEEDS
TORCH_SEEDS = 2**32  # below it, z is drawn as ganlib always drew it (torch's mt19937)


def generate(
    G: torch.nn.Module,
    model_config: dict[str, Any],
    seeds: Sequence[int],
    labels: Sequence[int] | None = None,
) -> np.ndarray:
    """G's images for ``seeds`` as ``uint8 [N, H, W, C]`` (channels last).

    Seeds are integers ``0 <= seed < 2**63`` (Python or numpy ints, or floats that are exact
    integers below 2**53); distinct seeds draw distinct noise. Row ``i``'s ``z`` (``z_dim``
    standard normals) comes from ``torch.randn`` of a ``torch.Generator`` seeded with
    ``seeds[i]`` when it is below 2**32, as it always has (so "seed 5" keeps its image), and
    from numpy's ``default_rng(seeds[i])`` (PCG64 seeded through a SeedSequence of the whole
    integer) as float32 for larger seeds, where torch's 32-bit mt19937 seed would repeat
    itself (``s`` and ``s + 2**32`` gave one image). A conditional G (``num_classes = K >
    0``) draws class ``labels[i]``, by default ``seeds[i] % K``. Any N works, 0 included; G
    runs in eval mode without gradients. A seed or label that is not such an integer (a
    negative or too large one, a bool, a string, a fraction, NaN) is a one-line GanlibError
    naming its row.
    """
    seeds = _check_seeds(seeds)
    labels = _check_labels(seeds, labels, int(model_config["num_classes"]))
    z_dim, R, C = (int(model_config[k]) for k in ("z_dim", "resolution", "channels"))
    device = next(G.parameters()).device
    out = np.empty((len(seeds), R, R, C), np.uint8)
    with torch.no_grad(), eval_mode(G):
        for i, seed in enumerate(seeds):
            z = _noise(seed, z_dim)  # [1, z_dim]
            y = None if labels is None else torch.tensor([labels[i]], device=device)  # [1]
            out[i] = to_uint8(G(z.to(device), y))[0]  # [H, W, C]
    return out


def _noise(seed: int, z_dim: int) -> torch.Tensor:
    """``z`` ``[1, z_dim]`` float32 of ``seed`` (see :func:`generate`)."""
    if seed < TORCH_SEEDS:
        return torch.randn(1, z_dim, generator=torch.Generator().manual_seed(seed))
    z = np.random.default_rng(seed).standard_normal(z_dim, dtype=np.float32)
    return torch.from_numpy(z)[None]


def _as_int(value: Any, name: str, row: int, expected: str) -> int:
    """``value`` as an int; a one-line GanlibError naming ``name`` and ``row`` (and saying
    ``expected``) for anything that is not an integer. Floats pass only as exact integers
    below 2**53 (a JSON column with one missing value arrives as floats); bools and strings
    never do."""
    if isinstance(value, np.generic):
        value = value.item()  # numpy scalars as Python's: np.int64 -> int, np.bool_ -> bool
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        if abs(value) >= 2**53:  # 2**53 + 1 read as a float is 2**53: not the number sent
            raise GanlibError(
                f"{name}: row {row} is {value!r}, a float too large to be an exact integer; "
                f"send it as an integer ({expected})"
            )
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise GanlibError(
            f"{name}: row {row} is {value!r} ({type(value).__name__}), not an integer; {expected}"
        )
    return int(value)


def _check_seeds(seeds: Sequence[Any]) -> list[int]:
    expected = "seeds are integers in [0, 2**63)"
    out = [_as_int(s, "seed", i, expected) for i, s in enumerate(seeds)]
    for i, seed in enumerate(out):
        if not 0 <= seed < SEEDS:
            raise GanlibError(f"seed: row {i} is {seed}, outside [0, 2**63)")
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
    classes = f"labels are classes 0..{num_classes - 1}"
    labels = [_as_int(y, "label", i, classes) for i, y in enumerate(labels)]
    if len(labels) != len(seeds):
        raise GanlibError(f"label: {len(labels)} labels for {len(seeds)} seeds")
    bad = [y for y in labels if not 0 <= y < num_classes]
    if bad:
        raise GanlibError(
            f"label: {bad[0]} is not a class of this generator (0..{num_classes - 1})"
        )
    return labels
