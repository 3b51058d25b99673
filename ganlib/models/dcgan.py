"""DCGAN (Radford et al. 2016, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks"), with optional class conditioning.

G: z ``[N, z_dim]`` -> 4x4 by a transposed conv, then ConvTranspose(4, 2, 1) + BatchNorm + ReLU
blocks that double the resolution while halving the channels, tanh output in [-1, 1].
D: the mirror image: strided Conv(4, 2, 1) + LeakyReLU(0.2), BatchNorm on all but the first
layer, down to 4x4, then one linear layer to a logit (the paper's final 4x4 conv, written as
the linear map it is).

Class-conditional (``num_classes > 0``): G's BatchNorms become conditional BatchNorms (the class
picks the gain and bias at every layer, rather than only entering once with z), and D ends in
the projection head (Miyato & Koyama 2018).
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlib.models.base import SavedConfig
from ganlib.models.layers import ConditionalBatchNorm2d, ProjectionHead, check_labels

RESOLUTIONS = (32, 64, 128)


def _check_resolution(resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        supported = ", ".join(map(str, RESOLUTIONS))
        raise ValueError(f"dcgan supports resolution {supported}; got {resolution}")


def _channels(resolution: int, width: int) -> list[int]:
    """Feature channels at 4x4, 8x8, ..., resolution/2 (G's order; D uses it reversed).

    ``width`` channels at resolution/2, doubling towards 4x4 and capped at 8 * width: 64x64
    with width 128 is the paper's 1024-512-256-128 generator.
    """
    n = int(math.log2(resolution // 4))
    return [min(width * 2**i, 8 * width) for i in reversed(range(n))]


def _dcgan_init(module: nn.Module) -> None:
    """The paper's init: conv and linear weights N(0, 0.02); BatchNorm gain N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(SavedConfig):
    """DCGAN generator: ``G(z [N, z_dim], labels [N] | None) -> [N, channels, R, R]`` in [-1, 1]."""

    arch = "dcgan"

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
        chs = _channels(resolution, width)
        # First conv projects z (as a 1x1 image) to 4x4; each later one doubles the resolution.
        # No conv bias where a BatchNorm follows: BN's own bias replaces it.
        self.convs = nn.ModuleList([nn.ConvTranspose2d(z_dim, chs[0], 4, 1, 0, bias=False)])
        self.convs.extend(
            nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False) for c_in, c_out in pairwise(chs)
        )
        self.norms = nn.ModuleList(ConditionalBatchNorm2d(c, num_classes) for c in chs)
        self.to_image = nn.ConvTranspose2d(chs[-1], channels, 4, 2, 1)
        self.apply(_dcgan_init)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.config["z_dim"]:
            raise ValueError(f"z must be [N, {self.config['z_dim']}], got {list(z.shape)}")
        check_labels(labels, z.shape[0], self.config["num_classes"])
        h = z[:, :, None, None]  # [N, z_dim, 1, 1]
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = F.relu(norm(conv(h), labels))  # [N, ch, 4, 4], then [N, ch/2, 8, 8], ...
        return torch.tanh(self.to_image(h))  # [N, C, R, R]


class Discriminator(SavedConfig):
    """DCGAN discriminator: ``D(x [N, channels, R, R], labels [N] | None) -> logits [N]``."""

    arch = "dcgan"

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 1,
        width: int = 64,
        num_classes: int = 0,
    ):
        super().__init__()
        _check_resolution(resolution)
        chs = _channels(resolution, width)[::-1]  # resolution/2 first, 4x4 last
        # The paper leaves BatchNorm off D's input layer: normalising raw pixels made
        # training unstable.
        layers: list[nn.Module] = [nn.Conv2d(channels, chs[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for c_in, c_out in pairwise(chs):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2),
            ]
        self.features = nn.Sequential(*layers)
        self.head = ProjectionHead(chs[-1] * 4 * 4, num_classes)
        self.apply(_dcgan_init)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        c, r = self.config["channels"], self.config["resolution"]
        if x.dim() != 4 or x.shape[1:] != (c, r, r):
            raise ValueError(f"x must be [N, {c}, {r}, {r}], got {list(x.shape)}")
        check_labels(labels, x.shape[0], self.config["num_classes"])
        h = self.features(x)  # [N, ch, 4, 4]
        return self.head(h.flatten(1), labels)  # [N]
