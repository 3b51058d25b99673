"""CycleGAN's ResNet generator (Zhu et al. 2017, "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks", appendix 7.2; Johnson et al. 2016's architecture).

In the paper's notation, with ``w = width`` (64 in the paper)::

    c7s1-w, d2w, d4w, R4w x n_blocks, u2w, uw, c7s1-C

``c7s1-k``: 7x7 conv, stride 1, k filters, instance norm, ReLU (the last one has tanh instead
of norm and ReLU); ``dk``: 3x3 conv, stride 2; ``Rk``: a residual block of two 3x3 convs;
``uk``: 3x3 transposed conv, stride 2. The stride-1 convs use reflection padding, so that the
image border does not show; the stride-2 ones zero padding, as in the reference code. The paper
uses 6 blocks at 128 pixels and 9 at 256; fewer (and a smaller width) suit 64-pixel images on a
CPU.

Instance norm is affine here (learned gain and bias, as in ganlib's U-Net), where the reference
code has none; a conv followed by a norm has no bias of its own. ``skip=True`` (not in the
paper) makes G predict a change to its input, ``clamp(x + tanh(h), -1, 1)``, with the last conv
zero-initialised so that G starts as the identity: a style that keeps the content then needs
far fewer steps, which is what a CPU budget allows. Fully convolutional: any input whose sides
are multiples of 4 (:attr:`ResnetGenerator.multiple`); use
:func:`ganlib.models.unet.pad_to_multiple` and :func:`~ganlib.models.unet.crop` for others.

:class:`CycleGenerators` holds the two generators of a CycleGAN, ``G_AB`` and ``G_BA``, and runs
all their passes of one training step in a single forward, so that DDP sees one forward per
backward.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from ganlib.models.base import SavedConfig
from ganlib.models.layers import check_image_input, norm_layer

DIRECTIONS = ("AtoB", "BtoA")  # G_AB, G_BA


def _init(module: nn.Module) -> None:
    """The reference code's init: conv weights N(0, 0.02), biases 0; norm gains N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.InstanceNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _conv_norm_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    """A conv with reflection padding (stride 1) or zero padding 1 (stride 2, as the paper)."""
    if stride == 1:
        pad: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2)]
        conv = nn.Conv2d(c_in, c_out, kernel, bias=False)
    else:
        pad, conv = [], nn.Conv2d(c_in, c_out, kernel, stride, padding=1, bias=False)
    return [*pad, conv, norm_layer("instance", c_out), nn.ReLU()]


class ResidualBlock(nn.Module):
    """``x + IN(conv(relu(IN(conv(x)))))``, 3x3 convs with reflection padding: ``[N, C, H, W]``."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm_relu(channels, channels, 3),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            norm_layer("instance", channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(SavedConfig):
    """``G(x [N, in_channels, H, W]) -> [N, out_channels, H, W]`` in [-1, 1].

    H and W must be multiples of 4 (:attr:`multiple`). ``skip`` needs ``in_channels ==
    out_channels``.
    """

    arch = "cyclegan_resnet"

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 64,
        n_blocks: int = 9,
        skip: bool = False,
    ):
        super().__init__()
        if width < 1 or n_blocks < 0:
            raise ValueError(f"width must be >= 1 and n_blocks >= 0, got {width}, {n_blocks}")
        if skip and in_channels != out_channels:
            raise ValueError(
                f"skip needs in_channels == out_channels, got {in_channels}, {out_channels}"
            )
        w = width
        self.net = nn.Sequential(
            *_conv_norm_relu(in_channels, w, 7),  # c7s1-w: [N, w, H, W]
            *_conv_norm_relu(w, 2 * w, 3, stride=2),  # d2w: [N, 2w, H/2, W/2]
            *_conv_norm_relu(2 * w, 4 * w, 3, stride=2),  # d4w: [N, 4w, H/4, W/4]
            *(ResidualBlock(4 * w) for _ in range(n_blocks)),  # R4w: [N, 4w, H/4, W/4]
            *self._up(4 * w, 2 * w),  # u2w: [N, 2w, H/2, W/2]
            *self._up(2 * w, w),  # uw: [N, w, H, W]
            nn.ReflectionPad2d(3),
            nn.Conv2d(w, out_channels, 7),  # c7s1-C, with its bias: no norm follows
            nn.Tanh(),
        )
        self.apply(_init)
        if skip:
            nn.init.zeros_(self.net[-2].weight)  # tanh(0) = 0: G(x) = x at first

    @staticmethod
    def _up(c_in: int, c_out: int) -> list[nn.Module]:
        # output_padding=1 makes the output exactly twice the input.
        up = nn.ConvTranspose2d(c_in, c_out, 3, 2, padding=1, output_padding=1, bias=False)
        return [up, norm_layer("instance", c_out), nn.ReLU()]

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this: 4, for the two stride-2 convs."""
        return 4

    def forward(self, x: Tensor) -> Tensor:
        check_image_input(x, self.config["in_channels"], self.multiple)
        if self.config["skip"]:
            return (x + self.net(x)).clamp(-1.0, 1.0)
        return self.net(x)


class CycleOutputs(NamedTuple):
    """Every image of one CycleGAN step, each ``[N, C, H, W]``: fakes, reconstructions, and
    the identity mappings (None when the identity loss is off)."""

    fake_b: Tensor  # G_AB(a)
    rec_a: Tensor  # G_BA(G_AB(a)), should be a
    fake_a: Tensor  # G_BA(b)
    rec_b: Tensor  # G_AB(G_BA(b)), should be b
    idt_a: Tensor | None  # G_BA(a), should be a
    idt_b: Tensor | None  # G_AB(b), should be b


class CycleGenerators(SavedConfig):
    """The two generators of a CycleGAN: ``G_AB`` (A -> B) and ``G_BA`` (B -> A).

    Both domains have ``channels`` channels (the identity loss feeds each generator an image
    of its output domain). ``forward(a, b)`` runs every pass of a training step;
    :meth:`generator` gives one direction for inference.
    """

    arch = "cyclegan"

    def __init__(self, channels: int = 3, width: int = 64, n_blocks: int = 9, skip: bool = False):
        super().__init__()
        self.G_AB = ResnetGenerator(channels, channels, width, n_blocks, skip)
        self.G_BA = ResnetGenerator(channels, channels, width, n_blocks, skip)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return self.G_AB.multiple

    def generator(self, direction: str) -> ResnetGenerator:
        """``G_AB`` for ``"AtoB"``, ``G_BA`` for ``"BtoA"``."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be {' or '.join(DIRECTIONS)}, got {direction!r}")
        return self.G_AB if direction == "AtoB" else self.G_BA

    def forward(self, a: Tensor, b: Tensor, identity: bool = True) -> CycleOutputs:
        """``a``, ``b`` ``[N, C, H, W]`` (any N each) -> :class:`CycleOutputs`."""
        fake_b, fake_a = self.G_AB(a), self.G_BA(b)
        return CycleOutputs(
            fake_b=fake_b,
            rec_a=self.G_BA(fake_b),
            fake_a=fake_a,
            rec_b=self.G_AB(fake_a),
            idt_a=self.G_BA(a) if identity else None,
            idt_b=self.G_AB(b) if identity else None,
        )
