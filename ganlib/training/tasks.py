"""What one training step does, per task: the models it builds and the phases of its step.

The loop (:mod:`ganlib.training.loop`) owns everything tasks share: state and resume, the
optimisers, EMA of G, logging, the finiteness check, checkpoints. A task step owns the rest:

- :meth:`build` makes ``G`` and the discriminators (a dict; CycleGAN has two);
- :meth:`step` runs one G update and the D update(s) before it, and returns its statistics
  (detached scalar tensors, the same names every step; ``loss_D`` and ``loss_G`` always);
- :meth:`grid_inputs` picks the fixed inputs of the sample grid; :func:`grid_images` draws it.

Every task keeps the DDP rule of the loop's docstring: each D forward is followed by its own
backward; in the G phase D is used unwrapped with frozen parameters.

- ``generation``: noise -> image (DCGAN / ResNet G and D), with R1, WGAN-GP and DiffAugment.
- ``inpainting``: U-Net G over (pull-push fill, mask), PatchGAN D over (image, mask),
  :class:`~ganlib.tasks.inpainting.InpaintingLoss` (hole and valid L1 + adversarial).
- ``translation`` paired: pix2pix, U-Net G, PatchGAN D over (a, b) pairs, L1 + adversarial.
- ``translation`` unpaired: CycleGAN, two ResNet G in one module (one DDP forward per step),
  two PatchGAN D with histories of fakes (:class:`~ganlib.tasks.translation.ImagePool`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ganlib import losses
from ganlib.config import InpaintingConfig, TrainConfig, TranslationConfig
from ganlib.data.augment import diff_augment
from ganlib.data.masks import random_masks
from ganlib.models import build_gan
from ganlib.models.cyclegan import CycleGenerators
from ganlib.models.patchgan import PatchDiscriminator
from ganlib.models.unet import UNetGenerator
from ganlib.tasks import inpainting as inp
from ganlib.tasks import translation as trn
from ganlib.tasks.translation import ImagePool

GRID = 64  # generation: samples in the 8x8 grid drawn from G_ema on fixed noise
GRID_PAIRS = 16  # image-to-image tasks: inputs in the grid, each shown with G_ema's output


@dataclass
class StepContext:
    """What a task step works with; the loop fills it once models and optimisers exist."""

    cfg: TrainConfig
    task_cfg: Any  # InpaintingConfig | TranslationConfig | None
    seed: int
    rank: int
    world: int
    device: torch.device
    next_batch: Callable[[], dict[str, Any]]
    G: nn.Module
    G_ddp: nn.Module
    D: dict[str, nn.Module]
    D_ddp: dict[str, nn.Module]
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    autocast: contextlib.AbstractContextManager


def model_config(
    task: str, cfg: TrainConfig, task_cfg: Any, info: dict[str, Any]
) -> dict[str, Any]:
    """G's rebuild config for this run (what checkpoints and ``models/generator`` store)."""
    R, C = info["resolution"], info["channels"]
    if task == "generation":
        num_classes = len(info["classes"]) if cfg.conditional and info["classes"] else 0
        return {
            "arch": cfg.arch,
            "z_dim": cfg.z_dim,
            "resolution": R,
            "channels": C,
            "width": cfg.width,
            "num_classes": num_classes,
        }
    if task == "inpainting":
        G = UNetGenerator(C + 1, C, cfg.width, resolution=R, gated=task_cfg.gated)
        return G.config
    if task_cfg.mode == "paired":
        return UNetGenerator(C, C, cfg.width, resolution=R).config
    return CycleGenerators(C, cfg.width, task_cfg.n_blocks, task_cfg.skip).config


def make_step(task: str, ctx: StepContext) -> TaskStep:
    if task == "generation":
        return GenerationStep(ctx)
    if task == "inpainting":
        return InpaintingStep(ctx)
    return Pix2PixStep(ctx) if ctx.task_cfg.mode == "paired" else CycleGANStep(ctx)


