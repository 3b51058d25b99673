"""R3GAN (Huang et al. 2024, "The GAN is dead; long live the GAN! A Modern GAN Baseline"), the
generator and discriminator of its config E in plain PyTorch, after the reference code
(github.com/brownvc/R3GAN, ``R3GAN/Networks.py``), without its CUDA ops or bf16 stages.

Both networks are stacks of stages, one per resolution from 4x4 up to ``resolution``, each a
few residual blocks at one width. A block is ResNeXt's bottleneck turned inside out: a 1x1
conv widens the features ``expansion`` times, a grouped 3x3 conv (``group_size`` channels per
group) mixes space, a 1x1 conv narrows back, with a bias and LeakyReLU(0.2) after the first
two; no normalisation anywhere. Fix-up initialisation (the paper's section 3.3) zeroes each
block's last conv, so every block is the identity at step 0, and scales the other two by
``L ** (-1/4)`` (``L`` = blocks in the network), so the residual branches together keep the
signal's variance as they start to learn.

G: ``[z, embed(y)]`` -> linear -> scales a learned 4x4 basis -> stages, each after the first
entered by a 1x1 conv (when the width changes) and a low-pass 2x upsampling -> 1x1 conv to
the image. The output is linear: no tanh, so it is roughly, not strictly, in [-1, 1].
D: the mirror image: 1x1 conv from the image -> stages, each left by a low-pass 2x
downsampling and a 1x1 conv -> a depthwise 4x4 conv (the basis read back) -> linear. A
conditional D projects that vector onto the class's embedding; an unconditional one ends in
one logit.

Widths and block counts are listed per stage in G's order (4x4 first); D reads them in
reverse, so one saved config rebuilds both. :data:`PRESETS` holds the paper's channel plans.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlib.errors import ConfigError
from ganlib.models.base import SavedConfig
from ganlib.models.layers import check_labels

RESOLUTIONS = tuple(2**k for k in range(4, 11))  # 16 ... 1024

LRELU_SLOPE = 0.2
# He's gain for LeakyReLU(0.2): keeps a layer's output variance equal to its input's.
LRELU_GAIN = math.sqrt(2 / (1 + LRELU_SLOPE**2))

# Channels per stage from 4x4 up, and blocks per stage, of the paper's networks: the CIFAR-10
# (32 px), FFHQ-64 and FFHQ-256 presets of the reference's train.py are the first 4, 5 and 7
# stages of one plan (768 = 3/4 of 1024 channels; the 3x3 convs' 96, 48, 24, 12 groups are
# 16 channels each). "cpu" is ours, narrow where the pixels are many: a training step (a D and
# a G update, batch 32, 32 px) takes 0.25-0.3 s on one CPU core; [64, 64, 64, 32] 0.45-0.55 s.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"widths": [64, 64, 32, 16, 8, 8, 8, 8, 8], "blocks": 1},
    "cifar10": {"widths": [768, 768, 768, 768], "blocks": 2},
    "ffhq64": {"widths": [768, 768, 768, 768, 384], "blocks": 2},
    "ffhq256": {"widths": [768, 768, 768, 768, 384, 192, 96], "blocks": 2},
}


def num_stages(resolution: int) -> int:
    """Stages of a network at ``resolution``: one per size 4x4, 8x8, ..., resolution."""
    return int(math.log2(resolution)) - 1


def preset(name: str, resolution: int) -> dict[str, Any]:
    """The constructor arguments (``widths``, ``blocks``, ``group_size``, ``expansion``) of the
    preset ``name`` at ``resolution``: the first stages of its plan, 4x4 up.

    ``R3Generator(resolution=32, num_classes=10, **preset("cifar10", 32))`` is the paper's
    CIFAR-10 generator.
    """
    if name not in PRESETS:
        raise ConfigError(f"r3gan preset: unknown {name!r}; known: {', '.join(PRESETS)}")
    _check_resolution(resolution)
    plan, n = PRESETS[name], num_stages(resolution)
    if n > len(plan["widths"]):
        largest = 2 ** (len(plan["widths"]) + 1)
        raise ConfigError(
            f"r3gan preset: {name!r} goes up to resolution {largest}, got {resolution}"
        )
    return {
        "widths": plan["widths"][:n],
        "blocks": plan["blocks"],
        "group_size": 16,
        "expansion": 2,
    }


def _check_resolution(resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        raise ConfigError(
            f"r3gan resolution: must be a power of two from 16 to 1024 "
            f"({', '.join(map(str, RESOLUTIONS))}), got {resolution!r}"
        )


def _resolve(arguments: dict[str, Any]) -> dict[str, Any]:
    """Check the constructor arguments; ``width`` becomes ``widths``, an int ``blocks`` a list.

    Shared by G and D (same keys but ``z_dim``); the saved config holds the resolved lists.
    """
    resolution = arguments["resolution"]
    _check_resolution(resolution)
    n = num_stages(resolution)
    if arguments["channels"] not in (1, 3):
        raise ConfigError(f"r3gan channels: must be 1 or 3, got {arguments['channels']!r}")
    if arguments["num_classes"] < 0:
        raise ConfigError(f"r3gan num_classes: must be >= 0, got {arguments['num_classes']}")
    for key in ("group_size", "expansion"):
        if arguments[key] < 1:
            raise ConfigError(f"r3gan {key}: must be >= 1, got {arguments[key]}")

    width, widths = arguments.pop("width"), arguments["widths"]
    if (width is None) == (widths is None):
        raise ConfigError(
            "r3gan widths: give exactly one of width (all stages) or widths (one per stage)"
        )
    widths = [width] * n if widths is None else list(widths)
    blocks = arguments["blocks"]
    blocks = [blocks] * n if isinstance(blocks, int) else list(blocks)
    for key, values in (("widths", widths), ("blocks", blocks)):
        if len(values) != n:
            raise ConfigError(
                f"r3gan {key}: needs {n} entries at resolution {resolution} "
                f"(stages 4x4 up to {resolution}x{resolution}), got {len(values)}"
            )
        if any(v < 1 for v in values):
            raise ConfigError(f"r3gan {key}: every entry must be >= 1, got {values}")
    group_size, expansion = arguments["group_size"], arguments["expansion"]
    bad = [w for w in widths if (w * expansion) % group_size]
    if bad:
        raise ConfigError(
            f"r3gan widths: {bad[0]} x expansion {expansion} = {bad[0] * expansion} channels "
            f"is not a multiple of group_size {group_size}"
        )
    return arguments | {"widths": widths, "blocks": blocks}


# -- building blocks ---------------------------------------------------------------------------


def _he_normal(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    """N(0, gain / sqrt(fan_in)) weights, as the reference's ``MSRInitializer``.

    ``gain`` 1 keeps the variance through a linear layer; :data:`LRELU_GAIN` through one that
    a LeakyReLU follows. Gain 0 makes the layer output zero.
    """
    fan_in = layer.weight[0].numel()  # in_channels / groups * kernel area, or in_features
    nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in))
    return layer


def _conv(
    c_in: int, c_out: int, kernel_size: int = 1, groups: int = 1, gain: float = 1.0
) -> nn.Module:
    """A bias-free conv, padded to keep the size (biases live in :class:`BiasedLeakyReLU`)."""
    conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, groups=groups, bias=False)
    return _he_normal(conv, gain)


class BiasedLeakyReLU(nn.Module):
    """``leaky_relu(x + bias, 0.2)`` with a per-channel bias that starts at 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x + self.bias[:, None, None], LRELU_SLOPE)


