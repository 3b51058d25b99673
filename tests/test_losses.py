"""Known values for every adversarial loss and the gradient penalties (WGAN-GP, R1, R2)."""

import math

import pytest
import torch
from torch import nn

from ganlib.losses import (
    LOSSES,
    feature_matching,
    gradient_penalty,
    interpolate,
    r1_penalty,
    r1_r2_penalties,
    r2_penalty,
    rpgan_d,
    rpgan_g,
)


def _t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_losses_dict():
    assert set(LOSSES) == {"nonsaturating", "hinge", "lsgan", "wgan"}


def test_nonsaturating():
    loss = LOSSES["nonsaturating"]
    zeros = torch.zeros(4)
    assert loss.d_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2))
    assert loss.g_loss(zeros).item() == pytest.approx(math.log(2))
    # A confident, correct D: softplus(-20) + softplus(-20) ~ 2e-9.
    assert loss.d_loss(_t(20.0), _t(-20.0)).item() == pytest.approx(0.0, abs=1e-8)
    # softplus(-x) = log(1 + e^-x)
    assert loss.g_loss(_t(1.0, -1.0)).item() == pytest.approx(
        (math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 2
    )


def test_hinge():
    loss = LOSSES["hinge"]
    assert loss.d_loss(_t(2.0, 1.0), _t(-2.0, -1.0)).item() == 0.0  # outside the margin
    assert loss.d_loss(_t(0.0), _t(0.0)).item() == 2.0
    assert loss.d_loss(_t(0.5), _t(-3.0)).item() == 0.5
    assert loss.g_loss(_t(3.0, 1.0)).item() == -2.0


def test_lsgan():
    loss = LOSSES["lsgan"]
    assert loss.d_loss(_t(1.0), _t(0.0)).item() == 0.0  # on target
    assert loss.d_loss(_t(0.0), _t(1.0)).item() == 1.0  # 0.5 * (1 + 1)
    assert loss.d_loss(_t(3.0), _t(-1.0)).item() == 2.5  # 0.5 * (4 + 1)
    assert loss.g_loss(_t(0.0)).item() == 0.5
    assert loss.g_loss(_t(3.0, 1.0)).item() == 1.0  # 0.5 * mean(4, 0)


def test_wgan():
    loss = LOSSES["wgan"]
    assert loss.d_loss(_t(1.0, 3.0), _t(0.0, 2.0)).item() == -1.0  # 1 - 2
    assert loss.g_loss(_t(0.0, 2.0)).item() == -1.0


class LinearD(nn.Module):
    """D(x) = w . x: its input gradient is w everywhere, so both penalties are known exactly."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)
        self.seen_labels = None

    def forward(self, x, labels=None):
        self.seen_labels = labels
        return x.flatten(1) @ self.w.flatten()  # [N]


def test_r1_of_linear_d_is_squared_weight_norm():
    D = LinearD(torch.randn(1, 4, 4))
    real = torch.randn(3, 1, 4, 4).requires_grad_(True)
    r1 = r1_penalty(D(real), real)
    assert r1.item() == pytest.approx(D.w.square().sum().item(), rel=1e-6)
    r1.backward()  # create_graph=True: the penalty trains D
    assert torch.allclose(D.w.grad, 2 * D.w.detach())


def test_r1_averages_per_sample_squared_norms():
    real = _t(1.0, 2.0, 3.0, 4.0).reshape(2, 1, 1, 2).requires_grad_(True)
    real_logits = 0.5 * real.square().flatten(1).sum(dim=1)  # gradient is x itself
    assert r1_penalty(real_logits, real).item() == pytest.approx((1 + 4 + 9 + 16) / 2)


def test_r1_needs_real_with_grad():
    real = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match="requires_grad_"):
        r1_penalty(real.sum(dim=(1, 2, 3)), real)


def test_gradient_penalty_of_linear_d():
    torch.manual_seed(0)
    D = LinearD(torch.randn(1, 4, 4))
    real, fake = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    labels = torch.zeros(5, dtype=torch.int64)
    x_hat = interpolate(real, fake)
    gp = gradient_penalty(D(x_hat, labels), x_hat)
    w_norm = D.w.norm().item()
    assert gp.item() == pytest.approx((w_norm - 1) ** 2, rel=1e-5)
    assert D.seen_labels is labels
    gp.backward()  # d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    expected = 2 * (w_norm - 1) * D.w.detach() / w_norm
    assert torch.allclose(D.w.grad, expected, rtol=1e-5)


def test_gradient_penalty_is_zero_for_unit_norm_d():
    D = LinearD(torch.full((1, 2, 2), 0.5))  # |w| = 1
    x_hat = interpolate(torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2))
    gp = gradient_penalty(D(x_hat), x_hat)
    assert gp.item() == pytest.approx(0.0, abs=1e-10)


def test_feature_matching_averages_layer_l1_and_only_moves_the_fake():
    fake = [
        torch.zeros(2, 3, 4, 4, requires_grad=True),
        torch.zeros(2, 5, 2, 2, requires_grad=True),
    ]
    real = [torch.full((2, 3, 4, 4), 2.0, requires_grad=True), torch.ones(2, 5, 2, 2)]
    real[1][0] = -1.0  # every element of layer 2 is 1 away, in either direction
    fm = feature_matching(fake, real)
    assert fm.item() == pytest.approx((2.0 + 1.0) / 2)
    fm.backward()
    assert real[0].grad is None  # the real features are the target
    assert fake[0].grad.abs().sum() > 0 and fake[1].grad.abs().sum() > 0
    assert feature_matching(real, real).item() == 0.0


def test_feature_matching_needs_matching_lists():
    with pytest.raises(ValueError, match="same number"):
        feature_matching([torch.zeros(1)], [])
    with pytest.raises(ValueError, match="same number"):
        feature_matching([], [])


def test_rpgan_known_values():
    real, fake = _t(2.0, 0.0), _t(1.0, 3.0)
    # D: softplus(-(r - f)) = softplus(-1), softplus(3); G: softplus(-(f - r)), the mirror
    sp = torch.nn.functional.softplus
    assert rpgan_d(real, fake).item() == pytest.approx(((sp(_t(-1.0)) + sp(_t(3.0))) / 2).item())
    assert rpgan_g(fake, real).item() == pytest.approx(((sp(_t(1.0)) + sp(_t(-3.0))) / 2).item())
    # only the differences count: shifting every logit changes nothing (relativistic)
    assert rpgan_d(real + 7, fake + 7).item() == pytest.approx(rpgan_d(real, fake).item())
    with pytest.raises(ValueError, match="as many real as fake"):
        rpgan_d(real, _t(1.0))


def test_r2_is_r1_on_fakes_and_one_forward_gives_both():
    D = LinearD(torch.randn(1, 4, 4))
    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    r1 = r1_penalty(D(real.requires_grad_(True)), real)
    r2 = r2_penalty(D(fake.requires_grad_(True)), fake)
    x = torch.cat([real.detach(), fake.detach()]).requires_grad_(True)
    both = r1_r2_penalties(D(x), x, n_real=3)
    assert torch.allclose(torch.stack(both), torch.stack([r1, r2]))
    # a non-linear D: per-sample gradients differ between the halves, still exactly split
    real_q = _t(1.0, 2.0, 3.0, 4.0).reshape(2, 1, 1, 2)
    x = torch.cat([real_q, 2 * real_q]).requires_grad_(True)
    r1_q, r2_q = r1_r2_penalties(0.5 * x.square().flatten(1).sum(dim=1), x, n_real=2)
    assert (r1_q.item(), r2_q.item()) == pytest.approx(((1 + 4 + 9 + 16) / 2, 4 * 30 / 2))
