"""Translation: the image pool, cycle and identity losses, and the pix2pix / CycleGAN phases
(one D forward per method)."""

import pytest
import torch

from ganlib.losses import LOSSES
from ganlib.models.cyclegan import CycleGenerators
from ganlib.models.patchgan import PatchDiscriminator
from ganlib.models.unet import UNetGenerator
from ganlib.tasks.translation import (
    CycleGANLoss,
    ImagePool,
    Pix2PixLoss,
    cycle_loss,
    d_input,
    identity_loss,
    translate,
)


def test_translate_takes_any_size():
    G = CycleGenerators(channels=3, width=4, n_blocks=1).G_AB
    assert translate(G, torch.randn(1, 3, 37, 50)).shape == (1, 3, 37, 50)


def batch(start: int, n: int = 4) -> torch.Tensor:
    """n images [3, 2, 2], image i filled with the value i: [n, 3, 2, 2]."""
    return torch.arange(start, start + n, dtype=torch.float32)[:, None, None, None].expand(
        n, 3, 2, 2
    )


def ids(images: torch.Tensor) -> list[int]:
    return images[:, 0, 0, 0].long().tolist()


def test_pool_fills_first_then_swaps_half_of_the_images():
    pool = ImagePool(size=6, seed=0)
    assert ids(pool.query(batch(0))) == [0, 1, 2, 3]  # stored and returned
    out = ids(pool.query(batch(4)))
    assert out[:2] == [4, 5] and len(pool) == 6  # the last 2 slots fill, then it is full
    returned_old = 0
    for step in range(100):
        new = batch(10 + 4 * step)
        out = pool.query(new)
        assert out.shape == new.shape and len(pool) == 6
        for got, fresh in zip(ids(out), ids(new), strict=True):
            returned_old += got != fresh
            assert got == fresh or got < fresh  # either itself or an older image
    assert 150 < returned_old < 250  # p = 0.5 over 400 images
    stored = set(ids(pool.images))
    assert len(stored) == 6


def test_pool_is_seeded_by_its_own_generator_and_its_state_round_trips():
    def run(pool, steps):
        return [ids(pool.query(batch(100 * s))) for s in steps]

    torch.manual_seed(0)
    first = run(ImagePool(size=5, seed=7), range(6))
    torch.manual_seed(123)  # the global RNG does not matter
    assert run(ImagePool(size=5, seed=7), range(6)) == first
    assert run(ImagePool(size=5, seed=8), range(6)) != first

    pool = ImagePool(size=5, seed=7)
    run(pool, range(3))
    state = pool.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    restored = ImagePool(size=5, seed=0)
    restored.load_state_dict(state)
    assert run(restored, range(3, 6)) == first[3:]
    empty = ImagePool(size=5, seed=0)
    empty.load_state_dict(ImagePool(size=5, seed=0).state_dict())
    assert len(empty) == 0


def test_pool_of_size_zero_passes_images_through_detached():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = ImagePool(size=0, seed=0).query(x)
    assert torch.equal(out, x) and not out.requires_grad


def test_cycle_and_identity_losses_known_values():
    real = torch.zeros(2, 3, 4, 4)
    rec = torch.full((2, 3, 4, 4), 0.5)
    rec[1] = -0.25  # |error| 0.5 on one image, 0.25 on the other: mean 0.375
    assert cycle_loss(real, rec, weight=10.0).item() == pytest.approx(3.75)
    assert identity_loss(real, rec, weight=5.0).item() == pytest.approx(1.875)
    assert cycle_loss(real, real, weight=10.0).item() == 0.0
    with pytest.raises(ValueError, match="must both be"):
        cycle_loss(real, rec[:1], weight=10.0)


