"""Building blocks shared by the model families: class conditioning in and out (DCGAN and
ResNet), normalisation layers by name, the input check of the fully convolutional generators
with the padding that takes any image size to it (U-Net, CycleGAN), and a fast upsampling
convolution (ResNet, U-Net).

Both generators take the class through conditional BatchNorm; both discriminators give it
back through the projection head. Everything architecture-specific lives in its own file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def check_labels(labels: Tensor | None, batch_size: int, num_classes: int) -> None:
    """Raise ValueError unless ``labels`` fit the model: ``[N]`` class ids iff conditional.

    An unconditional model given labels is refused too: it almost always means the run was
    meant to be conditional and silently is not.
    """
    if num_classes == 0:
        if labels is not None:
            raise ValueError("unconditional model (num_classes=0) was given labels")
    elif labels is None:
        raise ValueError(f"class-conditional model (num_classes={num_classes}) needs labels")
    elif labels.shape != (batch_size,):
        raise ValueError(f"labels must be [{batch_size}], got {list(labels.shape)}")


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose gain and bias are looked up per class (de Vries et al. 2017).

    The generator-side conditioning of SNGAN's projection cGAN (Miyato & Koyama 2018) and
    BigGAN. Gains start at 1 and biases at 0, so at initialisation every class sees the
    same affine map as a plain BatchNorm. With ``num_classes=0`` it *is* a plain
    ``BatchNorm2d`` (learned affine, ``labels`` ignored), so one generator class serves both
    the conditional and the unconditional case.
    """

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(channels, affine=num_classes == 0)
        if num_classes > 0:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        h = self.bn(x)  # [N, C, H, W]
        if self.num_classes == 0:
            return h
        gain = self.gain(labels)[:, :, None, None]  # [N, C, 1, 1]
        bias = self.bias(labels)[:, :, None, None]  # [N, C, 1, 1]
        return h * gain + bias


class ProjectionHead(nn.Module):
    """Discriminator output: ``linear(h) + <embed(y), h>`` (Miyato & Koyama 2018).

    ``h`` is the pooled feature vector ``[N, F]``; the result is one raw logit per sample,
    ``[N]``. With ``num_classes=0`` only the linear term remains. The owning discriminator
    initialises ``linear`` with its family's scheme; the class embedding starts Glorot-uniform
    as in the SNGAN code, small enough that the class term does not swamp the logit at first.
    """

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes > 0 else None
        if self.embed is not None:
            nn.init.xavier_uniform_(self.embed.weight)

    def forward(self, h: Tensor, labels: Tensor | None) -> Tensor:
        logits = self.linear(h).squeeze(1)  # [N]
        if self.embed is None:
            return logits
        return logits + torch.sum(self.embed(labels) * h, dim=1)  # [N]


def check_image_input(x: torch.Tensor, channels: int, multiple: int) -> None:
    """Raise unless ``x`` is ``[N, channels, H, W]`` with H and W multiples of ``multiple``."""
    if x.dim() != 4 or x.shape[1] != channels or x.shape[2] % multiple or x.shape[3] % multiple:
        raise ValueError(
            f"x must be [N, {channels}, H, W] with H and W multiples of {multiple} "
            f"(use pad_to_multiple), got {list(x.shape)}"
        )


# How nearest 2x upsampling repeats a 3-tap kernel's input: output phase p (even or odd row)
# of ``conv3(upsample(x))`` is a 2-tap conv of ``x`` whose taps are sums of the 3 (see below).
_PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


class UpsampleConv2d(nn.Conv2d):
    """``conv3x3(upsample_nearest_2x(x))`` (padding 1), computed without the upsampled tensor.

    Output pixel ``(2i + a, 2j + b)`` of the upsampled-then-convolved map reads upsampled rows
    ``2i + a - 1 .. 2i + a + 1``, which are input rows ``i - 1, i, i`` (``a = 0``) or
    ``i, i, i + 1`` (``a = 1``): a 2x2 convolution of the input whose taps are the 3x3
    kernel's taps summed accordingly, and the same for columns. One 2x2 convolution (padding
    1) with the four phase kernels stacked as output channels computes all four phases; phase
    ``(a, b)`` is its output shifted by ``(a, b)``, and interleaving the phases gives the
    result. That is 16 instead of 36 multiply-adds per output pixel and channel pair, and no
    4x larger upsampled input: a gated U-Net training step runs 1.1-1.4x faster on a CPU
    (``benchmarks/inpainting_step.py``). The parameters are an ordinary 3x3 ``nn.Conv2d``'s
    (same names, init and state dict); the output agrees with ``conv(upsample(x))`` up to
    float rounding (tested).
    """

    def __init__(self, c_in: int, c_out: int, bias: bool = True):
        super().__init__(c_in, c_out, 3, 1, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        n, _, height, width = x.shape
        c_out = self.out_channels
        taps = _PHASE_TAPS.to(self.weight)  # [phase, 2 taps, 3 taps]
        # [a, b, c_out, c_in, 2, 2] -> [4 c_out, c_in, 2, 2]: the phase kernels, stacked
        kernels = torch.einsum("akr,oirs,bls->aboikl", taps, self.weight, taps).flatten(0, 2)
        bias = None if self.bias is None else self.bias.repeat(4)
        y = F.conv2d(x, kernels, bias, padding=1)  # [N, 4 c_out, H + 1, W + 1]
        y = y.unflatten(1, (2, 2, c_out))  # [N, a, b, c_out, H + 1, W + 1]
        rows = [
            torch.stack([y[:, a, b, :, a : a + height, b : b + width] for b in (0, 1)], -1)
            for a in (0, 1)
        ]  # each [N, c_out, H, W, b]: the phases of output rows 2i + a
        out = torch.stack(rows, 3)  # [N, c_out, H, a, W, b]
        return out.reshape(n, c_out, 2 * height, 2 * width)


NORMS = ("instance", "batch", "none")


def norm_layer(norm: str, channels: int) -> nn.Module:
    """``"instance"`` (affine, no running statistics), ``"batch"`` or ``"none"`` (identity)."""
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Pad ``x`` ``[N, C, H, W]`` so that H and W are multiples of ``multiple``.

    Reflect padding, split evenly between the two sides, continues the image's content rather
    than adding a hard edge; where the image is too small to reflect that far (padding >= side),
    the edge pixels are repeated instead. Returns the padded tensor (``x`` itself when nothing
    is needed) and the crop box ``(top, left, H, W)`` that :func:`crop` takes back.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be [N, C, H, W], got {list(x.shape)}")
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    top, left = pad_h // 2, pad_w // 2
    box = (top, left, height, width)
    if pad_h == 0 and pad_w == 0:
        return x, box
    pads = (left, pad_w - left, top, pad_h - top)  # F.pad order: W first, then H
    mode = "reflect" if max(pads[:2]) < width and max(pads[2:]) < height else "replicate"
    return F.pad(x, pads, mode=mode), box


def crop(x: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple`: ``x[..., top : top + H, left : left + W]``."""
    top, left, height, width = box
    return x[..., top : top + height, left : left + width]
