"""GAN losses and gradient penalties, named as in their papers.

Every adversarial loss is a pair of functions over D's raw logits ``[N]``: the D loss from
``(real_logits, fake_logits)`` and the G loss from ``fake_logits``, each a mean over the
batch. ``LOSSES`` maps the name used in ``params.yaml`` to that pair.

The penalties return the bare penalty; the caller applies its weight (``gp_lambda`` for
WGAN-GP, ``r1_gamma / 2`` for R1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class AdversarialLoss(NamedTuple):
    """One adversarial objective: ``d_loss(real_logits, fake_logits)``, ``g_loss(fake_logits)``."""

    d_loss: Callable[[Tensor, Tensor], Tensor]
    g_loss: Callable[[Tensor], Tensor]


def nonsaturating_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Goodfellow et al. 2014: ``softplus(-D(x)) + softplus(D(G(z)))``, binary cross-entropy."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def nonsaturating_g_loss(fake_logits: Tensor) -> Tensor:
    """``softplus(-D(G(z)))``: G maximises log D(G(z)), whose gradient does not vanish early."""
    return F.softplus(-fake_logits).mean()


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Hinge loss (Lim & Ye 2017; SNGAN, BigGAN): ``relu(1 - D(x)) + relu(1 + D(G(z)))``."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """``-D(G(z))``."""
    return -fake_logits.mean()


def lsgan_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Least squares GAN (Mao et al. 2017), targets 1 and 0: ``0.5((D(x)-1)^2 + D(G(z))^2)``."""
    return 0.5 * ((real_logits - 1.0).square().mean() + fake_logits.square().mean())


def lsgan_g_loss(fake_logits: Tensor) -> Tensor:
    """``0.5 (D(G(z)) - 1)^2``."""
    return 0.5 * (fake_logits - 1.0).square().mean()


def wgan_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Wasserstein critic loss (Arjovsky et al. 2017): ``D(G(z)) - D(x)``.

    Unbounded on its own: pair it with :func:`gradient_penalty` (WGAN-GP).
    """
    return fake_logits.mean() - real_logits.mean()


def wgan_g_loss(fake_logits: Tensor) -> Tensor:
    """``-D(G(z))``."""
    return -fake_logits.mean()


LOSSES = {
    "nonsaturating": AdversarialLoss(nonsaturating_d_loss, nonsaturating_g_loss),
    "hinge": AdversarialLoss(hinge_d_loss, hinge_g_loss),
    "lsgan": AdversarialLoss(lsgan_d_loss, lsgan_g_loss),
    "wgan": AdversarialLoss(wgan_d_loss, wgan_g_loss),
}


def interpolate(real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP's ``x_hat = alpha * real + (1 - alpha) * fake``, ready for :func:`gradient_penalty`.

    One ``alpha ~ U(0, 1)`` per sample from the global RNG on real's device; the result
    requires grad, so D's output on it can be differentiated with respect to it.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    return (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)


def gradient_penalty(logits: Tensor, x_hat: Tensor) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): ``mean((||grad_x D(x_hat)|| - 1)^2)``.

    ``logits = D(x_hat)`` with ``x_hat`` from :func:`interpolate`; the caller runs that D
    forward (so that under DDP it is followed by its own backward). The paper advises
    against BatchNorm in the critic: prefer WGAN-GP with the resnet D.
    """
    (grad,) = torch.autograd.grad(logits.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).square().mean()  # grad: [N, C, H, W]


def r1_penalty(real_logits: Tensor, real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): ``mean(||grad_x D(x)||^2)`` on real images.

    ``real`` must have had ``requires_grad_(True)`` before the D forward that gave
    ``real_logits``; the graph is kept so the penalty can be backpropagated into D.
    """
    if not real.requires_grad:
        raise ValueError("r1_penalty: call real.requires_grad_(True) before D(real)")
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(dim=1).mean()  # grad: [N, C, H, W]
