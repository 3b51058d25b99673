"""Shapes, backward passes and config round-trips for every architecture; EMA arithmetic."""

import json

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ganlib.errors import GanlibError
from ganlib.models import (
    ARCHITECTURES,
    SUPPORTED_RESOLUTIONS,
    build_discriminator,
    build_gan,
    build_generator,
)
from ganlib.models.ema import ema_beta, ema_copy, ema_update
from ganlib.models.layers import UpsampleConv2d

TINY = {"z_dim": 16, "width": 8}
NUM_CLASSES = 3


def _tiny_gan(arch, resolution=32, channels=1, num_classes=0):
    return build_gan(
        arch, resolution=resolution, channels=channels, num_classes=num_classes, **TINY
    )


def _inputs(n, num_classes, z_dim=TINY["z_dim"]):
    labels = torch.arange(n) % num_classes if num_classes else None
    return torch.randn(n, z_dim), labels


@pytest.mark.parametrize("num_classes", [0, NUM_CLASSES])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_shapes_and_backward(arch, resolution, channels, num_classes):
    torch.manual_seed(0)
    G, D = _tiny_gan(arch, resolution, channels, num_classes)
    z, labels = _inputs(2, num_classes)

    fake = G(z, labels)
    logits = D(fake, labels)
    assert fake.shape == (2, channels, resolution, resolution)
    if arch != "r3gan":  # r3gan's output is linear (the paper: no tanh)
        assert fake.abs().max() <= 1  # tanh output
    assert logits.shape == (2,)

    logits.mean().backward()
    for model in (G, D):
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_resolution_128_shapes(arch):
    width = 8 if arch == "r3gan" else 2  # r3gan: 2 x width must fill groups of 16
    G, D = build_gan(
        arch, z_dim=8, resolution=128, channels=3, width=width, num_classes=NUM_CLASSES
    )
    z, labels = _inputs(2, NUM_CLASSES, z_dim=8)
    with torch.no_grad():
        fake = G(z, labels)
        assert fake.shape == (2, 3, 128, 128)
        assert D(fake, labels).shape == (2,)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_labels_change_the_output(arch):
    torch.manual_seed(0)
    G, D = _tiny_gan(arch, num_classes=NUM_CLASSES)
    G.eval()
    D.eval()
    z = torch.randn(1, TINY["z_dim"]).expand(NUM_CLASSES, -1)  # one z, every class
    labels = torch.arange(NUM_CLASSES)
    # Fresh conditional BatchNorm starts class-independent; give each class its own gain.
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("gain.weight"):
                p.add_(torch.randn_like(p))
        fake = G(z, labels)
        logits = D(fake[:1].expand(NUM_CLASSES, -1, -1, -1), labels)
    assert not torch.allclose(fake[0], fake[1])
    assert not torch.allclose(logits[0], logits[1])


@pytest.mark.parametrize("num_classes", [0, NUM_CLASSES])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_rebuild_from_config(arch, num_classes):
    torch.manual_seed(0)
    G, D = _tiny_gan(arch, channels=3, num_classes=num_classes)
    z, labels = _inputs(2, num_classes)
    # Train-mode forwards move BatchNorm statistics and spectral-norm vectors off their init.
    D(G(z, labels), labels)

    for model, build in ((G, build_generator), (D, build_discriminator)):
        config = json.loads(json.dumps(model.config))  # plain data, as a checkpoint stores it
        assert config["arch"] == arch
        rebuilt = build(config)
        assert rebuilt.state_dict().keys() == model.state_dict().keys()
        rebuilt.load_state_dict(model.state_dict())
        model.eval()
        rebuilt.eval()
        x = z if model is G else torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(rebuilt(x, labels), model(x, labels))

    # One saved dict (G's) rebuilds D too; z_dim is the only key D drops.
    assert build_discriminator(G.config).config == D.config


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_bad_resolution(arch):
    if arch == "r3gan":
        with pytest.raises(GanlibError, match="r3gan resolution: must be a power of two from 16"):
            _tiny_gan(arch, resolution=48)
        assert SUPPORTED_RESOLUTIONS[arch] == (16, 32, 64, 128, 256, 512, 1024)
        return
    with pytest.raises(ValueError, match=f"{arch} supports resolution 32, 64, 128; got 48"):
        _tiny_gan(arch, resolution=48)
    assert SUPPORTED_RESOLUTIONS[arch] == (32, 64, 128)


