"""Inpainting: G repairs the hole of a masked image, D judges (image, mask) pairs.

The task's record is :class:`Inpainting` (``TASK``): a gated U-Net and a PatchGAN,
:class:`InpaintingStep`, the hole-L1 probe :class:`HoleL1Probe`, the evaluator
:mod:`ganlib.evaluation.inpainting` and the pyfunc's :func:`predict_frame`.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlib.config import InpaintingConfig
from ganlib.data.images import input_array, input_pixels
from ganlib.data.masks import eval_masks, random_mask, random_masks
from ganlib.data.pixels import from_uint8, to_uint8
from ganlib.errors import GanlibError
from ganlib.losses import AdversarialLoss, feature_matching
from ganlib.models import build_generator
from ganlib.models.base import eval_mode
from ganlib.models.layers import crop, pad_to_multiple
from ganlib.models.patchgan import PatchDiscriminator
from ganlib.models.unet import UNetGenerator
from ganlib.tasks.base import ImageTask, Limits
from ganlib.training.probe import PROBE_BATCH, probe_images, unwrap
from ganlib.training.step import StepContext, TaskStep, grad_norm, norm_stats

GRID_PAIRS = 16  # inputs in the sample grid, each shown with G_ema's repair

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
        when ``fm_weight`` > 0). ``stats`` (detached) holds ``loss_l1_hole`` and
        ``loss_l1_valid`` (the unweighted L1 terms, in the images' [-1, 1] units: not the
        probe's and evaluation's ``l1_hole``, a fraction of the range), ``adv``, ``D_fake``
        (D's mean logit on the composite) and, with feature matching, ``fm``."""
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
                "loss_l1_hole": masked_l1(out, real, mask),
                "loss_l1_valid": masked_l1(out, real, 1 - mask),
                "adv": adv.detach(),
                "D_fake": logits.mean(),
            }
        if fm is not None:
            loss = loss + self.fm_weight * fm
            stats["fm"] = fm.detach()
        return loss, stats


class InpaintingStep(TaskStep):
    """G forward (through DDP) on (fill, mask), D phase on real and composite, G phase."""

    def __init__(self, ctx: StepContext):
        super().__init__(ctx)
        t: InpaintingConfig = ctx.task_cfg
        self.losses = InpaintingLoss(
            self.loss, t.hole_weight, t.valid_weight, t.adv_weight, t.fm_weight
        )

    def masks(self, step: int, shape: tuple[int, int]) -> Tensor:
        """This rank's training masks of ``step``, ``[B, 1, H, W]``: a function of (seed,
        rank, step), so that a resumed run draws the same ones."""
        t: InpaintingConfig = self.ctx.task_cfg
        rng = np.random.default_rng([self.ctx.seed, self.ctx.rank, step])
        return random_masks(
            rng,
            self.ctx.cfg.batch_size,
            shape,
            kind=t.mask_kind,
            area_range=(t.min_area, t.max_area),
            device=self.ctx.device,
        )

    def step(self, step: int, want_log: bool) -> dict[str, Tensor]:
        ctx = self.ctx
        real = ctx.to_device(ctx.next_batch()["image"])  # [B, C, H, W]
        mask = self.masks(step, tuple(real.shape[-2:]))  # [B, 1, H, W]
        with ctx.autocast:
            out, fake = generate(ctx.compiled(ctx.G_ddp), real, mask)  # through DDP: one forward
        d_stats = self._d_phase(
            lambda D: self.losses.d_real(D, real, mask),
            lambda D: self.losses.d_fake(D, fake.float(), mask),
            want_log,
        )

        self._freeze_d()
        with ctx.autocast:
            loss_G, stats = self.losses.g(
                ctx.compiled(ctx.D["D"]), real, mask, out.float(), fake.float()
            )
        ctx.opt_G.zero_grad(set_to_none=True)
        loss_G.float().backward()
        grad_norm_G = grad_norm(ctx.G) if want_log else None
        ctx.opt_G.step()
        return {
            **d_stats,
            "loss_G": loss_G.detach().float(),
            # loss_l1_hole, loss_l1_valid, adv (and fm); D_fake is the D phase's, in d_stats
            **{k: v.float() for k, v in stats.items() if k != "D_fake"},
            **norm_stats(self.grad_norm_D, grad_norm_G, ctx.device),
        }


