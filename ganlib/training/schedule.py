"""Training values as functions of the images seen (``train.schedule``), R3GAN's way.

Each scheduled value moves from its start to its end on a half cosine over the burn-in and is
held at the end after it (``cosine_decay_with_warmup`` of the reference code, without warm-up).
A function of the images seen, not of wall time or of the step, so that a resumed run sees
exactly the value the uninterrupted one did, and a run with another batch size follows the same
curve per image.
"""

from __future__ import annotations

import math

from ganlib.config import TrainConfig

SCHEDULED = ("lr", "beta2", "gamma", "ema_kimg", "augment_p")


def cosine(kimg: float, start: float, end: float, burn_in_kimg: float) -> float:
    """``start`` at 0, ``end`` from ``burn_in_kimg`` on, a half cosine in between."""
    if kimg >= burn_in_kimg:
        return float(end)
    decay = 0.5 * (1 + math.cos(math.pi * kimg / burn_in_kimg))  # 1 -> 0
    return float(start + (1 - decay) * (end - start))


def values_at(cfg: TrainConfig, kimg: float) -> dict[str, float]:
    """The scheduled values at ``kimg`` thousand images seen: those ``train.schedule`` names,
    from their curves; only when the schedule is active."""
    s = cfg.schedule
    return {
        name: cosine(kimg, *getattr(s, name), s.burn_in_kimg)
        for name in SCHEDULED
        if getattr(s, name) is not None
    }