def test_unknown_arch_names_the_known_ones():
    with pytest.raises(ValueError, match="known: dcgan, resnet, r3gan"):
        _tiny_gan("stylegan")
    with pytest.raises(ValueError, match="unknown arch"):
        build_generator({"arch": "stylegan", "z_dim": 16})


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_bad_inputs_are_refused(arch):
    G, D = _tiny_gan(arch, num_classes=NUM_CLASSES)
    G_uncond, _ = _tiny_gan(arch)
    z, labels = _inputs(2, NUM_CLASSES)
    with pytest.raises(ValueError, match="needs labels"):
        G(z)
    with pytest.raises(ValueError, match="was given labels"):
        G_uncond(z, labels)
    with pytest.raises(ValueError, match=r"labels must be \[2\]"):
        G(z, labels[:1])
    with pytest.raises(ValueError, match=r"z must be \[N, 16\]"):
        G(torch.randn(2, 17), labels)
    with pytest.raises(ValueError, match=r"x must be \[N, 1, 32, 32\]"):
        D(torch.randn(2, 3, 32, 32), labels)


def test_spectral_norm_on_every_resnet_discriminator_weight():
    _, D = _tiny_gan("resnet", num_classes=NUM_CLASSES)
    weighted = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(weighted) > 0
    assert all(parametrize.is_parametrized(m, "weight") for m in weighted)
    # The effective weight has spectral norm ~1 (power iteration converged at registration).
    head = D.head.linear.weight  # [1, F]: its spectral norm is its Euclidean norm
    assert torch.linalg.vector_norm(head).item() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    ("shape", "c_out", "bias"), [((2, 3, 4, 5), 7, True), ((1, 5, 1, 3), 2, False)]
)
def test_upsample_conv_is_a_conv_of_the_upsampled_input(shape, c_out, bias):
    """The phase decomposition equals conv3x3(nearest 2x upsampling) in value and in its
    gradients, odd and one-pixel sizes and the zero-padded borders included."""
    torch.manual_seed(0)
    fast = UpsampleConv2d(shape[1], c_out, bias=bias).double()
    plain = nn.Conv2d(shape[1], c_out, 3, 1, 1, bias=bias).double()
    plain.load_state_dict(fast.state_dict())  # the same parameters, the same names
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    out = fast(x)
    ref = plain(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    assert out.shape == (shape[0], c_out, 2 * shape[2], 2 * shape[3])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    weights = torch.randn_like(ref)
    grads = torch.autograd.grad((out * weights).sum(), [x, fast.weight])
    grads_ref = torch.autograd.grad((ref * weights).sum(), [x, plain.weight])
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_ema_copy_is_frozen_and_separate():
    G, _ = _tiny_gan("dcgan")
    G_ema = ema_copy(G)
    assert not G_ema.training
    assert not any(p.requires_grad for p in G_ema.parameters())
    with torch.no_grad():
        next(G.parameters()).add_(1.0)
    assert not torch.equal(next(G.parameters()), next(G_ema.parameters()))


def test_ema_update_math():
    G, _ = _tiny_gan("dcgan")
    G_ema = ema_copy(G)
    with torch.no_grad():
        for p, p_ema in zip(G.parameters(), G_ema.parameters(), strict=True):
            p.fill_(1.0)
            p_ema.fill_(0.0)
        G.norms[0].bn.running_mean.fill_(5.0)

    ema_update(G_ema, G, beta=1.0)  # keeps G_ema's parameters
    assert all((p == 0).all() for p in G_ema.parameters())
    ema_update(G_ema, G, beta=0.9)  # 0.9 * 0 + 0.1 * 1
    assert all(torch.allclose(p, torch.full_like(p, 0.1)) for p in G_ema.parameters())
    ema_update(G_ema, G, beta=0.0)  # copies G exactly
    assert all((p == 1).all() for p in G_ema.parameters())
    # Buffers are copied whatever beta is.
    assert (G_ema.norms[0].bn.running_mean == 5).all()


def test_ema_update_refuses_a_wrapped_generator():
    G, _ = _tiny_gan("dcgan")
    with pytest.raises(ValueError, match="unwrap G"):
        ema_update(ema_copy(G), nn.Sequential(G), beta=0.5)


def test_ema_beta():
    assert ema_beta(batch_size=1000, half_life_kimg=1.0) == pytest.approx(0.5)
    assert ema_beta(batch_size=64, half_life_kimg=10.0) == pytest.approx(0.5 ** (64 / 10_000))
    assert ema_beta(batch_size=64, half_life_kimg=0.0) == 0.0
    with pytest.raises(ValueError, match="half_life_kimg"):
        ema_beta(batch_size=64, half_life_kimg=-1.0)
