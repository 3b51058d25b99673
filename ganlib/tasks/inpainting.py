"""Inpainting: G repairs the hole of a masked image, D judges (image, mask) pairs.

Tensors: ``real`` ``[B, C, H, W]`` in [-1, 1] (the loader's range), ``mask`` ``[B, 1, H, W]``
float, 1 on the hole (see :mod:`ganlib.data.masks`).

- The hole is first filled smoothly from its surroundings by pull-push (:func:`pull_push`);
  G's input is that image plus the mask as one more channel (:func:`masked_input`), and G's
  tanh output is a correction added to it: ``out = fill + G(fill, mask)``. On the 64-pixel
  ``builtin:photos`` patches pull-push alone matches scikit-image's biharmonic inpainting on
  hole L1 up to 40 % holes and beats it above; a U-Net given zeros in the hole instead must
  first learn to rebuild the image through its skips, and after 800 steps was still worse
  than biharmonic in every hole-area bin. From the fill, G starts at the classical result and
  learns what to add (texture, edges).
- ``out`` is composited into the image, ``fake = real * (1 - mask) + out * mask``
  (:func:`composite`): the valid pixels are the input's, bit for bit.
- D sees the composite (as in DeepFill v2), concatenated with the mask, against the real image
  with the same mask (:func:`d_input`): it has to judge the filled region in its context and
  cannot win by spotting changes in the valid region.
- G's loss: L1 on the hole and on the valid region, each averaged over its own area and
  weighted (Liu et al. 2018 weight the hole 6:1), plus the adversarial loss on the composite.

:class:`InpaintingLoss` runs the losses by phase. Each method makes exactly one D forward and
returns the loss of that forward, so the training loop backpropagates it before the next
forward (the DDP rule at the top of :mod:`ganlib.training.loop`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlib.data.images import input_array
from ganlib.data.masks import random_mask
from ganlib.errors import GanlibError
from ganlib.grid import to_uint8
from ganlib.losses import AdversarialLoss, feature_matching
from ganlib.models.unet import crop, pad_to_multiple

if TYPE_CHECKING:
    import pandas as pd


def _check(image: Tensor, mask: Tensor) -> None:
    if image.dim() != 4 or mask.shape != (image.shape[0], 1, *image.shape[2:]):
        raise ValueError(
            f"image must be [B, C, H, W] and mask [B, 1, H, W]; got {list(image.shape)} and "
            f"{list(mask.shape)}"
        )


def composite(real: Tensor, out: Tensor, mask: Tensor) -> Tensor:
    """``real * (1 - mask) + out * mask``: ``[B, C, H, W]``.

    Where ``mask`` is 0 this is ``real + out * 0``, which is ``real`` exactly (bit for bit) as
    long as ``out`` is finite.
    """
    _check(real, mask)
    return real * (1 - mask) + out * mask


def pull_push(image: Tensor, mask: Tensor) -> Tensor:
    """The hole filled smoothly from the valid pixels around it: ``[B, C, H, W]``.

    Pull-push (Gortler et al. 1996, "The Lumigraph"): pull - average the valid pixels into a
    pyramid of 2x2 blocks, each block the mean of its valid pixels, down to one pixel; push -
    fill each level's holes with the bilinear upsampling of the level below. Every filled
    value is a weighted mean of valid pixels, nearer ones weighing more; any image size works.
    A hole covering the whole image is filled with 0, the middle of the value range.
    """
    _check(image, mask)
    if max(image.shape[-2:]) == 1:
        return image * (1 - mask)
    valid = 1 - mask
    weight = F.avg_pool2d(valid, 2, ceil_mode=True)  # [B, 1, ceil(H/2), ceil(W/2)]
    mean = F.avg_pool2d(image * valid, 2, ceil_mode=True) / weight.clamp(min=1e-12)
    coarse = pull_push(mean, (weight == 0).to(mask.dtype))  # holes only where no valid pixel
    up = F.interpolate(coarse, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return composite(image, up, mask)


def masked_input(real: Tensor, mask: Tensor) -> Tensor:
    """G's input: the image with its hole filled by :func:`pull_push`, and the mask:
    ``[B, C + 1, H, W]``. Nothing of the hole's content gets through."""
    return torch.cat([pull_push(real, mask), mask], dim=1)


def d_input(image: Tensor, mask: Tensor) -> Tensor:
    """D's input: an image (real or composite) and its mask, ``[B, C + 1, H, W]``."""
    _check(image, mask)
    return torch.cat([image, mask], dim=1)