class ResidualBlock(nn.Module):
    """``x + conv1x1(act(conv3x3_grouped(act(conv1x1(x)))))``: ``[N, C, H, W]`` in and out.

    ``num_blocks`` is ``L``, the blocks in the whole network: fix-up initialisation scales the
    first two convs by ``L ** (-1 / (2m - 2))`` with ``m = 3`` convs per branch, and zeroes the
    last, so the block starts as the identity.
    """

    def __init__(self, channels: int, expansion: int, group_size: int, num_blocks: int):
        super().__init__()
        wide = channels * expansion
        gain = LRELU_GAIN * num_blocks ** (-1 / 4)
        self.conv1 = _conv(channels, wide, gain=gain)
        self.act1 = BiasedLeakyReLU(wide)
        self.conv2 = _conv(wide, wide, 3, groups=wide // group_size, gain=gain)
        self.act2 = BiasedLeakyReLU(wide)
        self.conv3 = _conv(wide, channels, gain=0.0)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act1(self.conv1(x))  # [N, e C, H, W]
        h = self.act2(self.conv2(h))
        return x + self.conv3(h)


# The reference's resampling filter [1, 2, 1] is, for 2x interpolation, convolved with the box
# [1, 1] first (its CreateLowpassKernel): [1, 3, 3, 1], i.e. bilinear interpolation, StyleGAN2's
# kernel; 2-D as an outer product, normalised to sum 1. Outside the image is zero, as in the
# reference's upfirdn2d, so a constant image stays constant only away from the border.
TAPS = (1 / 8, 3 / 8, 3 / 8, 1 / 8)
LOWPASS = torch.outer(torch.tensor(TAPS), torch.tensor(TAPS))  # [4, 4], sums to 1

# Both resamplers run the separable filter as its two polyphase 2-tap halves along H, then W:
# shifted slices and a weighted sum. Depthwise convs of the [4, 4] kernel (the reference's
# pure-PyTorch path) give the same numbers (tested) but made a CPU training step of the "cpu"
# preset at 32 px 1.4-1.7x slower (0.36-0.45 s against 0.24-0.26 s of CPU time).


def _shift(x: Tensor, dim: int, by: int) -> Tensor:
    """``x`` moved ``by`` (+1 or -1) along ``dim``, zero-filled: ``y[i] = x[i - by]``."""
    n = x.shape[dim]
    pad = [0, 0] * (x.dim() - 1 - dim) + ([1, 0] if by > 0 else [0, 1])
    return F.pad(x, pad).narrow(dim, 0 if by > 0 else 1, n)


def _upsample1d(x: Tensor, dim: int) -> Tensor:
    # Zero insertion, then the filter at gain 2: even outputs 2 (1/8 x[i-1] + 3/8 x[i]), odd
    # ones 2 (3/8 x[i] + 1/8 x[i+1]).
    a, b = 2 * TAPS[0], 2 * TAPS[1]
    even = a * _shift(x, dim, 1) + b * x
    odd = b * x + a * _shift(x, dim, -1)
    return torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)