class Recorder(torch.nn.Module):
    """A D that logs its inputs' channel count and returns fixed patch logits."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(x.shape[1])
        return torch.full((x.shape[0], 1, 2, 2), self.value) + 0 * x.mean()


def test_pix2pix_d_sees_pairs_and_g_adds_weighted_l1():
    loss = Pix2PixLoss(LOSSES["lsgan"], l1_weight=100.0, adv_weight=1.0)
    a, b = torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    fake_b = torch.full((2, 3, 8, 8), 0.5, requires_grad=True)
    D = Recorder(value=1.0)
    d_real, _ = loss.d_real(D, a, b)
    d_fake, logits = loss.d_fake(D, a, fake_b)
    assert D.calls == [6, 6] and logits.shape == (2, 1, 2, 2)
    assert d_real.item() == 0.0 and d_fake.item() == pytest.approx(0.5)  # 0.5 * D^2
    assert not d_fake.requires_grad  # the fake is detached for D
    total, stats = loss.g(D, a, b, fake_b)
    # lsgan G: 0.5 (1 - 1)^2 = 0; L1 |0.5 - 1| = 0.5, times 100
    assert total.item() == pytest.approx(50.0)
    assert stats["l1"].item() == pytest.approx(0.5) and stats["adv"].item() == 0.0
    total.backward()
    assert fake_b.grad is not None
    assert d_input(a, b).shape == (2, 6, 8, 8)


def test_cyclegan_g_loss_known_values():
    loss = CycleGANLoss(LOSSES["lsgan"], cycle_weight=10.0, identity_weight=0.5, adv_weight=2.0)
    a, b = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    G = CycleGenerators(channels=3, width=2, n_blocks=0)
    out = G(a, b)._replace(
        rec_a=torch.full_like(a, 0.1),  # cycle_A = 10 * 0.1
        rec_b=torch.full_like(b, 0.8),  # cycle_B = 10 * 0.2
        idt_a=torch.full_like(a, 0.4),  # idt_A = 5 * 0.4
        idt_b=b.clone(),  # idt_B = 0
    )
    D_A, D_B = Recorder(value=0.0), Recorder(value=1.0)
    total, stats = loss.g(D_A, D_B, a, b, out)
    # adv_AB: D_B says 1 -> 0; adv_BA: D_A says 0 -> 2 * 0.5 * (0 - 1)^2 = 1
    want = {"adv_AB": 0.0, "adv_BA": 1.0, "cycle_A": 1.0, "cycle_B": 2.0, "idt_A": 2.0}
    for name, value in (want | {"idt_B": 0.0}).items():
        assert stats[name].item() == pytest.approx(value), name
    assert total.item() == pytest.approx(6.0)
    assert stats["D_B_fake"].item() == 1.0
    no_identity = CycleGANLoss(LOSSES["lsgan"], 10.0, identity_weight=0.0, adv_weight=1.0)
    assert not no_identity.identity
    assert "idt_A" not in no_identity.g(D_A, D_B, a, b, out)[1]
    with pytest.raises(ValueError, match="run G with identity=True"):
        loss.g(D_A, D_B, a, b, out._replace(idt_a=None))


def test_a_cyclegan_step_backpropagates_into_the_right_models():
    torch.manual_seed(0)
    G = CycleGenerators(channels=3, width=4, n_blocks=1)
    D_A, D_B = (PatchDiscriminator(3, width=4, n_layers=2) for _ in range(2))
    loss = CycleGANLoss(LOSSES["lsgan"], cycle_weight=10.0, identity_weight=0.5, adv_weight=1.0)
    pool_a, pool_b = ImagePool(size=50, seed=0), ImagePool(size=50, seed=1)
    a, b = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    out = G(a, b, identity=loss.identity)
    # D phase on the detached fakes, each forward followed by its own backward (under DDP,
    # two forwards before a backward leave the gradients unsynchronised, without an error)
    for D, real, fake, pool in ((D_A, a, out.fake_a, pool_a), (D_B, b, out.fake_b, pool_b)):
        loss.d_real(D, real)[0].backward()
        loss.d_fake(D, pool.query(fake))[0].backward()
    assert all(p.grad is not None for D in (D_A, D_B) for p in D.parameters())
    assert all(p.grad is None for p in G.parameters())
    # G phase, D frozen
    for D in (D_A, D_B):
        D.requires_grad_(False)
    total, _ = loss.g(D_A, D_B, a, b, out)
    total.backward()
    assert all(p.grad is not None for p in G.parameters())


def test_pix2pix_step_with_the_unet_and_patchgan():
    torch.manual_seed(0)
    G = UNetGenerator(3, 3, width=4, resolution=32)
    D = PatchDiscriminator(6, width=4, n_layers=2)
    loss = Pix2PixLoss(LOSSES["nonsaturating"], l1_weight=100.0, adv_weight=1.0)
    a, b = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    fake_b = G(a)
    term, logits = loss.d_real(D, a, b)
    term.backward()  # before the next D forward
    assert logits.shape == (2, 1, 6, 6)
    term, logits = loss.d_fake(D, a, fake_b)
    term.backward()
    assert all(p.grad is None for p in G.parameters())
    D.requires_grad_(False)
    total, stats = loss.g(D, a, b, fake_b)
    total.backward()
    assert all(p.grad is not None for p in G.parameters())
    assert set(stats) == {"adv", "l1", "D_fake"}