def generate(G: nn.Module, real: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(out, fake)``: the pull-push fill plus G's correction, and its composite, both
    ``[B, C, H, W]``.

    For training, where H and W suit G; ``G`` may be wrapped in DDP. ``out`` may leave
    [-1, 1] a little (fill + correction); the losses pull it back, :func:`inpaint` clamps it.
    """
    x = masked_input(real, mask)  # [B, C + 1, H, W]
    out = x[:, :-1] + G(x)  # [B, C, H, W]
    return out, composite(real, out, mask)


@torch.no_grad()
def inpaint(G: nn.Module, image: Tensor, mask: Tensor) -> Tensor:
    """Repair ``image`` ``[B, C, H, W]`` (in [-1, 1]) of any size: the composite, same shape.

    G's input is padded to a multiple of ``G.multiple`` (see
    :func:`ganlib.models.unet.pad_to_multiple`) and its output cropped back.
    """
    x = masked_input(image, mask)  # [B, C + 1, H, W]
    padded, box = pad_to_multiple(x, G.multiple)
    out = x[:, :-1] + crop(G(padded), box)  # [B, C, H, W]
    return composite(image, out.clamp(-1.0, 1.0), mask)


def masked_l1(out: Tensor, real: Tensor, weight: Tensor) -> Tensor:
    """Mean ``|out - real|`` over each image's region where ``weight`` ``[B, 1, H, W]`` is 1
    (all channels; a weight in between counts partly), averaged over the images whose region
    is not empty; 0 when no image has one.

    Per image, as the evaluation scores it: pooled over the batch, the pixels of the large
    holes would outweigh the small ones, and G would learn small holes mostly from D.
    """
    area = weight.sum(dim=(1, 2, 3)) * out.shape[1]  # [B] elements in each image's region
    per_image = ((out - real).abs() * weight).sum(dim=(1, 2, 3)) / area.clamp(min=1e-12)
    has = (area > 0).to(per_image.dtype)  # [B]
    return (per_image * has).sum() / has.sum().clamp(min=1.0)


def l1_loss(
    out: Tensor, real: Tensor, mask: Tensor, *, hole_weight: float, valid_weight: float
) -> Tensor:
    """``hole_weight * L1(hole) + valid_weight * L1(valid)``, each L1 a mean over its own area
    in each image (:func:`masked_l1`).

    Normalising by area, rather than averaging over the whole image, keeps the balance between
    the two terms the same for a 10 % hole and a 50 % one.
    """
    _check(real, mask)
    return hole_weight * masked_l1(out, real, mask) + valid_weight * masked_l1(out, real, 1 - mask)


@dataclass(frozen=True)
class InpaintingLoss:
    """The losses of inpainting, one method per D forward.

    ``adversarial`` is one of :data:`ganlib.losses.LOSSES`; its terms average over D's patch
    logits ``[B, 1, h, w]``.
    """

    adversarial: AdversarialLoss
    hole_weight: float
    valid_weight: float
    adv_weight: float
    fm_weight: float = 0.0

    def d_real(self, D: nn.Module, real: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """D phase, real: ``(loss, logits [B, 1, h, w])`` of D on the real image and mask."""
        logits = D(d_input(real, mask))
        return self.adversarial.d_real(logits), logits

    def d_fake(self, D: nn.Module, fake: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """D phase, fake: ``(loss, logits)`` of D on the composite ``fake`` (detached here)."""
        logits = D(d_input(fake.detach(), mask))
        return self.adversarial.d_fake(logits), logits

    def g(
        self, D: nn.Module, real: Tensor, mask: Tensor, out: Tensor, fake: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """G phase, D frozen, on G's ``(out, fake)`` from :func:`generate`: ``(loss, stats)``.

        ``loss`` = weighted L1 of ``out`` + ``adv_weight`` * adversarial on the composite
        ``fake`` + ``fm_weight`` * feature matching (D's features of the composite against
        those of the real image with the same mask; one more D forward, without gradients,
        when ``fm_weight`` > 0). ``stats`` (detached) holds ``l1_hole``, ``l1_valid``,
        ``adv``, ``D_fake`` (D's mean logit on the composite) and, with feature matching,
        ``fm``."""
        fm = None
        if self.fm_weight > 0:
            logits, fake_features = D(d_input(fake, mask), return_features=True)
            with torch.no_grad():
                _, real_features = D(d_input(real, mask), return_features=True)
            fm = feature_matching(fake_features, real_features)
        else:
            logits = D(d_input(fake, mask))  # [B, 1, h, w]
        adv = self.adversarial.g_loss(logits)
        l1 = l1_loss(out, real, mask, hole_weight=self.hole_weight, valid_weight=self.valid_weight)
        loss = l1 + self.adv_weight * adv
        with torch.no_grad():
            stats = {
                "l1_hole": masked_l1(out, real, mask),
                "l1_valid": masked_l1(out, real, 1 - mask),
                "adv": adv.detach(),
                "D_fake": logits.mean(),
            }
        if fm is not None:
            loss = loss + self.fm_weight * fm
            stats["fm"] = fm.detach()
        return loss, stats


# -- serving: the registered model's predict and the CLI's demo mask --------------------------

PREDICT_MAX_PIXELS = 4096 * 4096  # per image; G's activations grow with the image


def predict_frame(G: nn.Module, meta: Mapping[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """Repair each row of ``frame``: the registered inpainting model's ``predict``.

    ``frame`` has columns ``image`` and ``mask``, PNG (or any Pillow-readable) bytes; the mask
    is white (luma >= 128) on the hole. Returns ``uint8 [N, H, W, C]``, C the model's channels,
    each image at its own size: any size works (:func:`inpaint` pads and crops), but one call's
    images must all have one size, to make one array. ``meta`` is the exported generator's
    (:func:`ganlib.sampling.load_generator`).

    Inputs are read as :func:`ganlib.data.images.input_array` reads them: an image with
    transparency is composited over white, a grayscale image given to an RGB model has its
    value replicated (an RGB one given to a grayscale model becomes its luma), and the mask is
    read as grayscale the same way (so its transparent pixels count as hole). A mask without a
    hole returns its image unchanged. Each image runs through G on its own, so a row's result
    does not depend on the other rows of the call (batched convolutions are not
    batch-invariant; see :mod:`ganlib.sampling`).

    Raises a one-line :class:`GanlibError` naming the row (0-based) and column for a missing
    column or value, a value that is not an image, an image over :data:`PREDICT_MAX_PIXELS`,
    a mask whose size differs from its image's, a mask that is hole everywhere (nothing to
    inpaint from), and images of different sizes in one call.
    """
    if meta.get("task") != "inpainting":
        raise GanlibError(f"this is a {meta.get('task')} model, not an inpainting one")
    channels = int(meta["channels"])
    missing = [c for c in ("image", "mask") if c not in frame.columns]
    if missing:
        raise GanlibError(
            f"the input needs columns image and mask (PNG bytes, mask white on the hole); "
            f"missing {', '.join(missing)} among {list(frame.columns)}"
        )
    out = []
    for row, (image, mask) in enumerate(zip(frame["image"], frame["mask"], strict=True)):
        x = _read(image, channels, f"row {row}: image")  # [H, W, C] uint8
        hole = _read(mask, 1, f"row {row}: mask")[..., 0] >= 128  # [H, W] bool
        if hole.shape != x.shape[:2]:
            raise GanlibError(
                f"row {row}: mask: {_size(hole)} pixels, but the image is {_size(x)}; "
                "give a mask of the image's size"
            )
        if hole.all():
            raise GanlibError(
                f"row {row}: mask: every pixel is hole (white, or transparent); nothing to "
                "inpaint from: leave the known part of the image black"
            )
        if out and x.shape != out[0].shape:
            raise GanlibError(
                f"row {row}: image: {_size(x)} pixels, but row 0 is {_size(out[0])}; the "
                "rows of one call must have one size (the result is one [N, H, W, C] "
                "array): send other sizes in separate calls"
            )
        out.append(x if not hole.any() else _inpaint_one(G, x, hole))
    if not out:
        size = int(meta["resolution"])
        return np.zeros((0, size, size, channels), np.uint8)
    return np.stack(out)  # [N, H, W, C]


def demo_mask(
    height: int,
    width: int,
    *,
    seed: int,
    kind: str = "mix",
    area_range: tuple[float, float] = (0.2, 0.4),
) -> np.ndarray:
    """A random hole for ``--mask random``: bool ``[height, width]``, True on the hole, its area
    a fraction of the image in ``area_range``; the same for the same arguments."""
    rng = np.random.default_rng(seed)
    try:
        return random_mask(rng, (height, width), kind=kind, area_range=area_range)
    except ValueError as exc:  # e.g. an image too small for any hole in the range
        raise GanlibError(f"random mask for a {width}x{height} image: {exc}") from None


def _read(value: Any, channels: int, name: str) -> np.ndarray:
    """One cell as ``uint8 [H, W, channels]``; a one-line GanlibError naming ``name``."""
    if isinstance(value, memoryview | bytearray):
        value = bytes(value)
    if not isinstance(value, bytes):
        got = "None" if value is None else type(value).__name__  # NaN: float
        raise GanlibError(f"{name}: expected PNG bytes, got {got}")
    x = input_array(value, channels=channels, name=name)
    if x.shape[0] * x.shape[1] > PREDICT_MAX_PIXELS:
        raise GanlibError(
            f"{name}: {_size(x)} pixels, more than the {PREDICT_MAX_PIXELS} this model takes; "
            "downscale it"
        )
    return x


def _size(x: np.ndarray) -> str:
    return f"{x.shape[1]}x{x.shape[0]}"  # width x height, as image viewers say it


def _inpaint_one(G: nn.Module, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``image`` uint8 ``[H, W, C]`` repaired on ``hole`` bool ``[H, W]``: uint8 ``[H, W, C]``,
    the valid pixels unchanged."""
    device = next(G.parameters()).device
    x = torch.tensor(image).permute(2, 0, 1)[None].to(device, torch.float32)  # [1, C, H, W]
    x = x / 127.5 - 1  # the loader's [-1, 1]
    m = torch.from_numpy(hole)[None, None].to(device, torch.float32)  # [1, 1, H, W]
    return to_uint8(inpaint(G, x, m))[0]
