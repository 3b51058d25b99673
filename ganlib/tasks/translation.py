"""Translation: G turns an image of domain A into one of domain B.

The task's record is :class:`Translation` (``TASK``); its variant is ``translation.mode``:
pix2pix (:class:`Pix2PixStep`) or CycleGAN (:class:`CycleGANStep`). The probe is
:class:`TranslationProbe`, the evaluator :mod:`ganlib.evaluation.translation`, the pyfunc's
:func:`predict_frame`.

Tensors: ``a``, ``b`` ``[B, C, H, W]`` in [-1, 1] (the loader's range).

- pix2pix (Isola et al. 2017), for (A, B) pairs: a U-Net ``G``; a PatchGAN ``D`` conditioned on
  the input, judging ``cat(a, b)`` against ``cat(a, G(a))`` (:func:`d_input`); G's loss is the
  adversarial one plus ``l1_weight`` (100) times ``L1(G(a), b)`` (:class:`Pix2PixLoss`).
- CycleGAN (Zhu et al. 2017), for unpaired domains: two ResNet generators ``G_AB``, ``G_BA``
  (:class:`~ganlib.models.cyclegan.CycleGenerators`) and two PatchGANs, ``D_A`` judging
  images of domain A and ``D_B`` of domain B. G's loss: the adversarial loss both ways, the
  cycle loss ``cycle_weight * (L1(G_BA(G_AB(a)), a) + L1(G_AB(G_BA(b)), b))`` and the identity
  loss ``identity_weight * cycle_weight * (L1(G_BA(a), a) + L1(G_AB(b), b))``, which keeps
  colours from drifting (:class:`CycleGANLoss`). D sees fakes drawn from a history of earlier
  ones (:class:`ImagePool`), which damps oscillation.

Order of a step, as in the reference code, so that G's outputs are computed once: G forward
(the loop runs it, through DDP), D phase on the detached fakes (one D forward per method, the
loop backpropagates each before the next: the DDP rule at the top of
:mod:`ganlib.training.loop`), then G phase on the same outputs with D frozen and unwrapped.

About the loss weights: the adversarial terms are those of :data:`ganlib.losses.LOSSES`. For
pix2pix's non-saturating loss G's term equals the reference's exactly. ganlib's least-squares
loss keeps Mao et al.'s 1/2 on G's term, ``0.5 (D(G(a)) - 1)^2``, where CycleGAN's code has
none: with ``adv_weight = 2`` the G objective is the reference's; D's scale does not matter
under Adam.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ganlib.config import TranslationConfig
from ganlib.data.images import input_array, input_pixels
from ganlib.data.pixels import from_uint8, to_uint8
from ganlib.errors import GanlibError
from ganlib.losses import AdversarialLoss
from ganlib.models import build_generator
from ganlib.models.base import eval_mode
from ganlib.models.cyclegan import DIRECTIONS, CycleGenerators, CycleOutputs
from ganlib.models.layers import crop, pad_to_multiple
from ganlib.models.patchgan import PatchDiscriminator
from ganlib.models.unet import UNetGenerator
from ganlib.tasks.base import ImageTask, Limits
from ganlib.training.probe import PROBE_BATCH, ReferenceFid, probe_images, unwrap
from ganlib.training.step import StepContext, TaskStep, grad_norm, grad_norm_all, norm_stats

GRID_PAIRS = 16  # inputs in the sample grid, each shown with G_ema's output

if TYPE_CHECKING:
    import pandas as pd


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(
            f"a and b must both be [B, C, H, W]; got {list(a.shape)} and {list(b.shape)}"
        )


def d_input(a: Tensor, b: Tensor) -> Tensor:
    """pix2pix D's input: the input image and a (real or generated) output, ``[B, 2C, H, W]``."""
    _check_pair(a, b)
    return torch.cat([a, b], dim=1)


@torch.no_grad()
def translate(G: nn.Module, x: Tensor) -> Tensor:
    """``G(x)`` for ``x`` ``[B, C, H, W]`` of any size, same shape, for inference.

    The input is padded to a multiple of ``G.multiple`` (see
    :func:`ganlib.models.unet.pad_to_multiple`) and G's output cropped back.
    """
    padded, box = pad_to_multiple(x, G.multiple)
    return crop(G(padded), box)


def cycle_loss(real: Tensor, reconstructed: Tensor, *, weight: float) -> Tensor:
    """``weight * mean|real - reconstructed|``, the cycle-consistency loss (paper: 10)."""
    _check_pair(real, reconstructed)
    return weight * (real - reconstructed).abs().mean()