def build_models(
    task: str, cfg: TrainConfig, task_cfg: Any, mcfg: dict[str, Any], channels: int
) -> tuple[nn.Module, dict[str, nn.Module]]:
    """A fresh ``G`` and its discriminators ``{name: D}`` (seed the global RNG first)."""
    from ganlib.models import build_generator

    if task == "generation":
        G, D = build_gan(**mcfg)
        return G, {"D": D}
    G = build_generator(mcfg)
    C = channels
    if task == "inpainting":
        return G, {"D": PatchDiscriminator(C + 1, cfg.width)}
    if task_cfg.mode == "paired":
        return G, {"D": PatchDiscriminator(2 * C, cfg.width)}
    return G, {"D_A": PatchDiscriminator(C, cfg.width), "D_B": PatchDiscriminator(C, cfg.width)}


class TaskStep:
    """One training step of a task; see the module docstring."""

    def __init__(self, ctx: StepContext):
        self.ctx = ctx
        self.loss = losses.LOSSES[ctx.cfg.loss]

    def step(self, step: int, want_log: bool) -> dict[str, Tensor]:
        raise NotImplementedError

    def images_per_step(self) -> int:
        """Images this rank consumes per step."""
        return self.ctx.cfg.batch_size

    def extra_state(self) -> dict[str, Any]:
        """Per-rank state beyond the RNGs that a resume needs (CycleGAN's image pools)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def _d_phase(
        self,
        real_loss: Callable[[nn.Module], tuple[Tensor, Tensor]],
        fake_loss: Callable[[nn.Module], tuple[Tensor, Tensor]],
        want_log: bool,
    ) -> dict[str, Tensor]:
        """The D update of a one-D task: real, then fake, each forward followed by its own
        backward. ``real_loss(D)`` and ``fake_loss(D)`` return ``(loss, logits)``."""
        ctx = self.ctx
        self._train_d()
        ctx.opt_D.zero_grad(set_to_none=True)
        with ctx.autocast:
            loss_real, real_logits = real_loss(ctx.D_ddp["D"])
        loss_D = self._d_backward(loss_real.float())
        with ctx.autocast:
            loss_fake, fake_logits = fake_loss(ctx.D_ddp["D"])
        loss_D = loss_D + self._d_backward(loss_fake.float())
        self.grad_norm_D = _grad_norm(ctx.D["D"]) if want_log else None
        ctx.opt_D.step()
        return {
            "loss_D": loss_D,
            "D_real": real_logits.detach().float().mean(),
            "D_fake": fake_logits.detach().float().mean(),
        }

    def _d_backward(self, loss: Tensor) -> Tensor:
        loss.backward()
        return loss.detach()

    def _freeze_d(self) -> None:
        for D in self.ctx.D.values():
            D.requires_grad_(False)
        self.ctx.G.requires_grad_(True)

    def _train_d(self) -> None:
        self.ctx.G.requires_grad_(False)
        for D in self.ctx.D.values():
            D.requires_grad_(True)


class GenerationStep(TaskStep):
    """Noise -> image: D phase (``d_steps`` times: real, fake, then R1 / WGAN-GP), G phase."""

    def __init__(self, ctx: StepContext):
        super().__init__(ctx)
        cfg = ctx.cfg
        self.conditional = ctx.G.config["num_classes"] > 0
        self.augment = (lambda x: diff_augment(x, cfg.augment)) if cfg.augment else (lambda x: x)

    def images_per_step(self) -> int:
        return self.ctx.cfg.batch_size * self.ctx.cfg.d_steps

    def _batch(self) -> tuple[Tensor, Tensor | None]:
        ctx = self.ctx
        batch = ctx.next_batch()
        real = batch["image"].to(ctx.device, non_blocking=True)  # [B, C, H, W] in [-1, 1]
        if ctx.cfg.channels_last and ctx.device.type == "cuda":
            real = real.contiguous(memory_format=torch.channels_last)
        y = batch["label"].to(ctx.device) if self.conditional else None  # [B]
        return real, y

    def step(self, step: int, want_log: bool) -> dict[str, Tensor]:
        ctx, cfg, loss_fns, augment = self.ctx, self.ctx.cfg, self.loss, self.augment
        G, G_ddp, D, D_ddp = ctx.G, ctx.G_ddp, ctx.D["D"], ctx.D_ddp["D"]
        B, device = cfg.batch_size, ctx.device
        r1_due = cfg.r1_gamma > 0 and step % cfg.r1_every == 0

        # -- D phase: real, then detached fake; each forward followed by its own backward ----
        self._train_d()
        r1 = gp = torch.zeros((), device=device)
        for _ in range(cfg.d_steps):
            real, y = self._batch()
            z = torch.randn(B, cfg.z_dim, device=device)
            with torch.no_grad(), ctx.autocast:
                fake = G(z, y).to(real.dtype)  # [B, C, H, W]; unwrapped G: no grads, no DDP
            ctx.opt_D.zero_grad(set_to_none=True)
            with ctx.autocast:
                real_logits = D_ddp(augment(real), y).float()  # [B]
            loss_D = self._d_backward(loss_fns.d_real(real_logits))
            with ctx.autocast:
                fake_logits = D_ddp(augment(fake), y).float()  # [B]
            loss_D = loss_D + self._d_backward(loss_fns.d_fake(fake_logits))
            # -- D regularisers, each with its own forward and backward. "0 * logits" puts
            # every D parameter in the graph: DDP fails when a backward leaves some without a
            # gradient (the last bias does not touch the input gradient) - as in StyleGAN2-ADA.
            if cfg.gp_weight > 0:  # WGAN-GP on interpolates of real and fake
                x_hat = losses.interpolate(real, fake)
                gp_logits = D_ddp(x_hat, y).float()
                gp = losses.gradient_penalty(gp_logits, x_hat)
                (cfg.gp_weight * gp + 0 * gp_logits.sum()).backward()
            if r1_due:  # lazy R1 on real images
                real_r1 = real.detach().requires_grad_(True)
                r1_logits = D_ddp(augment(real_r1), y).float()
                r1 = losses.r1_penalty(r1_logits, real_r1)
                (cfg.r1_gamma / 2 * cfg.r1_every * r1 + 0 * r1_logits.sum()).backward()
            grad_norm_D = _grad_norm(D) if want_log else None
            ctx.opt_D.step()

        # -- G phase: fool D; D frozen and unwrapped ------------------------------------------
        self._freeze_d()
        z = torch.randn(B, cfg.z_dim, device=device)
        with ctx.autocast:
            fake = G_ddp(z, y)
            fake_logits_G = D(augment(fake), y).float()
        loss_G = loss_fns.g_loss(fake_logits_G)
        ctx.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        grad_norm_G = _grad_norm(G) if want_log else None
        ctx.opt_G.step()
        return {
            "loss_D": loss_D,
            "loss_G": loss_G.detach(),
            "D_real": real_logits.detach().mean(),
            "D_fake": fake_logits.detach().mean(),
            "r1": r1.detach(),
            "gp": gp.detach(),
            **_norms(grad_norm_D, grad_norm_G, device),
        }


class InpaintingStep(TaskStep):
    """G forward (through DDP) on (fill, mask), D phase on real and composite, G phase."""

    def __init__(self, ctx: StepContext):
        super().__init__(ctx)
        t: InpaintingConfig = ctx.task_cfg
        self.losses = inp.InpaintingLoss(
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
        real = ctx.next_batch()["image"].to(ctx.device, non_blocking=True)  # [B, C, H, W]
        mask = self.masks(step, tuple(real.shape[-2:]))  # [B, 1, H, W]
        with ctx.autocast:
            out, fake = inp.generate(ctx.G_ddp, real, mask)  # through DDP: G's one forward
        d_stats = self._d_phase(
            lambda D: self.losses.d_real(D, real, mask),
            lambda D: self.losses.d_fake(D, fake.float(), mask),
            want_log,
        )

        self._freeze_d()
        with ctx.autocast:
            loss_G, stats = self.losses.g(ctx.D["D"], real, mask, out.float(), fake.float())
        ctx.opt_G.zero_grad(set_to_none=True)
        loss_G.float().backward()
        grad_norm_G = _grad_norm(ctx.G) if want_log else None
        ctx.opt_G.step()
        return {
            **d_stats,
            "loss_G": loss_G.detach().float(),
            # l1_hole, l1_valid, adv (and fm); D_fake is the D phase's, in d_stats
            **{k: v.float() for k, v in stats.items() if k != "D_fake"},
            **_norms(self.grad_norm_D, grad_norm_G, ctx.device),
        }


class Pix2PixStep(TaskStep):
    """G forward on ``a`` (through DDP), D phase on (a, b) and (a, G(a)), G phase."""

    def __init__(self, ctx: StepContext):
        super().__init__(ctx)
        t: TranslationConfig = ctx.task_cfg
        self.losses = trn.Pix2PixLoss(self.loss, t.l1_weight, t.adv_weight)

    def step(self, step: int, want_log: bool) -> dict[str, Tensor]:
        ctx = self.ctx
        batch = ctx.next_batch()
        a = batch["a"].to(ctx.device, non_blocking=True)  # [B, C, H, W]
        b = batch["b"].to(ctx.device, non_blocking=True)
        with ctx.autocast:
            fake_b = ctx.G_ddp(a).float()
        d_stats = self._d_phase(
            lambda D: self.losses.d_real(D, a, b),
            lambda D: self.losses.d_fake(D, a, fake_b),
            want_log,
        )

        self._freeze_d()
        with ctx.autocast:
            loss_G, stats = self.losses.g(ctx.D["D"], a, b, fake_b)
        ctx.opt_G.zero_grad(set_to_none=True)
        loss_G.float().backward()
        grad_norm_G = _grad_norm(ctx.G) if want_log else None
        ctx.opt_G.step()
        return {
            **d_stats,
            "loss_G": loss_G.detach().float(),
            "l1": stats["l1"].float(),
            "adv": stats["adv"].float(),
            **_norms(self.grad_norm_D, grad_norm_G, ctx.device),
        }


class CycleGANStep(TaskStep):
    """Unpaired A and B: both generators in one DDP forward, then D_A and D_B (each real and
    pooled fake, one forward and backward each), then G's adversarial, cycle and identity
    losses with both D frozen."""

    def __init__(self, ctx: StepContext):
        super().__init__(ctx)
        t: TranslationConfig = ctx.task_cfg
        self.losses = trn.CycleGANLoss(self.loss, t.cycle_weight, t.identity_weight, t.adv_weight)
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
        a = batch["a"].to(ctx.device, non_blocking=True)  # [B, C, H, W]
        b = batch["b"].to(ctx.device, non_blocking=True)
        with ctx.autocast:
            out = ctx.G_ddp(a, b, identity=self.losses.identity)
        out = type(out)(*(None if t is None else t.float() for t in out))
        self._train_d()
        ctx.opt_D.zero_grad(set_to_none=True)
        loss_D = torch.zeros((), device=ctx.device)
        logits = {}
        for name, real, fake in (("D_A", a, out.fake_a), ("D_B", b, out.fake_b)):
            pooled = self.pools[name[-1]].query(fake)
            with ctx.autocast:
                loss_real, logits[f"{name}_real"] = self.losses.d_real(ctx.D_ddp[name], real)
            # The reference halves each D's loss: D learns slower than G.
            loss_D = loss_D + self._d_backward(0.5 * loss_real.float())
            with ctx.autocast:
                loss_fake, logits[f"{name}_fake"] = self.losses.d_fake(ctx.D_ddp[name], pooled)
            loss_D = loss_D + self._d_backward(0.5 * loss_fake.float())
        grad_norm_D = _grad_norm_all(ctx.D.values()) if want_log else None
        ctx.opt_D.step()

        self._freeze_d()
        with ctx.autocast:
            loss_G, stats = self.losses.g(ctx.D["D_A"], ctx.D["D_B"], a, b, out)
        ctx.opt_G.zero_grad(set_to_none=True)
        loss_G.float().backward()
        grad_norm_G = _grad_norm(ctx.G) if want_log else None
        ctx.opt_G.step()
        mean = {k: v.detach().float().mean() for k, v in logits.items()}
        return {
            "loss_D": loss_D,
            "loss_G": loss_G.detach().float(),
            "D_real": (mean["D_A_real"] + mean["D_B_real"]) / 2,
            "D_fake": (mean["D_A_fake"] + mean["D_B_fake"]) / 2,
            **{k: v.float() for k, v in stats.items() if not k.endswith("_fake")},
            **_norms(grad_norm_D, grad_norm_G, ctx.device),
        }


def grid_inputs(
    task: str, first_batch: dict[str, Any], seed: int, z_dim: int, task_cfg: Any
) -> dict[str, Tensor]:
    """The fixed inputs of the sample grid, stored in checkpoints: ``z`` for generation, the
    first train images (and fixed masks) for the image-to-image tasks."""
    if task == "generation":
        return {"z": torch.randn(GRID, z_dim, generator=torch.Generator().manual_seed(seed))}
    if task == "inpainting":
        image = first_batch["image"][:GRID_PAIRS].cpu()
        rng = np.random.default_rng([seed, 2**31])
        kw = {"kind": task_cfg.mask_kind, "area_range": (task_cfg.min_area, task_cfg.max_area)}
        mask = random_masks(rng, image.shape[0], tuple(image.shape[-2:]), **kw)
        return {"image": image, "mask": mask}
    return {"a": first_batch["a"][:GRID_PAIRS].cpu()}


@torch.no_grad()
def grid_images(
    task: str, G: nn.Module, inputs: dict[str, Tensor], labels: Tensor | None = None
) -> Tensor:
    """The sample grid's images, ``[N, C, H, W]`` on the CPU in [-1, 1]: G's samples, or
    (input, output) pairs side by side (the masked input shows its hole in grey)."""
    device = next(G.parameters()).device
    was_training = G.training
    G.eval()
    try:
        if task == "generation":
            y = None if labels is None else labels.to(device)
            return G(inputs["z"].to(device), y).float().cpu().clamp(-1, 1)
        if "mask" in inputs:
            image, mask = inputs["image"].to(device), inputs["mask"].to(device)
            out = inp.inpaint(G, image, mask)
            shown = image * (1 - mask)  # hole at 0: mid grey
        else:
            shown = inputs["a"].to(device)
            G_AB = G.generator("AtoB") if isinstance(G, CycleGenerators) else G
            out = trn.translate(G_AB, shown)
        pairs = torch.stack([shown, out], dim=1).flatten(0, 1)  # [2N, C, H, W]: in, out, ...
        return pairs.float().cpu().clamp(-1, 1)
    finally:
        G.train(was_training)


def _grad_norm(module: nn.Module) -> float:
    grads = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return torch.stack(grads).norm().item() if grads else 0.0


def _grad_norm_all(modules) -> float:
    return float(np.sqrt(sum(_grad_norm(m) ** 2 for m in modules)))


def _norms(d: float | None, g: float | None, device: torch.device) -> dict[str, Tensor]:
    """Gradient norms as stats (logged rows only; NaN marks "not measured this step")."""
    if d is None:
        return {}
    return {
        "grad_norm_D": torch.tensor(d, device=device),
        "grad_norm_G": torch.tensor(g, device=device),
    }
