"""R3GAN: shapes and backward passes on tiny models, identity blocks and fix-up scaling at init,
the [1, 3, 3, 1] resamplers, the paper's parameter counts, config round trips, bad configs."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganlib.errors import ConfigError
from ganlib.models.base import without_arch
from ganlib.models.r3gan import (
    LOWPASS,
    LRELU_GAIN,
    PRESETS,
    R3Discriminator,
    R3Generator,
    ResidualBlock,
    downsample2d,
    num_stages,
    preset,
    upsample2d,
)

Z_DIM = 8
NUM_CLASSES = 3
TINY = {"width": 16, "blocks": 1}  # 2x16 = 32 channels in the 3x3 convs: 2 groups of 16


def _tiny(resolution=32, channels=3, num_classes=0, **kw):
    """A tiny (G, D) pair: TINY unless ``kw`` says otherwise (``widths`` replaces ``width``)."""
    kw = {k: v for k, v in TINY.items() if not (k == "width" and "widths" in kw)} | kw
    G = R3Generator(
        z_dim=Z_DIM, resolution=resolution, channels=channels, num_classes=num_classes, **kw
    )
    D = R3Discriminator(resolution=resolution, channels=channels, num_classes=num_classes, **kw)
    return G, D


def _inputs(n, num_classes):
    labels = torch.arange(n) % num_classes if num_classes else None
    return torch.randn(n, Z_DIM), labels


@pytest.mark.parametrize(
    ("resolution", "channels", "num_classes"),
    [
        (16, 1, 0),
        (16, 3, NUM_CLASSES),
        (32, 1, NUM_CLASSES),
        (32, 3, 0),
        (64, 3, NUM_CLASSES),
        (256, 1, 0),
    ],
)
def test_shapes_and_backward(resolution, channels, num_classes):
    torch.manual_seed(0)
    # 16 channels at 4x4 and 8x8, 8 above (one group of 16 in the 3x3 convs): the 1x1 convs
    # of the transitions where the width changes run too.
    widths = [16, 16] + [8] * (num_stages(resolution) - 2)
    G, D = _tiny(resolution, channels, num_classes, widths=widths)
    n = 1 if resolution > 64 else 2  # one 256 px image costs as much as 32 at 32 px
    z, labels = _inputs(n, num_classes)

    fake = G(z, labels)
    logits = D(fake, labels)
    assert fake.shape == (n, channels, resolution, resolution)
    assert logits.shape == (n,)
    assert len(G.stages) == len(D.stages) == num_stages(resolution)

    logits.mean().backward()
    for model in (G, D):
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # The zeroed last convs are what learns first: their gradients are not zero.
        assert any(
            m.conv3.weight.grad.abs().sum() > 0
            for m in model.modules()
            if isinstance(m, ResidualBlock)
        )


def test_output_is_linear_about_unit_scale():
    """No tanh: G's output is not clamped, yet starts at about unit scale."""
    torch.manual_seed(0)
    G, _ = _tiny()
    with torch.no_grad():
        fake = G(*_inputs(64, 0))
    assert 0.05 < fake.std().item() < 2


@pytest.mark.parametrize("num_classes", [0, NUM_CLASSES])
def test_every_residual_block_is_the_identity_at_init(num_classes):
    torch.manual_seed(0)
    G, D = _tiny(64, 3, num_classes, widths=[32, 32, 16, 16, 16], blocks=[2, 1, 1, 2, 1])
    seen = []

    def check(block, inputs, output):
        seen.append(block)
        assert torch.equal(output, inputs[0])  # exactly: x + conv3(...) with conv3 = 0

    for model in (G, D):
        for block in model.modules():
            if isinstance(block, ResidualBlock):
                block.register_forward_hook(check)
    z, labels = _inputs(2, num_classes)
    with torch.no_grad():
        D(G(z, labels), labels)
    assert len(seen) == 2 * 7


def test_fixup_scaling():
    """The first two convs of a block: N(0, lrelu_gain * L^(-1/4) / sqrt(fan_in)); the last 0."""
    torch.manual_seed(0)
    blocks = [2, 2, 2, 2]  # L = 8 blocks in each network
    G, D = _tiny(32, 3, 0, width=64, blocks=blocks)
    for model in (G, D):
        for block in [m for m in model.modules() if isinstance(m, ResidualBlock)]:
            for conv, fan_in in ((block.conv1, 64), (block.conv2, 16 * 9)):
                want = LRELU_GAIN * 8 ** (-1 / 4) / math.sqrt(fan_in)
                assert conv.weight.std().item() == pytest.approx(want, rel=0.05)
            assert (block.conv3.weight == 0).all()
            assert (block.act1.bias == 0).all() and (block.act2.bias == 0).all()