class HoleL1Probe:
    """Inpainting's probe: mean hole L1 (a fraction of the value range, as evaluated) of G's
    repairs of the first val images under fixed masks (seeded by key, the training area
    range)."""

    def __init__(self, shards: str | Path, task_cfg: InpaintingConfig, num_images: int, seed: int):
        self.images, keys = probe_images(shards, "png", num_images)  # [N, C, H, W]
        self.masks = eval_masks(
            keys,
            tuple(self.images.shape[-2:]),
            kind=task_cfg.mask_kind,
            area_range=(task_cfg.min_area, task_cfg.max_area),
            seed=seed,
        )  # [N, 1, H, W]

    @torch.no_grad()
    def __call__(self, G: nn.Module) -> float:
        G = unwrap(G)
        device = next(G.parameters()).device
        pairs = zip(self.images.split(PROBE_BATCH), self.masks.split(PROBE_BATCH), strict=True)
        with eval_mode(G):
            out = torch.cat([inpaint(G, x.to(device), m.to(device)).cpu() for x, m in pairs])
        return masked_l1(out, self.images, self.masks).item() / 2  # over the range [-1, 1]


class Inpainting(ImageTask):
    """The record of ``task: inpainting``."""

    name = "inpainting"
    section = "inpainting"
    fields = ("png",)
    wrong_fields = (
        "task: inpainting needs single-image shards; these hold (A, B) pairs: "
        "set data.source to a folder or table of single images"
    )
    probe_metric = "l1_hole"
    promotion_metric = "l1_hole"
    evaluator = "ganlib.evaluation.inpainting"
    metric_label = "hole L1"
    summary = "damaged image + mask -> repaired image"
    example_call = (  # PNG bytes; the mask is white on the hole, of the image's size
        'images = model.predict(pd.DataFrame({"image": [png], "mask": [mask_png]}))'
    )

    def model_config(self, cfg, task_cfg: InpaintingConfig, info) -> dict:
        C, R = info["channels"], info["resolution"]
        return UNetGenerator(C + 1, C, cfg.width, resolution=R, gated=task_cfg.gated).config

    def build_models(self, cfg, task_cfg, mcfg, info):
        return build_generator(mcfg), {"D": PatchDiscriminator(info["channels"] + 1, cfg.width)}

    def make_step(self, ctx: StepContext) -> TaskStep:
        return InpaintingStep(ctx)

    def grid_inputs(self, first_batch, seed: int, cfg, task_cfg: InpaintingConfig):
        """The first train images of epoch 0 and fixed masks."""
        image = first_batch(GRID_PAIRS)["image"][:GRID_PAIRS].cpu()
        rng = np.random.default_rng([seed, 2**31])
        kw = {"kind": task_cfg.mask_kind, "area_range": (task_cfg.min_area, task_cfg.max_area)}
        mask = random_masks(rng, image.shape[0], tuple(image.shape[-2:]), **kw)
        return {"image": image, "mask": mask}

    @torch.no_grad()
    def grid_images(self, G: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """(input, repair) side by side; the input shows its hole in mid grey."""
        device = next(G.parameters()).device
        image, mask = inputs["image"].to(device), inputs["mask"].to(device)
        with eval_mode(G):
            out = inpaint(G, image, mask)
        shown = image * (1 - mask)  # hole at 0: mid grey
        pairs = torch.stack([shown, out], dim=1).flatten(0, 1)  # [2N, C, H, W]: in, out, ...
        return pairs.float().cpu().clamp(-1, 1)

    def make_probe(self, task_cfg, featurize_dir, shards, num_images: int, seed: int):
        return HoleL1Probe(shards, task_cfg, num_images, seed)

    def headline(self, m) -> str:
        return f"hole L1 {m['l1_hole']:.4f}, PSNR {m['psnr']:.2f} dB, FID {m['fid']:.3f}"

    def versus(self, m) -> str:
        ours, fill = m["table"]["ganlib"]["all"], m["table"]["biharmonic"]["all"]
        return (
            f"over all hole sizes, hole L1 {ours['l1_hole']:.4f} against scikit-image's "
            f"biharmonic inpainting {fill['l1_hole']:.4f} (a fraction of the value range; lower "
            f"is better), FID {ours['fid']:.4g} against {fill['fid']:.4g}, PSNR "
            f"{ours['psnr']:.2f} dB against {fill['psnr']:.2f} dB; per hole-area bin in "
            "eval/metrics.json"
        )

    def signature(self, meta):
        """``image`` and ``mask`` (PNG bytes) -> ``uint8 [-1, -1, -1, C]`` (any size)."""
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema, TensorSpec

        inputs = Schema([ColSpec("binary", "image"), ColSpec("binary", "mask")])
        shape = (-1, -1, -1, int(meta["channels"]))
        return ModelSignature(inputs, Schema([TensorSpec(np.dtype(np.uint8), shape)]))

    def input_example(self, meta):
        import pandas as pd

        from ganlib.data.images import encode_png

        R = int(meta["resolution"])
        hole = np.zeros((R, R, 1), np.uint8)
        hole[R // 4 : R // 2, R // 4 : R // 2] = 255
        image = self.example_image(meta)
        return pd.DataFrame({"image": [image, image], "mask": [encode_png(hole)] * 2})

    def predict(self, G, meta, frame, limits=None):
        return predict_frame(G, meta, frame, limits)


# -- serving: the registered model's predict and the CLI's demo mask --------------------------


def predict_frame(
    G: nn.Module, meta: Mapping[str, Any], frame: pd.DataFrame, limits: Limits | None = None
) -> np.ndarray:
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

    ``limits`` (by default :attr:`Inpainting.limits`) bound the rows, each image's and mask's
    pixels and the images' total, all checked from the headers before anything is decoded
    (G's activations grow with the image: one 4096 x 4096 row took 50 s and 3.5 GB).

    Raises a one-line :class:`GanlibError` naming the row (0-based) and column for a missing
    column or value, a value that is not an image, a request over ``limits``, a mask whose
    size differs from its image's, a mask that is hole everywhere (nothing to inpaint from),
    and images of different sizes in one call.
    """
    if meta["task"] != TASK.name:
        raise GanlibError(f"this is a {meta['task']} model, not an inpainting one")
    channels = int(meta["channels"])
    missing = [c for c in ("image", "mask") if c not in frame.columns]
    if missing:
        raise GanlibError(
            f"the input needs columns image and mask (PNG bytes, mask white on the hole); "
            f"missing {', '.join(missing)} among {list(frame.columns)}"
        )
    limits = limits or TASK.limits
    limits.check_rows(len(frame))
    rows = [
        (_bytes(image, f"row {row}: image"), _bytes(mask, f"row {row}: mask"))
        for row, (image, mask) in enumerate(zip(frame["image"], frame["mask"], strict=True))
    ]
    total = 0  # the images' pixels, from their headers (masks have their image's size)
    for row, (image, mask) in enumerate(rows):
        total += input_pixels(image, name=f"row {row}: image", max_pixels=limits.max_pixels)
        input_pixels(mask, name=f"row {row}: mask", max_pixels=limits.max_pixels)
    limits.check_total(total, len(rows))
    out = []  # the repaired images, uint8 [H, W, C] each
    for row, (image, mask) in enumerate(rows):
        x = _read(image, channels, f"row {row}: image", limits)  # [H, W, C] uint8
        hole = _read(mask, 1, f"row {row}: mask", limits)[..., 0] >= 128  # [H, W] bool
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


def _bytes(value: Any, name: str) -> bytes:
    """One cell's bytes; a one-line GanlibError naming ``name`` for anything else."""
    if isinstance(value, memoryview | bytearray):
        value = bytes(value)
    if not isinstance(value, bytes):
        got = "None" if value is None else type(value).__name__  # NaN: float
        raise GanlibError(f"{name}: expected PNG bytes, got {got}")
    return value


def _read(data: bytes, channels: int, name: str, limits: Limits) -> np.ndarray:
    return input_array(data, channels=channels, name=name, max_pixels=limits.max_pixels)


def _size(x: np.ndarray) -> str:
    return f"{x.shape[1]}x{x.shape[0]}"  # width x height, as image viewers say it


def _inpaint_one(G: nn.Module, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``image`` uint8 ``[H, W, C]`` repaired on ``hole`` bool ``[H, W]``: uint8 ``[H, W, C]``,
    the valid pixels unchanged."""
    device = next(G.parameters()).device
    x = from_uint8(image[None]).to(device)  # [1, C, H, W] in [-1, 1]
    m = torch.from_numpy(hole)[None, None].to(device, torch.float32)  # [1, 1, H, W]
    return to_uint8(inpaint(G, x, m))[0]


TASK = Inpainting()
