"""GAN losses and gradient penalties, named as in their papers.

Every adversarial loss is a sum of a real term and a fake term for D, and a fake term for G,
each a mean over the batch of D's raw logits ``[N]``. Keeping D's two terms apart lets the
training loop run D on real and on fake images as separate forwards, each followed by its own
backward (BatchNorm sees real-only and fake-only batches, as in DCGAN, and DDP never sees two
forwards before one backward). ``LOSSES`` maps the name used in ``params.yaml`` to a loss.

The penalties return the bare penalty; the caller applies its weight (``gp_weight`` for
WGAN-GP, ``r1_gamma / 2`` for R1, ``gamma / 2`` for R1 + R2). The relativistic pairing loss
(``rpgan_d``/``rpgan_g``, R3GAN's) pairs real and fake logits, so it is not in ``LOSSES``.
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
    return _squared_input_gradient(real_logits, real, "r1_penalty").mean()


def r2_penalty(fake_logits: Tensor, fake: Tensor) -> Tensor:
    """R2 (R3GAN, Huang et al. 2024): R1's penalty on generated images,
    ``mean(||grad_x D(G(z))||^2)``; with R1 it keeps a relativistic D from overshooting on
    either side (``fake`` detached from G, then ``requires_grad_(True)`` before D)."""
    return _squared_input_gradient(fake_logits, fake, "r2_penalty").mean()


def r1_r2_penalties(logits: Tensor, x: Tensor, n_real: int) -> tuple[Tensor, Tensor]:
    """R1 and R2 from one D forward on ``x = cat([real, fake])`` (``requires_grad``): one
    input gradient, split at ``n_real``. For a D without batch statistics this is exactly
    :func:`r1_penalty` and :func:`r2_penalty` of two forwards, and it keeps the DDP rule of one
    forward per backward."""
    sq = _squared_input_gradient(logits, x, "r1_r2_penalties")  # [N]
    return sq[:n_real].mean(), sq[n_real:].mean()


def _squared_input_gradient(logits: Tensor, x: Tensor, name: str) -> Tensor:
    """``||grad_x logits.sum()||^2`` per sample ``[N]``, graph kept for the backward into D."""
    if not x.requires_grad:
        raise ValueError(f"{name}: call x.requires_grad_(True) before the D forward")
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)  # [N, C, H, W]
    return grad.square().flatten(1).sum(dim=1)


def rpgan_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Relativistic pairing loss of D (Jolicoeur-Martineau 2019; R3GAN's objective):
    ``mean(softplus(-(D(x_i) - D(G(z_i)))))`` over pairs ``i`` of a real and a fake batch of
    the same size. Unlike the losses of :data:`LOSSES` it does not split into a real and a
    fake term: run D once on ``cat([real, fake])`` (a D without batch statistics, such as
    R3GAN's) and split the logits."""
    _same_size(real_logits, fake_logits)
    return F.softplus(-(real_logits - fake_logits)).mean()


def rpgan_g(fake_logits: Tensor, real_logits: Tensor) -> Tensor:
    """G's relativistic pairing loss: ``mean(softplus(-(D(G(z_i)) - D(x_i))))``, with D's
    logits of a fresh real batch (no gradient needed through them)."""
    _same_size(real_logits, fake_logits)
    return F.softplus(-(fake_logits - real_logits)).mean()


def _same_size(real_logits: Tensor, fake_logits: Tensor) -> None:
    if real_logits.shape != fake_logits.shape:
        raise ValueError(
            f"relativistic pairing needs as many real as fake logits, got "
            f"{tuple(real_logits.shape)} and {tuple(fake_logits.shape)}"
        )


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
