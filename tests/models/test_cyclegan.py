"""CycleGAN's ResNet generator and the pair of generators: shapes, the paper's layout, the
identity start, one forward per step."""

import pytest
import torch

from ganlib.models.cyclegan import CycleGenerators, ResnetGenerator


def test_resnet_generator_shapes_backward_and_rebuild():
    G = ResnetGenerator(in_channels=3, out_channels=1, width=4, n_blocks=2)
    x = torch.randn(2, 3, 24, 32, requires_grad=True)
    y = G(x)
    assert y.shape == (2, 1, 24, 32) and y.abs().max() <= 1
    y.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())
    assert x.grad.abs().sum() > 0
    again = ResnetGenerator(**{k: v for k, v in G.config.items() if k != "arch"})
    again.load_state_dict(G.state_dict())
    torch.testing.assert_close(again(x), y)
    with pytest.raises(ValueError, match=r"multiples of 4 \(use pad_to_multiple\)"):
        G(torch.randn(1, 3, 30, 32))


def test_resnet_generator_follows_the_paper_layout():
    G = ResnetGenerator(3, 3, width=64, n_blocks=9)
    convs = [m for m in G.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    # c7s1-64, d128, d256, 9 x R256 (2 convs each), u128, u64, c7s1-3
    channels = [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]) for m in convs]
    assert channels == [
        (3, 64, 7, 1),
        (64, 128, 3, 2),
        (128, 256, 3, 2),
        *[(256, 256, 3, 1)] * 18,
        (256, 128, 3, 2),
        (128, 64, 3, 2),
        (64, 3, 7, 1),
    ]
    # The reference code prints 11.378 M; ours drops the conv biases before a norm and adds
    # the norms' gains and biases.
    n_params = sum(p.numel() for p in G.parameters())
    assert 11.37e6 < n_params < 11.39e6


def test_skip_generator_starts_as_the_identity_and_learns():
    G = ResnetGenerator(3, 3, width=4, n_blocks=1, skip=True)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = G(x)
    assert torch.equal(y, x)
    (y - x.flip(0)).square().mean().backward()
    assert G.net[-2].weight.grad.abs().sum() > 0  # the zero-initialised last conv learns
    with pytest.raises(ValueError, match="skip needs in_channels == out_channels"):
        ResnetGenerator(3, 1, skip=True)


def test_cycle_generators_run_every_pass_in_one_forward():
    G = CycleGenerators(channels=3, width=4, n_blocks=1)
    a, b = torch.randn(2, 3, 16, 16), torch.randn(3, 3, 16, 16)
    out = G(a, b)
    assert out.fake_b.shape == out.rec_a.shape == out.idt_a.shape == a.shape
    assert out.fake_a.shape == out.rec_b.shape == out.idt_b.shape == b.shape
    torch.testing.assert_close(out.rec_a, G.G_BA(G.G_AB(a)))
    torch.testing.assert_close(out.idt_b, G.G_AB(b))
    assert G(a, b, identity=False).idt_a is None
    assert G.generator("BtoA") is G.G_BA
    with pytest.raises(ValueError, match="direction must be AtoB or BtoA"):
        G.generator("AtoA")