def identity_loss(real: Tensor, same: Tensor, *, weight: float) -> Tensor:
    """``weight * mean|real - same|``, with ``same`` = the generator *into* real's domain
    applied to ``real`` (paper: 0.5 * 10 = 5)."""
    _check_pair(real, same)
    return weight * (real - same).abs().mean()


@dataclass(frozen=True)
class Pix2PixLoss:
    """The losses of pix2pix, one method per D forward.

    ``adversarial`` is one of :data:`ganlib.losses.LOSSES` (the reference uses
    ``nonsaturating``); its terms average over D's patch logits ``[B, 1, h, w]``.
    """

    adversarial: AdversarialLoss
    l1_weight: float
    adv_weight: float

    def d_real(self, D: nn.Module, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """D phase, real: ``(loss, logits [B, 1, h, w])`` of D on the real pair."""
        logits = D(d_input(a, b))
        return self.adversarial.d_real(logits), logits

    def d_fake(self, D: nn.Module, a: Tensor, fake_b: Tensor) -> tuple[Tensor, Tensor]:
        """D phase, fake: ``(loss, logits)`` of D on ``(a, fake_b)`` (detached here)."""
        logits = D(d_input(a, fake_b.detach()))
        return self.adversarial.d_fake(logits), logits

    def g(self, D: nn.Module, a: Tensor, b: Tensor, fake_b: Tensor) -> tuple[Tensor, dict]:
        """G phase: ``(loss, stats)`` for ``fake_b = G(a)``, D frozen.

        ``loss = adv_weight * adversarial + l1_weight * L1(fake_b, b)``; ``stats`` (detached)
        holds ``adv``, ``l1`` (unweighted) and ``D_fake`` (D's mean logit on the fake pair).
        """
        logits = D(d_input(a, fake_b))  # [B, 1, h, w]
        adv = self.adversarial.g_loss(logits)
        l1 = (fake_b - b).abs().mean()
        stats = {"adv": adv.detach(), "l1": l1.detach(), "D_fake": logits.detach().mean()}
        return self.adv_weight * adv + self.l1_weight * l1, stats


@dataclass(frozen=True)
class CycleGANLoss:
    """The losses of CycleGAN, one method per D forward.

    ``adversarial`` is one of :data:`ganlib.losses.LOSSES` (the reference uses ``lsgan``).
    ``identity_weight`` is relative to ``cycle_weight``, as the paper's ``lambda_identity``:
    the identity terms weigh ``identity_weight * cycle_weight``. The D methods serve both
    discriminators: ``d_real(D_A, a)``, ``d_fake(D_A, pool_a.query(out.fake_a))``, and the
    same for ``D_B`` with ``b`` and ``fake_b``.
    """

    adversarial: AdversarialLoss
    cycle_weight: float
    identity_weight: float
    adv_weight: float

    @property
    def identity(self) -> bool:
        """Whether G's forward must compute the identity mappings."""
        return self.identity_weight > 0

    def d_real(self, D: nn.Module, real: Tensor) -> tuple[Tensor, Tensor]:
        """D phase, real: ``(loss, logits [B, 1, h, w])`` of D on images of its domain."""
        logits = D(real)
        return self.adversarial.d_real(logits), logits

    def d_fake(self, D: nn.Module, fake: Tensor) -> tuple[Tensor, Tensor]:
        """D phase, fake: ``(loss, logits)`` of D on generated images (detached here)."""
        logits = D(fake.detach())
        return self.adversarial.d_fake(logits), logits

    def g(
        self, D_A: nn.Module, D_B: nn.Module, a: Tensor, b: Tensor, out: CycleOutputs
    ) -> tuple[Tensor, dict]:
        """G phase: ``(loss, stats)`` for ``out = G(a, b, identity=self.identity)``, D frozen.

        ``stats`` (detached) holds each term, weighted: ``adv_AB`` (G_AB fooling D_B),
        ``adv_BA``, ``cycle_A``, ``cycle_B``, ``idt_A``, ``idt_B``; and ``D_A_fake`` /
        ``D_B_fake``, the discriminators' mean logits on the fakes.
        """
        logits_b, logits_a = D_B(out.fake_b), D_A(out.fake_a)  # [B, 1, h, w] each
        terms = {
            "adv_AB": self.adv_weight * self.adversarial.g_loss(logits_b),
            "adv_BA": self.adv_weight * self.adversarial.g_loss(logits_a),
            "cycle_A": cycle_loss(a, out.rec_a, weight=self.cycle_weight),
            "cycle_B": cycle_loss(b, out.rec_b, weight=self.cycle_weight),
        }
        if self.identity:
            if out.idt_a is None or out.idt_b is None:
                raise ValueError("identity_weight > 0: run G with identity=True")
            weight = self.identity_weight * self.cycle_weight
            terms["idt_A"] = identity_loss(a, out.idt_a, weight=weight)
            terms["idt_B"] = identity_loss(b, out.idt_b, weight=weight)
        loss = torch.stack(list(terms.values())).sum()
        stats = {k: v.detach() for k, v in terms.items()}
        stats |= {"D_A_fake": logits_a.detach().mean(), "D_B_fake": logits_b.detach().mean()}
        return loss, stats


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al. 2017): D is shown fakes
    from earlier steps too, not only from the current G.

    Until ``size`` images are stored, each queried image is stored and returned. Then each one
    is, with probability 1/2, returned as it is, or else swapped with a random stored image,
    which is returned in its place. Randomness comes from the pool's own CPU generator seeded
    with ``seed``, never the global RNG, so that the training RNG streams do not depend on it;
    give each DDP rank its own seed. ``size = 0`` turns the pool off (images pass through).
    """

    def __init__(self, size: int, seed: int):
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)
        self.images: Tensor | None = None  # [n, C, H, W], n <= size, detached

    def __len__(self) -> int:
        return 0 if self.images is None else self.images.shape[0]

    @torch.no_grad()
    def query(self, images: Tensor) -> Tensor:
        """``images`` ``[B, C, H, W]`` -> ``[B, C, H, W]``, detached, on images' device."""
        images = images.detach()
        if self.size == 0:
            return images
        if self.images is None:
            self.images = images.new_empty((0, *images.shape[1:]))
        elif self.images.shape[1:] != images.shape[1:]:
            raise ValueError(
                f"images are {list(images.shape[1:])}, the pool holds {list(self.images.shape[1:])}"
            )
        self.images = self.images.to(images.device)
        out = images.clone()
        n_new = min(self.size - len(self), images.shape[0])
        self.images = torch.cat([self.images, images[:n_new]])  # fill first, return as is
        for i in range(n_new, images.shape[0]):
            if torch.rand((), generator=self.generator).item() < 0.5:
                continue  # returned as it is, not stored
            j = int(torch.randint(self.size, (), generator=self.generator))
            out[i] = self.images[j]
            self.images[j] = images[i]
        return out

    def state_dict(self) -> dict[str, Tensor]:
        """The stored images (on the CPU, ``[n, C, H, W]``) and the generator state: tensors
        only, so checkpoints load with ``torch.load(weights_only=True)``."""
        images = torch.empty(0) if self.images is None else self.images.cpu().clone()
        return {"images": images, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict`'s output; the images move to the device of the next
        query."""
        images = state["images"]
        if images.dim() == 4 and images.shape[0] > self.size:
            raise ValueError(f"{images.shape[0]} images do not fit a pool of {self.size}")
        self.images = images.clone() if images.dim() == 4 else None
        self.generator.set_state(state["rng"])


class Pix2PixStep(TaskStep):
    """G forward on ``a`` (through DDP), D phase on (a, b) and (a, G(a)), G phase."""

    def __init__(self, ctx: StepContext):
        super().__init__(ctx)
        t: TranslationConfig = ctx.task_cfg
        self.losses = Pix2PixLoss(self.loss, t.l1_weight, t.adv_weight)

    def step(self, step: int, want_log: bool) -> dict[str, Tensor]:
        ctx = self.ctx
        batch = ctx.next_batch()
        a = ctx.to_device(batch["a"])  # [B, C, H, W]
        b = ctx.to_device(batch["b"])
        with ctx.autocast:
            fake_b = ctx.compiled(ctx.G_ddp)(a).float()
        d_stats = self._d_phase(
            lambda D: self.losses.d_real(D, a, b),
            lambda D: self.losses.d_fake(D, a, fake_b),
            want_log,
        )

        self._freeze_d()
        with ctx.autocast:
            loss_G, stats = self.losses.g(ctx.compiled(ctx.D["D"]), a, b, fake_b)
        ctx.opt_G.zero_grad(set_to_none=True)
        loss_G.float().backward()
        grad_norm_G = grad_norm(ctx.G) if want_log else None
        ctx.opt_G.step()
        return {
            **d_stats,
            "loss_G": loss_G.detach().float(),
            "l1": stats["l1"].float(),
            "adv": stats["adv"].float(),
            **norm_stats(self.grad_norm_D, grad_norm_G, ctx.device),
        }


class CycleGANStep(TaskStep):
    """Unpaired A and B: both generators in one DDP forward, then D_A and D_B (each real and
    pooled fake, one forward and backward each), then G's adversarial, cycle and identity
    losses with both D frozen."""

    def __init__(self, ctx: StepContext):
        super().__init__(ctx)
        t: TranslationConfig = ctx.task_cfg
        self.losses = CycleGANLoss(self.loss, t.cycle_weight, t.identity_weight, t.adv_weight)
        base = ctx.seed * 7919 + ctx.rank * 104729  # each rank its own pool randomness
        self.pools = {"A": ImagePool(t.pool_size, base + 1), "B": ImagePool(t.pool_size, base + 2)}

    def images_per_step(self) -> int:
        return 2 * self.ctx.cfg.batch_size  # one from each domain

    def extra_state(self) -> dict[str, Any]:
        return {f"pool_{k}": pool.state_dict() for k, pool in self.pools.items()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for k, pool in self.pools.items():
            if f"pool_{k}" in state:
                pool.load_state_dict(state[f"pool_{k}"])

    def step(self, step: int, want_log: bool) -> dict[str, Tensor]:
        ctx = self.ctx
        batch = ctx.next_batch()
        a = ctx.to_device(batch["a"])  # [B, C, H, W]
        b = ctx.to_device(batch["b"])
        with ctx.autocast:
            out = ctx.compiled(ctx.G_ddp)(a, b, identity=self.losses.identity)
        out = type(out)(*(None if t is None else t.float() for t in out))
        self._train_d()
        ctx.opt_D.zero_grad(set_to_none=True)
        loss_D = torch.zeros((), device=ctx.device)
        logits = {}
        D_ddp = {name: ctx.compiled(m) for name, m in ctx.D_ddp.items()}
        for name, real, fake in (("D_A", a, out.fake_a), ("D_B", b, out.fake_b)):
            pooled = self.pools[name[-1]].query(fake)
            with ctx.d_pass(name, last=False):
                with ctx.autocast:
                    loss_real, logits[f"{name}_real"] = self.losses.d_real(D_ddp[name], real)
                # The reference halves each D's loss: D learns slower than G.
                loss_D = loss_D + self._d_backward(0.5 * loss_real.float())
            with ctx.autocast:
                loss_fake, logits[f"{name}_fake"] = self.losses.d_fake(D_ddp[name], pooled)
            loss_D = loss_D + self._d_backward(0.5 * loss_fake.float())
        grad_norm_D = grad_norm_all(ctx.D.values()) if want_log else None
        ctx.opt_D.step()

        self._freeze_d()
        with ctx.autocast:
            D_A, D_B = ctx.compiled(ctx.D["D_A"]), ctx.compiled(ctx.D["D_B"])
            loss_G, stats = self.losses.g(D_A, D_B, a, b, out)
        ctx.opt_G.zero_grad(set_to_none=True)
        loss_G.float().backward()
        grad_norm_G = grad_norm(ctx.G) if want_log else None
        ctx.opt_G.step()
        mean = {k: v.detach().float().mean() for k, v in logits.items()}
        return {
            "loss_D": loss_D,
            "loss_G": loss_G.detach().float(),
            "D_real": (mean["D_A_real"] + mean["D_B_real"]) / 2,
            "D_fake": (mean["D_A_fake"] + mean["D_B_fake"]) / 2,
            **{k: v.float() for k, v in stats.items() if not k.endswith("_fake")},
            **norm_stats(grad_norm_D, grad_norm_G, ctx.device),
        }


class TranslationProbe:
    """Translation's probe: FID of ``G_AB`` applied to the first val images of domain A,
    against the featurize stage's reference (domain B)."""

    def __init__(self, featurize_dir: str | Path, shards: str | Path, num_images: int):
        self.fid = ReferenceFid(featurize_dir)
        self.images, _ = probe_images(shards, "a.png", num_images)

    @torch.no_grad()
    def __call__(self, G: nn.Module) -> float:
        G = unwrap(G)
        G_AB = translators(G)["AtoB"]
        device = next(G.parameters()).device
        with eval_mode(G):
            fakes = [translate(G_AB, x.to(device)) for x in self.images.split(PROBE_BATCH)]
        return self.fid(fakes)


class Translation(ImageTask):
    """The record of ``task: translation``: pix2pix (``mode: paired``) or CycleGAN
    (``mode: unpaired``)."""

    name = "translation"
    section = "translation"
    fields = ("a.png", "b.png")
    wrong_fields = (
        "task: translation needs (A, B) shards: use builtin:photos2art, imagefolder:PATH "
        "with data.paired or data.unpaired (PATH/A, PATH/B), or parquet with "
        "data.image_column_b; then run `dvc repro shard`"
    )
    probe_metric = "fid"
    promotion_metric = "fid"
    evaluator = "ganlib.evaluation.translation"
    metric_label = "FID"
    summary = "image of domain A -> image of domain B"
    example_call = 'images = model.predict(pd.DataFrame({"image": [png]}))  # PNG bytes'

    def model_config(self, cfg, task_cfg: TranslationConfig, info) -> dict:
        C, R = info["channels"], info["resolution"]
        if task_cfg.mode == "paired":
            return UNetGenerator(C, C, cfg.width, resolution=R).config
        return CycleGenerators(C, cfg.width, task_cfg.n_blocks, task_cfg.skip).config

    def build_models(self, cfg, task_cfg: TranslationConfig, mcfg, info):
        G, C = build_generator(mcfg), info["channels"]
        if task_cfg.mode == "paired":
            return G, {"D": PatchDiscriminator(2 * C, cfg.width)}
        return G, {"D_A": PatchDiscriminator(C, cfg.width), "D_B": PatchDiscriminator(C, cfg.width)}

    def make_step(self, ctx: StepContext) -> TaskStep:
        return Pix2PixStep(ctx) if ctx.task_cfg.mode == "paired" else CycleGANStep(ctx)

    def unpaired(self, task_cfg: TranslationConfig) -> bool:
        return task_cfg.mode == "unpaired"

    def grid_inputs(self, first_batch, seed: int, cfg, task_cfg):
        """The first train images of domain A of epoch 0."""
        return {"a": first_batch(GRID_PAIRS)["a"][:GRID_PAIRS].cpu()}

    @torch.no_grad()
    def grid_images(self, G: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """(input, G_AB's output) side by side."""
        device = next(G.parameters()).device
        shown = inputs["a"].to(device)
        with eval_mode(G):
            out = translate(translators(G)["AtoB"], shown)
        pairs = torch.stack([shown, out], dim=1).flatten(0, 1)  # [2N, C, H, W]: in, out, ...
        return pairs.float().cpu().clamp(-1, 1)

    def make_probe(self, task_cfg, featurize_dir, shards, num_images: int, seed: int):
        return TranslationProbe(featurize_dir, shards, num_images)

    def headline(self, m) -> str:
        return (
            f"FID {m['fid']:.3f} (identity {m['identity_fid']:.3f}), PSNR {m['psnr']:.2f} dB "
            f"(identity {m['identity_psnr']:.2f})"
        )

    def versus(self, m) -> str:
        text = (
            f"FID A->B {m['fid']:.4g} against {m['identity_fid']:.4g} for the identity (output "
            f"= input) and the floor {m['floor_fid']:.4g} (real val B images; lower is better)"
        )
        if "psnr" in m:
            text += (
                f"; PSNR to the ground truth {m['psnr']:.2f} dB against the identity's "
                f"{m['identity_psnr']:.2f} dB, SSIM {m['ssim']:.3f} against "
                f"{m['identity_ssim']:.3f}"
            )
        if "fid_BtoA" in m:
            text += f"; FID B->A {m['fid_BtoA']:.4g} (identity {m['identity_fid_BtoA']:.4g})"
        return text

    def signature(self, meta):
        """``image`` (PNG bytes), ``direction`` (string, optional) -> ``uint8 [-1, -1, -1, C]``."""
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema, TensorSpec

        inputs = Schema(
            [ColSpec("binary", "image"), ColSpec("string", "direction", required=False)]
        )
        shape = (-1, -1, -1, int(meta["channels"]))
        return ModelSignature(inputs, Schema([TensorSpec(np.dtype(np.uint8), shape)]))

    def input_example(self, meta):
        import pandas as pd

        image = self.example_image(meta)
        return pd.DataFrame({"image": [image, image]})

    def predict(self, G, meta, frame, limits=None):
        return predict_frame(G, meta, frame, limits)


# -- inference on users' images ---------------------------------------------------------------


def translators(G: nn.Module) -> dict[str, nn.Module]:
    """The directions of an exported translation generator and the network of each:
    ``{"AtoB": G}`` for pix2pix's U-Net, ``{"AtoB": G_AB, "BtoA": G_BA}`` for
    :class:`~ganlib.models.cyclegan.CycleGenerators`."""
    if isinstance(G, CycleGenerators):
        return {d: G.generator(d) for d in DIRECTIONS}
    return {"AtoB": G}


def predict_frame(
    G: nn.Module, meta: dict[str, Any], frame: pd.DataFrame, limits: Limits | None = None
) -> np.ndarray:
    """Translate the images of ``frame``: the translation pyfunc's and CLI's contract.

    ``G, meta = load_generator(dir)`` of a translation model (eval mode). ``frame`` has a
    column ``image`` (encoded image bytes, PNG or any format Pillow reads) and optionally
    ``direction``: ``AtoB`` (the default, also for missing values) or ``BtoA``, which only
    CycleGAN models have. Images may have any size (G's input is padded to its multiple and
    its output cropped back, see :func:`translate`); the rows of one call must share a size,
    since they come back as one array. ``limits`` (by default :attr:`Translation.limits`)
    bound the rows, each image's pixels and their total (G's activations grow with the area:
    a photo of 90 megapixels would take tens of GB), all checked from the images' headers
    before any is decoded. Transparent images are composited over white, and gray ones given
    to an RGB model have their value replicated (:func:`ganlib.data.images.input_array`).

    Returns ``uint8 [N, H, W, C]``, row ``i`` the translation of row ``i``. Each image goes
    through G alone, so its output does not depend on the other rows of the call. Raises a
    one-line :class:`GanlibError` naming the row for a missing column, an unusable image,
    a request over ``limits``, mixed sizes or a direction the model does not have.
    """
    if "image" not in frame.columns:
        have = ", ".join(map(str, frame.columns)) or "none"
        raise GanlibError(f"image: the input needs a column 'image' of image bytes; it has {have}")
    limits = limits or TASK.limits
    limits.check_rows(len(frame))
    nets = translators(G)
    directions = _directions(frame, nets)
    channels = int(meta["channels"])
    cells = frame["image"].tolist()
    for i, data in enumerate(cells):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise GanlibError(f"image: row {i} is a {type(data).__name__}, not image bytes")
    cells = [bytes(data) for data in cells]
    total = sum(
        input_pixels(data, name=f"image: row {i}", max_pixels=limits.max_pixels)
        for i, data in enumerate(cells)
    )  # from the headers: nothing is decoded before the whole request is known to fit
    limits.check_total(total, len(cells))
    arrays = []  # uint8 [H, W, C] each
    for i, data in enumerate(cells):
        arr = input_array(
            data, channels=channels, name=f"image: row {i}", max_pixels=limits.max_pixels
        )
        if arrays and arr.shape != arrays[0].shape:
            (h, w), (h0, w0) = arr.shape[:2], arrays[0].shape[:2]
            raise GanlibError(
                f"image: row {i} is {w}x{h} pixels, row 0 {w0}x{h0}; send images of one size "
                "per call (they come back as one array)"
            )
        arrays.append(arr)
    if not arrays:
        size = int(meta["resolution"])
        return np.empty((0, size, size, channels), np.uint8)
    out = np.empty((len(arrays), *arrays[0].shape), np.uint8)  # [N, H, W, C]
    device = next(G.parameters()).device
    for i, (arr, direction) in enumerate(zip(arrays, directions, strict=True)):
        x = from_uint8(arr[None]).to(device)  # [1, C, H, W] in [-1, 1]
        out[i] = to_uint8(translate(nets[direction], x))[0]  # [H, W, C]
    return out


def _directions(frame: pd.DataFrame, nets: dict[str, nn.Module]) -> list[str]:
    """The direction of each row: the ``direction`` column, ``AtoB`` where it is missing."""
    if "direction" not in frame.columns:
        return ["AtoB"] * len(frame)
    column = frame["direction"]
    out = []
    for i, (value, missing) in enumerate(zip(column.tolist(), column.isna(), strict=True)):
        direction = "AtoB" if missing else value
        if direction not in DIRECTIONS:
            raise GanlibError(f"direction: row {i} is {value!r}; use AtoB or BtoA")
        if direction not in nets:
            raise GanlibError(
                f"direction: row {i} asks for {direction}, but this paired (pix2pix) model "
                "translates AtoB only; BtoA needs a CycleGAN (translation.mode: unpaired)"
            )
        out.append(direction)
    return out


TASK = Translation()