def test_lowpass_filter_is_1331_and_sums_to_1():
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    torch.testing.assert_close(LOWPASS, torch.outer(taps, taps))
    assert LOWPASS.sum().item() == pytest.approx(1.0)


def test_resamplers_equal_the_reference_convolutions():
    """Polyphase slices == the reference's depthwise conv_transpose2d / conv2d of the 4x4
    kernel (gain 4 up, 1 down), zero-padded borders and non-square images included."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64, requires_grad=True)
    kernel = LOWPASS.double()[None, None]  # [1, 1, 4, 4]
    flat = x.reshape(6, 1, 8, 6)
    up_ref = F.conv_transpose2d(flat, 4 * kernel, stride=2, padding=1).reshape(2, 3, 16, 12)
    down_ref = F.conv2d(flat, kernel, stride=2, padding=1).reshape(2, 3, 4, 3)
    torch.testing.assert_close(upsample2d(x), up_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(downsample2d(x), down_ref, rtol=0, atol=1e-12)
    # ... and so are their gradients.
    w_up, w_down = torch.randn_like(up_ref), torch.randn_like(down_ref)
    for out, ref, w in ((upsample2d(x), up_ref, w_up), (downsample2d(x), down_ref, w_down)):
        got, want = (
            torch.autograd.grad((t * w).sum(), x, retain_graph=True)[0] for t in (out, ref)
        )
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_resampling_keeps_constants_and_is_bilinear_inside():
    const = torch.full((1, 2, 8, 8), 0.7)
    up = upsample2d(const)
    assert up.shape == (1, 2, 16, 16)
    torch.testing.assert_close(up[..., 1:-1, 1:-1], torch.full((1, 2, 14, 14), 0.7))
    round_trip = downsample2d(up)
    assert round_trip.shape == const.shape
    torch.testing.assert_close(round_trip[..., 1:-1, 1:-1], const[..., 1:-1, 1:-1])
    # Away from the zero-padded border, upsampling is bilinear interpolation.
    x = torch.randn(1, 2, 8, 8)
    bilinear = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsample2d(x)[..., 1:-1, 1:-1], bilinear[..., 1:-1, 1:-1])


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("name", "resolution", "num_classes", "G_params", "D_params"),
    [("cifar10", 32, 10, 20.8e6, 21.3e6), ("ffhq256", 256, 0, 23.1e6, 23.0e6)],
)
def test_paper_presets_parameter_counts(name, resolution, num_classes, G_params, D_params):
    with torch.device("meta"):  # the shapes without the memory or the init time
        kw = preset(name, resolution)
        G = R3Generator(z_dim=64, resolution=resolution, channels=3, num_classes=num_classes, **kw)
        D = R3Discriminator(resolution=resolution, channels=3, num_classes=num_classes, **kw)
    assert _count(G) == pytest.approx(G_params, rel=0.02)
    assert _count(D) == pytest.approx(D_params, rel=0.02)
    # Every 3x3 conv has 16 channels per group (CIFAR-10: 1536 channels in 96 groups).
    grouped = [m.conv2 for m in [*G.modules(), *D.modules()] if isinstance(m, ResidualBlock)]
    assert len(grouped) == 2 * 2 * num_stages(resolution)
    assert all(c.in_channels // c.groups == 16 for c in grouped)
    if name == "cifar10":
        assert {c.groups for c in grouped} == {96}


def test_presets_are_prefixes_of_their_plans():
    assert preset("ffhq64", 64)["widths"] == preset("ffhq256", 256)["widths"][:5]
    assert preset("cifar10", 32)["widths"] == [768] * 4
    for name in PRESETS:
        kw = preset(name, 16)
        assert len(kw["widths"]) == 3 and kw["group_size"] == 16 and kw["expansion"] == 2
    G = R3Generator(resolution=32, channels=1, num_classes=10, **preset("cpu", 32))
    assert G.config["widths"] == [64, 64, 32, 16] and G.config["blocks"] == [1, 1, 1, 1]


@pytest.mark.parametrize("num_classes", [0, NUM_CLASSES])
def test_rebuild_from_config(num_classes):
    torch.manual_seed(0)
    G, D = _tiny(32, 3, num_classes, widths=[32, 16, 16, 16], blocks=[1, 2, 1, 1])
    with torch.no_grad():  # move every parameter off its init, so equal outputs mean equal weights
        for p in [*G.parameters(), *D.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    z, labels = _inputs(2, num_classes)
    for model in (G, D):
        config = json.loads(json.dumps(model.config))  # plain data, as a checkpoint stores it
        assert config["arch"] == "r3gan" and "width" not in config
        assert config["widths"] == [32, 16, 16, 16] and config["blocks"] == [1, 2, 1, 1]
        rebuilt = type(model)(**without_arch(config))
        assert rebuilt.config == model.config
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
        rebuilt.load_state_dict(model.state_dict())
        x = z if model is G else torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(rebuilt(x, labels), model(x, labels))
    # One saved dict (G's) rebuilds D too; z_dim is the only key D does not take.
    kwargs = without_arch(G.config)
    kwargs.pop("z_dim")
    assert R3Discriminator(**kwargs).config == D.config


def test_labels_change_the_output():
    torch.manual_seed(0)
    G, D = _tiny(16, 3, NUM_CLASSES)
    z = torch.randn(1, Z_DIM).expand(NUM_CLASSES, -1)  # one z, every class
    labels = torch.arange(NUM_CLASSES)
    with torch.no_grad():
        fake = G(z, labels)
        logits = D(fake[:1].expand(NUM_CLASSES, -1, -1, -1), labels)
    assert not torch.allclose(fake[0], fake[1])
    assert not torch.allclose(logits[0], logits[1])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"resolution": 48}, r"r3gan resolution: must be a power of two from 16 to 1024 .*got 48"),
        ({"resolution": 8}, "r3gan resolution"),
        ({"resolution": 2048}, "r3gan resolution"),
        ({"channels": 2}, "r3gan channels: must be 1 or 3, got 2"),
        ({"num_classes": -1}, "r3gan num_classes"),
        (
            {"width": None, "widths": [16, 16, 16]},
            r"r3gan widths: needs 4 entries at resolution 32 .*got 3",
        ),
        ({"blocks": [1, 1]}, "r3gan blocks: needs 4 entries"),
        ({"blocks": [1, 0, 1, 1]}, r"r3gan blocks: every entry must be >= 1"),
        (
            {"width": 12},
            "r3gan widths: 12 x expansion 2 = 24 channels is not a multiple of group_size 16",
        ),
        ({"width": 16, "group_size": 64}, "not a multiple of group_size 64"),
        ({"width": 16, "widths": [16] * 4}, "give exactly one of width"),
        ({"width": None}, "give exactly one of width"),
        ({"group_size": 0}, "r3gan group_size: must be >= 1"),
    ],
)
def test_bad_configs_are_one_line_errors(kw, match):
    for model in (R3Generator, R3Discriminator):
        with pytest.raises(ConfigError, match=match) as info:
            model(**({"resolution": 32, "channels": 3} | TINY | kw))
        assert "\n" not in str(info.value)


def test_bad_presets():
    with pytest.raises(ConfigError, match="r3gan preset: unknown 'stylegan'; known: cpu, cifar10"):
        preset("stylegan", 32)
    with pytest.raises(ConfigError, match="'cifar10' goes up to resolution 32, got 64"):
        preset("cifar10", 64)
    with pytest.raises(ConfigError, match="r3gan z_dim"):
        R3Generator(z_dim=0, **TINY)


def test_bad_inputs_are_refused():
    G, D = _tiny(16, 1, NUM_CLASSES)
    G_uncond, _ = _tiny(16, 1)
    z, labels = _inputs(2, NUM_CLASSES)
    with pytest.raises(ValueError, match="needs labels"):
        G(z)
    with pytest.raises(ValueError, match="was given labels"):
        G_uncond(z, labels)
    with pytest.raises(ValueError, match=r"z must be \[N, 8\]"):
        G(torch.randn(2, 9), labels)
    with pytest.raises(ValueError, match=r"x must be \[N, 1, 16, 16\]"):
        D(torch.randn(2, 3, 16, 16), labels)
