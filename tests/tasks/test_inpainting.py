"""Inpainting's composite, G input, L1 loss and phases (one D forward per loss)."""

import pytest
import torch

from ganlib.losses import LOSSES, feature_matching
from ganlib.models.patchgan import PatchDiscriminator
from ganlib.models.unet import UNetGenerator
from ganlib.tasks.inpainting import (
    InpaintingLoss,
    composite,
    d_input,
    generate,
    inpaint,
    l1_loss,
    masked_input,
    masked_l1,
    pull_push,
)


def _batch(b=2, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(b, c, h, w, generator=g) * 2 - 1
    mask = (torch.rand(b, 1, h, w, generator=g) < 0.3).float()
    return real, mask


def test_composite_keeps_valid_pixels_bit_for_bit():
    real, mask = _batch()
    out = torch.rand(real.shape) * 2 - 1  # negative values too: out * 0 is -0.0 there
    fake = composite(real, out, mask)
    valid = (mask == 0).expand_as(real)
    assert torch.equal(fake[valid].view(torch.int32), real[valid].view(torch.int32))
    assert torch.equal(fake[~valid], out[~valid])


def test_masked_input_hides_the_hole():
    real, mask = _batch()
    x = masked_input(real, mask)
    assert x.shape == (2, 4, 32, 32)
    assert torch.equal(x[:, 3:], mask)
    valid = (mask == 0).expand_as(real)
    assert torch.equal(x[:, :3][valid], real[valid])
    scrambled = torch.where(valid, real, torch.rand(real.shape) * 2 - 1)
    assert torch.equal(masked_input(scrambled, mask), x)  # the hole's content never leaks
    with pytest.raises(ValueError, match="mask"):
        masked_input(real, mask[:, :, :16])


@pytest.mark.parametrize("shape", [(32, 32), (37, 45), (1, 9), (64, 1)])
def test_pull_push_fills_with_means_of_valid_pixels(shape):
    real, _ = _batch(h=shape[0], w=shape[1])
    mask = torch.zeros(2, 1, *shape)
    mask[..., : shape[0] // 2 + 1, : shape[1] // 2 + 1] = 1  # a corner box, the rest valid
    filled = pull_push(real, mask)
    valid = (mask == 0).expand_as(real)
    assert torch.equal(filled[valid], real[valid])
    # Every fill is a weighted mean of valid pixels: inside their range, per image and channel.
    for b in range(2):
        for c in range(3):
            known, hole = real[b, c][mask[b, 0] == 0], filled[b, c][mask[b, 0] == 1]
            assert known.min() - 1e-6 <= hole.min() and hole.max() <= known.max() + 1e-6
    flat = torch.full((1, 3, *shape), 0.25)
    assert torch.allclose(pull_push(flat, mask[:1]), flat)  # a constant stays constant
    assert torch.equal(pull_push(real, torch.ones_like(mask)), torch.zeros_like(real))


def test_l1_loss_known_values():
    real = torch.zeros(1, 1, 2, 2)
    out = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # hole: |1| over 1 pixel = 1; valid: (2 + 3 + 4) / 3 = 3
    assert masked_l1(out, real, mask).item() == 1.0
    assert masked_l1(out, real, 1 - mask).item() == 3.0
    assert l1_loss(out, real, mask, hole_weight=6.0, valid_weight=1.0).item() == 9.0
    # Two channels: each region's mean is over its elements, channels included.
    out2 = torch.cat([out, 3 * out], dim=1)  # hole (1 + 3) / 2 = 2; valid (9 + 27) / 6 = 6
    assert l1_loss(out2, torch.zeros(1, 2, 2, 2), mask, hole_weight=1.0, valid_weight=0.5) == 5.0
    # No hole at all: the hole term is 0, not NaN.
    assert l1_loss(out, real, torch.zeros_like(mask), hole_weight=6.0, valid_weight=1.0) == 2.5


def _tiny_models(size=32):
    torch.manual_seed(0)
    return UNetGenerator(4, 3, width=4, resolution=size), PatchDiscriminator(4, width=4)


def test_phases_one_d_forward_each_and_gradients_where_expected():
    G, D = _tiny_models()
    calls = []
    D.register_forward_hook(lambda *_: calls.append(1))
    loss = InpaintingLoss(LOSSES["hinge"], hole_weight=6.0, valid_weight=1.0, adv_weight=0.1)
    real, mask = _batch()

    # D phase: G runs without gradients; each loss comes from exactly one D forward.
    with torch.no_grad():
        out, fake = generate(G, real, mask)
    loss_real, logits = loss.d_real(D, real, mask)
    assert len(calls) == 1 and logits.shape == (2, 1, 2, 2)
    assert loss_real == LOSSES["hinge"].d_real(logits)
    loss_real.backward()
    loss_fake, _ = loss.d_fake(D, fake, mask)
    assert len(calls) == 2
    loss_fake.backward()
    assert all(p.grad is None for p in G.parameters())
    assert all(p.grad is not None for p in D.parameters())

    # G phase: D frozen; the loss is weighted L1 + adv_weight * adversarial.
    D.zero_grad(set_to_none=True)
    D.requires_grad_(False)
    out, fake = generate(G, real, mask)
    loss_G, stats = loss.g(D, real, mask, out, fake)
    assert len(calls) == 3
    assert set(stats) == {"loss_l1_hole", "loss_l1_valid", "adv", "D_fake"}
    expected = 6.0 * stats["loss_l1_hole"] + 1.0 * stats["loss_l1_valid"] + 0.1 * stats["adv"]
    assert torch.allclose(loss_G, expected)
    assert torch.allclose(stats["loss_l1_hole"], masked_l1(out, real, mask))
    loss_G.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters())
    assert all(p.grad is None for p in D.parameters())


def test_feature_matching_term_in_the_g_phase():
    """With ``fm_weight``: one more D forward (real, without gradients), ``fm`` in the stats
    and in the loss, gradients in G only."""
    G, D = _tiny_models()
    calls = []
    D.register_forward_hook(lambda *_: calls.append(1))
    plain = InpaintingLoss(LOSSES["hinge"], hole_weight=6.0, valid_weight=1.0, adv_weight=0.1)
    loss = InpaintingLoss(
        LOSSES["hinge"], hole_weight=6.0, valid_weight=1.0, adv_weight=0.1, fm_weight=2.0
    )
    real, mask = _batch()
    D.requires_grad_(False)
    out, fake = generate(G, real, mask)
    loss_G, stats = loss.g(D, real, mask, out, fake)
    assert len(calls) == 2
    _, fake_features = D(d_input(fake, mask), return_features=True)
    _, real_features = D(d_input(real, mask), return_features=True)
    assert torch.allclose(stats["fm"], feature_matching(fake_features, real_features))
    assert stats["fm"] > 0
    plain_loss, plain_stats = plain.g(D, real, mask, out, fake)
    assert "fm" not in plain_stats
    assert torch.allclose(loss_G, plain_loss + 2.0 * stats["fm"])
    loss_G.backward()
    assert all(p.grad is not None for p in G.parameters())
    assert all(p.grad is None for p in D.parameters())


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_adversarial_loss_takes_patch_logits(name):
    G, D = _tiny_models()
    loss = InpaintingLoss(LOSSES[name], hole_weight=1.0, valid_weight=1.0, adv_weight=1.0)
    real, mask = _batch()
    g_loss = loss.g(D, real, mask, *generate(G, real, mask))[0]
    for value in (loss.d_real(D, real, mask)[0], g_loss):
        assert value.dim() == 0 and torch.isfinite(value)


def test_inpaint_any_size_keeps_valid_pixels():
    G, _ = _tiny_models(64)
    image, mask = _batch(b=1, h=37, w=45)
    repaired = inpaint(G.eval(), image, mask)
    assert repaired.shape == image.shape and not repaired.requires_grad
    valid = (mask == 0).expand_as(image)
    assert torch.equal(repaired[valid], image[valid])
    assert not torch.equal(repaired[~valid], image[~valid])
