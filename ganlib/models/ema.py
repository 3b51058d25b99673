"""Exponential moving average of the generator's weights, ``G_ema`` (Karras et al. 2018,
Progressive GAN; Yazıcı et al. 2019).

``G_ema`` is what gets evaluated, sampled and exported: averaging over recent steps smooths
out the oscillation of adversarial training. The decay is set by a half-life in thousands
of images (kimg), as in StyleGAN2-ADA, so it does not depend on the batch size.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_copy(G: nn.Module) -> nn.Module:
    """``G_ema``: a deep copy of the (unwrapped) G, in eval mode, with gradients off."""
    G_ema = copy.deepcopy(G).eval()
    G_ema.requires_grad_(False)
    return G_ema


def ema_beta(batch_size: int, half_life_kimg: float) -> float:
    """Per-step decay whose weight on old values halves every ``half_life_kimg`` * 1000 images.

    ``beta = 0.5 ** (batch_size / (half_life_kimg * 1000))``, StyleGAN2-ADA's ``ema_beta``;
    ``batch_size`` is the global batch (all ranks). A half-life of 0 turns averaging off
    (beta = 0: G_ema follows G exactly).
    """
    if half_life_kimg < 0:
        raise ValueError(f"half_life_kimg must be >= 0, got {half_life_kimg}")
    if half_life_kimg == 0:
        return 0.0
    return 0.5 ** (batch_size / (half_life_kimg * 1000))


@torch.no_grad()
def ema_update(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """``G_ema <- beta * G_ema + (1 - beta) * G`` for parameters; buffers copied from G.

    Buffers (BatchNorm running statistics) are copied rather than averaged: they are
    estimates of G's own activation statistics and must match G's current weights. Pass
    the unwrapped G (``G.module`` under DDP): parameter names must match.
    """
    for (name_ema, p_ema), (name, p) in zip(
        G_ema.named_parameters(), G.named_parameters(), strict=True
    ):
        if name_ema != name:
            raise ValueError(f"G_ema and G differ: {name_ema!r} vs {name!r}; unwrap G first")
        p_ema.lerp_(p, 1.0 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)
