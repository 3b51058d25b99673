"""ResNet GAN of SNGAN (Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
Networks") and its projection cGAN (Miyato & Koyama 2018), with BigGAN's (Brock et al. 2019)
channel plans for 64 and 128 pixels; no self-attention, shared embedding or truncation.

G: z -> linear -> 4x4, residual up-blocks (BatchNorm, ReLU, nearest 2x upsample, 3x3 convs),
then BatchNorm, ReLU, 3x3 conv, tanh. Conditional G uses conditional BatchNorm in its blocks.
D: residual down-blocks (ReLU, 3x3 convs, 2x2 average pooling) with spectral norm on every
conv, linear and embedding, then ReLU, global sum pooling and the projection head.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ganlib.models.base import SavedConfig
from ganlib.models.layers import (
    ConditionalBatchNorm2d,
    ProjectionHead,
    UpsampleConv2d,
    check_labels,
)

# Channels as multiples of ``width`` (BigGAN's ``ch``): G's at 4x4, then after each up-block;
# D's after each block, with whether that block halves the resolution. These are BigGAN's
# ``G_arch`` / ``D_arch`` tables; at 32 pixels that is SNGAN's CIFAR layout (D stops at 8x8).
G_CHANNELS = {
    32: (4, 4, 4, 4),
    64: (16, 16, 8, 4, 2),
    128: (16, 16, 8, 4, 2, 1),
}
D_BLOCKS = {
    32: ((4, True), (4, True), (4, False), (4, False)),
    64: ((1, True), (2, True), (4, True), (8, True), (16, False)),
    128: ((1, True), (2, True), (4, True), (8, True), (16, True), (16, False)),
}
RESOLUTIONS = tuple(G_CHANNELS)


def _check_resolution(resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        supported = ", ".join(map(str, RESOLUTIONS))
        raise ValueError(f"resnet supports resolution {supported}; got {resolution}")


def _glorot_init(module: nn.Module) -> None:
    """SNGAN's init: Glorot-uniform conv and linear weights, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


def _conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1)


class GBlock(nn.Module):
    """Residual up-block: ``[N, c_in, H, W] -> [N, c_out, 2H, 2W]``."""

    def __init__(self, c_in: int, c_out: int, num_classes: int):
        super().__init__()
        self.norm1 = ConditionalBatchNorm2d(c_in, num_classes)
        self.conv1 = UpsampleConv2d(c_in, c_out)  # upsamples 2x, then the 3x3 conv
        self.norm2 = ConditionalBatchNorm2d(c_out, num_classes)
        self.conv2 = _conv3x3(c_out, c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        h = self.conv1(F.relu(self.norm1(x, labels)))  # [N, c_out, 2H, 2W]
        h = self.conv2(F.relu(self.norm2(h, labels)))
        # A 1x1 conv commutes with nearest upsampling, so run it at the lower resolution.
        return h + F.interpolate(self.shortcut(x), scale_factor=2, mode="nearest")


class DBlock(nn.Module):
    """Residual down-block: ``[N, c_in, H, W] -> [N, c_out, H/2, W/2]`` (or same size).

    The first block of D skips the pre-activation ReLU (SNGAN's "optimized block"): the input
    is the image itself.
    """

    def __init__(self, c_in: int, c_out: int, downsample: bool, preactivation: bool):
        super().__init__()
        self.downsample = downsample
        self.preactivation = preactivation
        self.conv1 = _conv3x3(c_in, c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
            # A 1x1 conv commutes with average pooling, so pool first: 4x fewer pixels.
            x = F.avg_pool2d(x, 2)
        return h + self.shortcut(x)


class Generator(SavedConfig):
    """ResNet generator: ``G(z [N, z_dim], labels [N] | None) -> [N, channels, R, R]``."""

    arch = "resnet"

    def __init__(
        self,
        z_dim: int = 128,
        resolution: int = 32,
        channels: int = 1,
        width: int = 64,
        num_classes: int = 0,
    ):
        super().__init__()
        _check_resolution(resolution)
        chs = [width * m for m in G_CHANNELS[resolution]]
        self.linear = nn.Linear(z_dim, chs[0] * 4 * 4)
        self.blocks = nn.ModuleList(
            GBlock(c_in, c_out, num_classes) for c_in, c_out in pairwise(chs)
        )
        # The output BatchNorm stays unconditional, as in SNGAN.
        self.norm = nn.BatchNorm2d(chs[-1])
        self.to_image = _conv3x3(chs[-1], channels)
        self.apply(_glorot_init)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.config["z_dim"]:
            raise ValueError(f"z must be [N, {self.config['z_dim']}], got {list(z.shape)}")
        check_labels(labels, z.shape[0], self.config["num_classes"])
        h = self.linear(z).unflatten(1, (-1, 4, 4))  # [N, ch, 4, 4]
        for block in self.blocks:
            h = block(h, labels)  # resolution doubles each block
        return torch.tanh(self.to_image(F.relu(self.norm(h))))  # [N, C, R, R]


class Discriminator(SavedConfig):
    """Spectrally normalised ResNet discriminator: ``D(x [N, C, R, R], labels) -> logits [N]``."""

    arch = "resnet"

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 1,
        width: int = 64,
        num_classes: int = 0,
    ):
        super().__init__()
        _check_resolution(resolution)
        blocks, c_in = [], channels
        for i, (mult, downsample) in enumerate(D_BLOCKS[resolution]):
            blocks.append(DBlock(c_in, width * mult, downsample, preactivation=i > 0))
            c_in = width * mult
        self.blocks = nn.Sequential(*blocks)
        self.head = ProjectionHead(c_in, num_classes)
        self.apply(_glorot_init)
        # Spectral norm on every weight of D, the class embedding included (SNGAN's code).
        # Applied after init: registering it runs power iterations on the current weight.
        # Listed first because registering a parametrization adds submodules.
        weighted = (nn.Conv2d, nn.Linear, nn.Embedding)
        for layer in [m for m in self.modules() if isinstance(m, weighted)]:
            spectral_norm(layer)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        c, r = self.config["channels"], self.config["resolution"]
        if x.dim() != 4 or x.shape[1:] != (c, r, r):
            raise ValueError(f"x must be [N, {c}, {r}, {r}], got {list(x.shape)}")
        check_labels(labels, x.shape[0], self.config["num_classes"])
        h = self.blocks(x)  # [N, ch, 8, 8] at 32 pixels, [N, ch, 4, 4] at 64 and 128
        h = torch.sum(F.relu(h), dim=(2, 3))  # global sum pooling: [N, ch]
        return self.head(h, labels)  # [N]