def _downsample1d(x: Tensor, dim: int) -> Tensor:
    # y[i] = 1/8 x[2i-1] + 3/8 x[2i] + 3/8 x[2i+1] + 1/8 x[2i+2], with x[2i] the even samples.
    pairs = x.unflatten(dim, (-1, 2))
    even, odd = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)
    return TAPS[0] * (_shift(odd, dim, 1) + _shift(even, dim, -1)) + TAPS[1] * (even + odd)


def upsample2d(x: Tensor) -> Tensor:
    """Low-pass 2x upsampling, ``[N, C, H, W] -> [N, C, 2H, 2W]``: zero insertion, then the
    [1, 3, 3, 1] filter at gain 4 (bilinear interpolation away from the border)."""
    return _upsample1d(_upsample1d(x, 2), 3)


def downsample2d(x: Tensor) -> Tensor:
    """Low-pass 2x downsampling, ``[N, C, H, W] -> [N, C, H/2, W/2]``: the [1, 3, 3, 1] filter,
    then every second pixel."""
    return _downsample1d(_downsample1d(x, 2), 3)


class UpTransition(nn.Module):
    """G's transition into a stage: 1x1 conv (where the width changes), then 2x upsampling;
    the conv runs at the lower resolution, where it is 4x cheaper."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = _conv(c_in, c_out) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return upsample2d(self.conv(x))


class DownTransition(nn.Module):
    """D's transition out of a stage: 2x downsampling, then a 1x1 conv (where the width
    changes), again at the lower resolution."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = _conv(c_in, c_out) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(downsample2d(x))


# -- the networks ------------------------------------------------------------------------------


