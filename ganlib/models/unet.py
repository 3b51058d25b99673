"""U-Net generator of pix2pix (Isola et al. 2017, "Image-to-Image Translation with Conditional
Adversarial Networks"), with optional gated convolutions (Yu et al. 2019, DeepFill v2).

One network for two tasks: inpainting feeds it the masked image and the mask
(``in_channels = C + 1``, ``out_channels = C``), pix2pix an image of domain A
(``in_channels = C_A``, ``out_channels = C_B``).

Encoder: ``depth`` convolutions 4x4 / stride 2, each halving the resolution; channels
``width, 2 width, 4 width, 8 width, 8 width, ...``; LeakyReLU(0.2); no norm on the first and
the innermost layer (as in pix2pix: the first sees raw pixels, the innermost may be 1x1).
Decoder: back up by 2x upsampling and 3x3 convolutions (where pix2pix has transposed
convolutions: see :class:`ConvBlock`), each followed by the concatenated encoder features of
its resolution (the skip connections); ReLU; tanh output in [-1, 1].

Fully convolutional: any input whose sides are multiples of ``2 ** depth`` works, whatever the
training size; :func:`pad_to_multiple` and :func:`crop` take other sizes there and back.

Gated (``gated=True``): every convolution computes features and a gate, ``act(norm(f)) *
sigmoid(g)``, letting the network learn where the hole is at every layer rather than only from
the mask channel of its input; it costs about twice the convolutions.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import Tensor, nn

from ganlib.models.base import SavedConfig
from ganlib.models.layers import NORMS, UpsampleConv2d, check_image_input, norm_layer


def depth_for(resolution: int) -> int:
    """The U-Net depth whose innermost features are 4x4 at ``resolution`` (at least 1).

    At 64 pixels that is 4 levels and a receptive field larger than the image, so that the
    innermost features see all of it; deeper nets mostly add padding for odd sizes.
    """
    return max(1, int(math.log2(resolution)) - 2)


def _init(module: nn.Module) -> None:
    """pix2pix's init: conv weights N(0, 0.02), biases 0; norm gains N(1, 0.02)."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class ConvBlock(nn.Module):
    """``act(norm(conv(x)))``, or gated: ``act(norm(f)) * sigmoid(g)`` with ``[f, g] = conv(x)``.

    Down (``up=False``): a 4x4 / stride 2 convolution, halving the resolution. Up: a 2x
    nearest-neighbour upsampling and a 3x3 convolution (a "resize-convolution", Odena et al.
    2016; :class:`~ganlib.models.layers.UpsampleConv2d` computes both at once): pix2pix's 4x4
    / stride 2 transposed convolutions overlap unevenly and leave checkerboard dots in flat
    regions, which are easy to see in an inpainted hole and cost FID. Not in place anywhere:
    DDP and autograd need the inputs.
    """

    def __init__(self, c_in: int, c_out: int, *, up: bool, norm: str, act: nn.Module, gated: bool):
        super().__init__()
        c_conv = c_out * (2 if gated else 1)
        # No conv bias before a norm that has its own (an affine norm removes the mean anyway).
        bias = norm == "none"
        if up:
            self.conv = UpsampleConv2d(c_in, c_conv, bias=bias)
        else:
            self.conv = nn.Conv2d(c_in, c_conv, 4, 2, 1, bias=bias)
        self.norm = norm_layer(norm, c_out)
        self.act = act
        self.gated = gated

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)  # [N, c_out (x2 when gated), H', W']
        if not self.gated:
            return self.act(self.norm(h))
        features, gate = h.chunk(2, dim=1)
        return self.act(self.norm(features)) * torch.sigmoid(gate)


class UNetGenerator(SavedConfig):
    """``G(x [N, in_channels, H, W]) -> [N, out_channels, H, W]`` in [-1, 1].

    ``H`` and ``W`` must be multiples of ``2 ** depth`` (:attr:`multiple`). ``depth`` defaults
    to :func:`depth_for` of ``resolution`` (give one of the two).
    """

    arch = "unet"

    @classmethod
    def resolve_config(cls, arguments: dict) -> dict:
        """The saved config holds the resolved depth only, not the resolution it came from."""
        resolution = arguments.pop("resolution")
        if arguments["depth"] is None and resolution is not None:
            arguments["depth"] = depth_for(resolution)
        return arguments

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 32,
        depth: int | None = None,
        *,
        resolution: int | None = None,
        gated: bool = False,
        norm: str = "instance",
    ):
        super().__init__()
        if depth is None:
            if resolution is None:
                raise ValueError("UNetGenerator needs depth or resolution")
            depth = depth_for(resolution)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")
        self.depth = depth
        chs = [min(width * 2**i, 8 * width) for i in range(depth)]  # after each down-block
        self.down = nn.ModuleList(
            ConvBlock(
                c_in,
                c_out,
                up=False,
                norm="none" if i in (0, depth - 1) else norm,
                act=nn.LeakyReLU(0.2),
                gated=gated,
            )
            for i, (c_in, c_out) in enumerate(pairwise([in_channels, *chs]))
        )
        # Up-block i maps resolution level i+1 to level i; its input is the previous up-block's
        # output concatenated with the encoder's features of the same level (not for the
        # innermost, whose input is the innermost encoder output alone).
        self.up = nn.ModuleList(
            ConvBlock(
                chs[i + 1] * (1 if i + 1 == depth - 1 else 2),
                chs[i],
                up=True,
                norm=norm,
                act=nn.ReLU(),
                gated=gated,
            )
            for i in range(depth - 1)
        )
        c_last = chs[0] * (1 if depth == 1 else 2)
        self.to_image = UpsampleConv2d(c_last, out_channels)
        self.apply(_init)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this: ``2 ** depth``."""
        return 2**self.depth

    def forward(self, x: Tensor) -> Tensor:
        check_image_input(x, self.config["in_channels"], self.multiple)
        skips = []
        h = x  # [N, in_channels, H, W]
        for block in self.down:
            h = block(h)  # [N, chs[i], H / 2^(i+1), W / 2^(i+1)]
            skips.append(h)
        skips.pop()  # the innermost features only go up, they have no skip partner
        for block in reversed(self.up):
            h = torch.cat([block(h), skips.pop()], dim=1)  # [N, 2 chs[i], H / 2^(i+1), ...]
        return torch.tanh(self.to_image(h))  # [N, out_channels, H, W]
