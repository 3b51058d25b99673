"""GAN losses and gradient penalties, named as in their papers.

Every adversarial loss is a sum of a real term and a fake term for D, and a fake term for G,
each a mean over the batch of D's raw logits ``[N]``. Keeping D's two terms apart lets the
training loop run D on real and on fake images as separate forwards, each followed by its own
backward (BatchNorm sees real-only and fake-only batches, as in DCGAN, and DDP never sees two
forwards before one backward). ``LOSSES`` maps the name used in ``params.yaml`` to a loss.

The penalties return the bare penalty; the caller applies its weight (``gp_weight`` for
WGAN-GP, ``r1_gamma / 2`` for R1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class AdversarialLoss(NamedTuple):
    """One adversarial objective: D's loss is ``d_real(D(x)) + d_fake(D(G(z)))``, G's is
    ``g_loss(D(G(z)))``."""

    d_real: Callable[[Tensor], Tensor]
    d_fake: Callable[[Tensor], Tensor]
    g_loss: Callable[[Tensor], Tensor]

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return self.d_real(real_logits) + self.d_fake(fake_logits)


# Non-saturating (Goodfellow et al. 2014; the seed's formula): D minimises
# softplus(-D(x)) + softplus(D(G(z))), binary cross-entropy; G minimises softplus(-D(G(z))),
# i.e. maximises log D(G(z)), whose gradient does not vanish early in training.
NONSATURATING = AdversarialLoss(
    d_real=lambda real: F.softplus(-real).mean(),
    d_fake=lambda fake: F.softplus(fake).mean(),
    g_loss=lambda fake: F.softplus(-fake).mean(),
)
# Hinge (Lim & Ye 2017; SNGAN, BigGAN): relu(1 - D(x)) + relu(1 + D(G(z))); G: -D(G(z)).
HINGE = AdversarialLoss(
    d_real=lambda real: F.relu(1.0 - real).mean(),
    d_fake=lambda fake: F.relu(1.0 + fake).mean(),
    g_loss=lambda fake: -fake.mean(),
)
# Least squares (Mao et al. 2017), targets 1 and 0: 0.5 (D(x) - 1)^2 + 0.5 D(G(z))^2;
# G: 0.5 (D(G(z)) - 1)^2.
LSGAN = AdversarialLoss(
    d_real=lambda real: 0.5 * (real - 1.0).square().mean(),
    d_fake=lambda fake: 0.5 * fake.square().mean(),
    g_loss=lambda fake: 0.5 * (fake - 1.0).square().mean(),
)
# Wasserstein critic (Arjovsky et al. 2017): D(G(z)) - D(x); G: -D(G(z)). Unbounded on its
# own: pair it with gradient_penalty (WGAN-GP).
WGAN = AdversarialLoss(
    d_real=lambda real: -real.mean(),
    d_fake=lambda fake: fake.mean(),
    g_loss=lambda fake: -fake.mean(),
)

LOSSES = {"nonsaturating": NONSATURATING, "hinge": HINGE, "lsgan": LSGAN, "wgan": WGAN}


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


def feature_matching(fake_features: Sequence[Tensor], real_features: Sequence[Tensor]) -> Tensor:
    """Feature matching (pix2pixHD, Wang et al. 2018): the L1 distance between D's
    intermediate features of a generated image and of its real counterpart, each layer's a mean
    over its elements, averaged over the layers. A term of G's loss: the real features are the
    target (detached here), D is frozen."""
    if len(fake_features) != len(real_features) or not fake_features:
        raise ValueError(
            f"need the same number (> 0) of fake and real feature maps, got "
            f"{len(fake_features)} and {len(real_features)}"
        )
    distances = [
        (fake - real.detach()).abs().mean()
        for fake, real in zip(fake_features, real_features, strict=True)
    ]
    return torch.stack(distances).mean()
