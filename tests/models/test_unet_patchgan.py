"""U-Net generator and PatchGAN discriminator: shapes, backward passes, padding, configs."""

import json

import pytest
import torch
from torch import nn

from ganlib.models.layers import crop, pad_to_multiple
from ganlib.models.patchgan import PatchDiscriminator
from ganlib.models.unet import UNetGenerator, depth_for


def _grads_ok(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("size", [32, 64])
def test_unet_and_patchgan_shapes_and_backward(size, gated, norm):
    torch.manual_seed(0)
    G = UNetGenerator(4, 3, width=4, resolution=size, gated=gated, norm=norm)
    D = PatchDiscriminator(4, width=4, norm=norm)
    x = torch.randn(2, 4, size, size)
    out = G(x)
    assert out.shape == (2, 3, size, size) and out.abs().max() <= 1  # tanh
    logits = D(torch.cat([out, x[:, 3:]], dim=1))
    side = size // 8 - 2  # three stride-2 convs, then two 4x4 stride-1 convs with padding 1
    assert logits.shape == (2, 1, side, side)
    logits.mean().backward()
    _grads_ok(G)
    _grads_ok(D)


@pytest.mark.parametrize("n_layers", [1, 3])
def test_patchgan_features_are_its_activations(n_layers):
    """``return_features`` gives the same logits and every LeakyReLU's output, fine to coarse."""
    torch.manual_seed(0)
    D = PatchDiscriminator(4, width=4, n_layers=n_layers)
    x = torch.randn(2, 4, 32, 32)
    logits, features = D(x, return_features=True)
    assert torch.equal(logits, D(x))
    assert len(features) == n_layers + 1
    sides = [32 // 2 ** (i + 1) for i in range(n_layers)] + [32 // 2**n_layers - 1]
    assert [f.shape[-1] for f in features] == sides
    assert torch.equal(features[0], nn.functional.leaky_relu(D.features[0](x), 0.2))


def test_depth_from_resolution_and_config_round_trip():
    assert [depth_for(r) for r in (8, 32, 64, 128, 256)] == [1, 3, 4, 5, 6]
    G = UNetGenerator(4, 3, width=8, resolution=64, gated=True)
    assert G.config == {
        "arch": "unet",
        "in_channels": 4,
        "out_channels": 3,
        "width": 8,
        "depth": 4,
        "gated": True,
        "norm": "instance",
    }
    assert G.multiple == 16
    cfg = json.loads(json.dumps(G.config))  # plain data
    rebuilt = UNetGenerator(**{k: v for k, v in cfg.items() if k != "arch"})
    rebuilt.load_state_dict(G.state_dict())
    x = torch.randn(1, 4, 48, 80)  # any multiple of 16, not only the training size
    assert torch.equal(rebuilt.eval()(x), G.eval()(x))

    D = PatchDiscriminator(4, width=8, n_layers=2, norm="none", spectral=True)
    cfg = json.loads(json.dumps(D.config))
    D2 = PatchDiscriminator(**{k: v for k, v in cfg.items() if k != "arch"})
    D2.load_state_dict(D.state_dict())
    y = torch.randn(1, 4, 32, 32)
    assert torch.equal(D2.eval()(y), D.eval()(y))


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_unet_depths(depth):
    G = UNetGenerator(2, 1, width=2, depth=depth)
    side = 2**depth  # the smallest input: the innermost features are 1x1
    out = G(torch.randn(2, 2, side, side))
    assert out.shape == (2, 1, side, side)
    out.sum().backward()
    _grads_ok(G)


def test_odd_size_through_pad_and_crop_with_backward():
    G = UNetGenerator(4, 3, width=4, resolution=64)
    x = torch.randn(2, 4, 37, 50, requires_grad=True)
    padded, box = pad_to_multiple(x, G.multiple)
    assert padded.shape == (2, 4, 48, 64) and box == (5, 7, 37, 50)
    assert torch.equal(crop(padded, box), x)  # the crop gives back exactly the input
    assert torch.equal(padded[..., 4, 7:57], x[..., 1, :])  # reflected, not zeros
    out = crop(G(padded), box)
    assert out.shape == (2, 3, 37, 50)
    out.mean().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    _grads_ok(G)


def test_pad_edge_cases():
    x = torch.randn(1, 3, 32, 16)
    same, box = pad_to_multiple(x, 16)
    assert same is x and box == (0, 0, 32, 16)
    tiny = torch.arange(25.0).reshape(1, 1, 5, 5)  # too small to reflect 11 pixels: replicate
    padded, box = pad_to_multiple(tiny, 16)
    assert padded.shape == (1, 1, 16, 16) and torch.equal(crop(padded, box), tiny)
    assert torch.equal(padded[0, 0, 0, :5], padded[0, 0, 5, :5])  # the edge row, repeated
    with pytest.raises(ValueError, match="multiples of 16"):
        UNetGenerator(4, 3, width=4, depth=4)(torch.randn(1, 4, 40, 40))
    with pytest.raises(ValueError, match=r"\[N, 4, H, W\]"):
        UNetGenerator(4, 3, width=4, depth=4)(torch.randn(1, 3, 32, 32))


def test_patchgan_refuses_small_inputs_and_bad_options():
    D = PatchDiscriminator(4, width=4)
    assert D.min_size == 24 and D(torch.randn(1, 4, 24, 24)).shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match=">= 24"):
        D(torch.randn(1, 4, 16, 16))
    for kwargs in ({"norm": "layer"}, {"n_layers": 0}):
        with pytest.raises(ValueError):
            PatchDiscriminator(4, **kwargs)
    with pytest.raises(ValueError):
        UNetGenerator(4, 3, norm="group", depth=2)
    with pytest.raises(ValueError):
        UNetGenerator(4, 3)  # neither depth nor resolution


def test_ddp_friendly_defaults():
    """No in-place activations (autograd and DDP need their inputs), and the default D and G
    carry no buffers: nothing for DDP to broadcast, the same function in train and eval."""
    G, D = UNetGenerator(4, 3, width=4, depth=3), PatchDiscriminator(4, width=4)
    for model in (G, D):
        assert list(model.buffers()) == []
        for m in model.modules():
            assert not getattr(m, "inplace", False), m
    x = torch.randn(2, 4, 32, 32)
    assert torch.equal(D.train()(x), D.eval()(x))


def test_spectral_norm_patchgan_trains():
    D = PatchDiscriminator(4, width=4, norm="none", spectral=True)
    D(torch.randn(2, 4, 32, 32)).mean().backward()
    _grads_ok(D)
    sn = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert len(sn) == 5 and all(hasattr(m, "parametrizations") for m in sn)