class R3Generator(SavedConfig):
    """R3GAN generator: ``G(z [N, z_dim], labels [N] | None) -> [N, channels, R, R]``.

    Give ``width`` (the same for every stage) or ``widths`` (one per stage, 4x4 first), and
    ``blocks`` per stage (one int for all, or a list); :func:`preset` gives the paper's. The
    saved config holds the resolved ``widths`` and ``blocks`` lists.
    """

    arch = "r3gan"

    @classmethod
    def resolve_config(cls, arguments: dict[str, Any]) -> dict[str, Any]:
        if arguments["z_dim"] < 1:
            raise ConfigError(f"r3gan z_dim: must be >= 1, got {arguments['z_dim']}")
        return _resolve(arguments)

    def __init__(
        self,
        z_dim: int = 64,
        resolution: int = 32,
        channels: int = 3,
        width: int | None = None,
        num_classes: int = 0,
        widths: list[int] | None = None,
        blocks: int | list[int] = 2,
        group_size: int = 16,
        expansion: int = 2,
    ):
        super().__init__()
        widths, blocks = self.config["widths"], self.config["blocks"]
        num_blocks = sum(blocks)
        # The class enters once, as z_dim more inputs next to z (the reference's embedding
        # width): a one-hot Linear, i.e. an embedding, with N(0, 1/sqrt(classes)) entries.
        self.embed = None
        if num_classes > 0:
            self.embed = nn.Embedding(num_classes, z_dim)
            nn.init.normal_(self.embed.weight, 0.0, 1 / math.sqrt(num_classes))
        z_in = z_dim * (2 if num_classes > 0 else 1)
        self.linear = _he_normal(nn.Linear(z_in, widths[0], bias=False))
        self.basis = nn.Parameter(torch.randn(widths[0], 4, 4))  # scaled per channel by linear
        stages = []
        for i, (c_out, n) in enumerate(zip(widths, blocks, strict=True)):
            layers = [] if i == 0 else [UpTransition(widths[i - 1], c_out)]
            layers += [ResidualBlock(c_out, expansion, group_size, num_blocks) for _ in range(n)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.to_image = _conv(widths[-1], channels)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.config["z_dim"]:
            raise ValueError(f"z must be [N, {self.config['z_dim']}], got {list(z.shape)}")
        check_labels(labels, z.shape[0], self.config["num_classes"])
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)  # [N, 2 z_dim]
        h = self.basis * self.linear(z)[:, :, None, None]  # [N, C, 4, 4]
        for stage in self.stages:
            h = stage(h)  # [N, C_i, 4 * 2**i, 4 * 2**i]
        return self.to_image(h)  # [N, channels, R, R], linear: no tanh


class R3Discriminator(SavedConfig):
    """R3GAN discriminator: ``D(x [N, channels, R, R], labels [N] | None) -> logits [N]``.

    Takes the same arguments as :class:`R3Generator` but ``z_dim``, widths and blocks in G's
    order (4x4 first); D runs its stages from ``resolution`` down to 4x4.
    """

    arch = "r3gan"

    @classmethod
    def resolve_config(cls, arguments: dict[str, Any]) -> dict[str, Any]:
        return _resolve(arguments)

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 3,
        width: int | None = None,
        num_classes: int = 0,
        widths: list[int] | None = None,
        blocks: int | list[int] = 2,
        group_size: int = 16,
        expansion: int = 2,
    ):
        super().__init__()
        widths, blocks = self.config["widths"][::-1], self.config["blocks"][::-1]  # R first
        num_blocks = sum(blocks)
        self.from_image = _conv(channels, widths[0])
        stages = []
        for i, (c_in, n) in enumerate(zip(widths, blocks, strict=True)):
            layers = [ResidualBlock(c_in, expansion, group_size, num_blocks) for _ in range(n)]
            if i + 1 < len(widths):
                layers.append(DownTransition(c_in, widths[i + 1]))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        # The 4x4 basis read back: one 4x4 filter per channel, then a linear map to the
        # logit, or (conditional) to a vector projected onto the class's embedding.
        c = widths[-1]
        self.basis = _he_normal(nn.Conv2d(c, c, 4, groups=c, bias=False))
        self.linear = _he_normal(nn.Linear(c, c if num_classes > 0 else 1, bias=False))
        self.embed = None
        if num_classes > 0:
            # The reference's one-hot Linear at gain 1/sqrt(c): entries N(0, 1/sqrt(c K)), so
            # the projection of a unit-variance c-vector starts with variance 1/K.
            self.embed = nn.Embedding(num_classes, c)
            nn.init.normal_(self.embed.weight, 0.0, 1 / math.sqrt(c * num_classes))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        c, r = self.config["channels"], self.config["resolution"]
        if x.dim() != 4 or x.shape[1:] != (c, r, r):
            raise ValueError(f"x must be [N, {c}, {r}, {r}], got {list(x.shape)}")
        check_labels(labels, x.shape[0], self.config["num_classes"])
        h = self.from_image(x)  # [N, C_0, R, R]
        for stage in self.stages:
            h = stage(h)  # resolution halves between stages, down to [N, C, 4, 4]
        h = self.linear(self.basis(h).flatten(1))  # [N, C] (conditional) or [N, 1]
        if self.embed is None:
            return h.squeeze(1)  # [N]
        return torch.sum(h * self.embed(labels), dim=1)  # [N]
