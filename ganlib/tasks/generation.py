"""Generation: noise (and an optional class label) -> image.

G and D are one of the noise-to-image families of :data:`ganlib.models.ARCHITECTURES`
(DCGAN, ResNet), optionally class-conditional. The step is :class:`GenerationStep`: a D phase
(``d_steps`` times: real, fake, then R1 / WGAN-GP, with DiffAugment on both), then a G phase.
The in-training probe is an FID of fixed noise against the train split (:class:`FidProbe`);
the evaluate stage measures FID, KID, precision/recall, density/coverage (and for labelled
data the classifier score and class coverage) next to a real-vs-real floor; the registry ranks
by FID. The registered model draws images by seed (:func:`ganlib.sampling.generate`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ganlib import losses
from ganlib.config import Params, R3ganConfig, TrainConfig
from ganlib.data.augment import diff_augment
from ganlib.data.pixels import batch_for
from ganlib.errors import ConfigError, GanlibError
from ganlib.models import SUPPORTED_RESOLUTIONS, build_gan, r3gan
from ganlib.models.base import eval_mode
from ganlib.tasks.base import Limits, Task
from ganlib.training.probe import PROBE_BATCH, ReferenceFid, unwrap
from ganlib.training.step import StepContext, TaskStep, grad_norm, norm_stats

GRID = 64  # samples in the 8x8 grid drawn from G_ema on fixed noise


class GenerationStep(TaskStep):
    """Noise -> image: D phase (``d_steps`` times: real, fake, then R1 / WGAN-GP), G phase."""

    def __init__(self, ctx: StepContext):
        super().__init__(ctx)
        self.conditional = ctx.G.config["num_classes"] > 0
        self.relativistic = ctx.cfg.loss == "rpgan"

    def augment(self, x: Tensor) -> Tensor:
        """``train.augment`` at this step's probability (``knobs``; 1 unless scheduled)."""
        cfg = self.ctx.cfg
        return diff_augment(x, cfg.augment, self.ctx.knobs["augment_p"]) if cfg.augment else x

    def images_per_step(self) -> int:
        # rpgan's G phase pairs its fakes with a fresh real batch
        return self.ctx.cfg.batch_size * (self.ctx.cfg.d_steps + self.relativistic)

    def _batch(self) -> tuple[Tensor, Tensor | None]:
        ctx = self.ctx
        batch = ctx.next_batch()
        real = ctx.to_device(batch["image"])  # [B, C, H, W] in [-1, 1]
        y = batch["label"].to(ctx.device) if self.conditional else None  # [B]
        return real, y

    def step(self, step: int, want_log: bool) -> dict[str, Tensor]:
        if self.relativistic:
            return self._relativistic_step(step, want_log)
        ctx, cfg, loss_fns, augment = self.ctx, self.ctx.cfg, self.loss, self.augment
        G, G_ddp, D, D_ddp = ctx.G, ctx.G_ddp, ctx.D["D"], ctx.D_ddp["D"]
        # compiled (train.compile) where no double backward follows; penalties use D_ddp
        G_c, G_ddp_c, D_c, D_ddp_c = map(ctx.compiled, (G, G_ddp, D, D_ddp))
        B, device = cfg.batch_size, ctx.device
        gamma = ctx.knobs["gamma"]
        r1_due = gamma > 0 and step % cfg.r1_every == 0
        # the D pass whose backward all-reduces (ctx.d_pass): real, fake, gp, r1, r2 in turn
        last = "r2" if r1_due and cfg.r2 else "r1" if r1_due else "gp" if cfg.gp_weight else "fake"

        # -- D phase: real, then detached fake; each forward followed by its own backward ----
        self._train_d()
        r1 = r2 = gp = torch.zeros((), device=device)
        for _ in range(cfg.d_steps):
            real, y = self._batch()
            z = torch.randn(B, cfg.z_dim, device=device)
            with torch.no_grad(), ctx.autocast:
                fake = G_c(z, y).to(real.dtype)  # [B, C, H, W]; unwrapped G: no grads, no DDP
            ctx.opt_D.zero_grad(set_to_none=True)
            with ctx.d_pass("D", last=False):
                with ctx.autocast:
                    real_logits = D_ddp_c(augment(real), y).float()  # [B]
                loss_D = self._d_backward(loss_fns.d_real(real_logits))
            with ctx.d_pass("D", last=last == "fake"):
                with ctx.autocast:
                    fake_logits = D_ddp_c(augment(fake), y).float()  # [B]
                loss_D = loss_D + self._d_backward(loss_fns.d_fake(fake_logits))
            # -- D regularisers, each with its own forward and backward, eager and in fp32 (a
            # double backward: no torch.compile, no autocast). "0 * logits" puts
            # every D parameter in the graph: DDP fails when a backward leaves some without a
            # gradient (the last bias does not touch the input gradient) - as in StyleGAN2-ADA.
            if cfg.gp_weight > 0:  # WGAN-GP on interpolates of real and fake
                with ctx.d_pass("D", last=last == "gp"):
                    x_hat = losses.interpolate(real, fake)
                    gp_logits = D_ddp(x_hat, y).float()
                    gp = losses.gradient_penalty(gp_logits, x_hat)
                    (cfg.gp_weight * gp + 0 * gp_logits.sum()).backward()
            if r1_due:  # lazy R1 on real images
                with ctx.d_pass("D", last=last == "r1"):
                    real_r1 = real.detach().requires_grad_(True)
                    r1_logits = D_ddp(augment(real_r1), y).float()
                    r1 = losses.r1_penalty(r1_logits, real_r1)
                    (gamma / 2 * cfg.r1_every * r1 + 0 * r1_logits.sum()).backward()
            if r1_due and cfg.r2:  # and R2 on the fakes, with its own forward
                fake_r2 = fake.detach().requires_grad_(True)
                r2_logits = D_ddp(augment(fake_r2), y).float()
                r2 = losses.r2_penalty(r2_logits, fake_r2)
                (gamma / 2 * cfg.r1_every * r2 + 0 * r2_logits.sum()).backward()
            grad_norm_D = grad_norm(D) if want_log else None
            ctx.opt_D.step()

        # -- G phase: fool D; D frozen and unwrapped ------------------------------------------
        self._freeze_d()
        z = torch.randn(B, cfg.z_dim, device=device)
        with ctx.autocast:
            fake = G_ddp_c(z, y)
            fake_logits_G = D_c(augment(fake), y).float()
        loss_G = loss_fns.g_loss(fake_logits_G)
        ctx.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        grad_norm_G = grad_norm(G) if want_log else None
        ctx.opt_G.step()
        return {
            "loss_D": loss_D,
            "loss_G": loss_G.detach(),
            "D_real": real_logits.detach().mean(),
            "D_fake": fake_logits.detach().mean(),
            "r1": r1.detach(),
            "r2": r2.detach(),
            "gp": gp.detach(),
            **norm_stats(grad_norm_D, grad_norm_G, device),
        }

    def _relativistic_step(self, step: int, want_log: bool) -> dict[str, Tensor]:
        """R3GAN's step: relativistic pairing and R1 (+ R2) in one D forward on
        ``cat([real, fake])`` per D update (one forward, one backward: the DDP rule; exact for
        a D without batch statistics, which the config ensures), then G against the pairing
        with a fresh real batch."""
        ctx, cfg, augment = self.ctx, self.ctx.cfg, self.augment
        G, G_ddp, D, D_ddp = ctx.G, ctx.G_ddp, ctx.D["D"], ctx.D_ddp["D"]
        G_c, G_ddp_c, D_c = map(ctx.compiled, (G, G_ddp, D))
        B, device = cfg.batch_size, ctx.device
        gamma = ctx.knobs["gamma"]
        penalised = gamma > 0 and step % cfg.r1_every == 0
        # R1 and R2 come from this forward's input gradient (a double backward): eager then.
        # Under bf16 the forward is autocast, as R3GAN's; the penalties are taken in fp32.
        D_fwd = D_ddp if penalised else ctx.compiled(D_ddp)

        self._train_d()
        r1 = r2 = torch.zeros((), device=device)
        for _ in range(cfg.d_steps):
            real, y = self._batch()
            z = torch.randn(B, cfg.z_dim, device=device)
            with torch.no_grad(), ctx.autocast:
                fake = G_c(z, y).to(real.dtype)  # [B, C, H, W]
            x = torch.cat([real, fake]).detach().requires_grad_(penalised)  # [2B, C, H, W]
            ctx.opt_D.zero_grad(set_to_none=True)
            with ctx.autocast:
                y2 = None if y is None else torch.cat([y, y])  # [2B]
                logits = D_fwd(augment(x), y2).float()  # [2B]
            real_logits, fake_logits = logits[:B], logits[B:]
            loss_D = losses.rpgan_d(real_logits, fake_logits)
            total = loss_D
            if penalised:
                r1, r2 = losses.r1_r2_penalties(logits, x, B)
                total = total + gamma / 2 * cfg.r1_every * (r1 + (r2 if cfg.r2 else 0))
            total.backward()
            grad_norm_D = grad_norm(D) if want_log else None
            ctx.opt_D.step()

        self._freeze_d()
        real, y = self._batch()  # fresh reals to pair with the new fakes
        z = torch.randn(B, cfg.z_dim, device=device)
        with ctx.autocast:
            fake = G_ddp_c(z, y)
            with torch.no_grad():
                real_logits_G = D_c(augment(real), y).float()  # [B]
            fake_logits_G = D_c(augment(fake), y).float()  # [B]
        loss_G = losses.rpgan_g(fake_logits_G, real_logits_G)
        ctx.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        grad_norm_G = grad_norm(G) if want_log else None
        ctx.opt_G.step()
        return {
            "loss_D": loss_D.detach(),
            "loss_G": loss_G.detach(),
            "D_real": real_logits.detach().mean(),
            "D_fake": fake_logits.detach().mean(),
            "r1": r1.detach(),
            "r2": r2.detach(),
            "gp": torch.zeros((), device=device),
            **norm_stats(grad_norm_D, grad_norm_G, device),
        }


class FidProbe:
    """``probe(G, num_classes) -> FID`` of ``num_fake`` images of G against the reference.

    ``featurize_dir`` holds the saved extractor and ``reference.npz`` (statistics of real
    images). The noise ``z`` [num_fake, z_dim] is drawn on first use from a
    ``torch.Generator`` seeded by ``seed`` (never the global RNG) and reused by every call;
    conditional generators get the labels 0, 1, ..., K-1, 0, 1, ... in turn.
    """

    def __init__(self, featurize_dir: str | Path, *, num_fake: int = 500, seed: int = 0) -> None:
        if num_fake < 2:
            raise ValueError(f"num_fake must be >= 2, got {num_fake}")
        self.fid = ReferenceFid(featurize_dir)
        self.num_fake = num_fake
        self.seed = seed
        self._z: torch.Tensor | None = None  # [num_fake, z_dim] on the CPU

    def noise(self, z_dim: int) -> torch.Tensor:
        """The fixed noise ``[num_fake, z_dim]`` (CPU), the same for every call."""
        if self._z is None or self._z.shape[1] != z_dim:
            g = torch.Generator().manual_seed(self.seed)
            self._z = torch.randn(self.num_fake, z_dim, generator=g)
        return self._z

    @property
    def extractor(self):
        return self.fid.extractor

    @torch.no_grad()
    def __call__(self, G: nn.Module, num_classes: int = 0) -> float:
        """FID of G's images on the fixed noise; G runs in eval mode and gets its mode back.

        ``G`` is a ganlib generator (``G(z, labels=None)``, ``G.config["z_dim"]`` and
        ``["resolution"]``); a DDP wrapper is unwrapped. Batches hold at most
        :func:`~ganlib.data.pixels.batch_for` images of G's resolution.
        """
        G = unwrap(G)
        device = next(G.parameters()).device
        z = self.noise(G.config["z_dim"])
        labels = torch.arange(self.num_fake) % num_classes if num_classes > 0 else None
        step = batch_for(G.config["resolution"], PROBE_BATCH)

        def fakes():  # [B, C, R, R] each, in [-1, 1]; r3gan's output is not squashed
            for i in range(0, self.num_fake, step):
                lb = None if labels is None else labels[i : i + step].to(device)  # [B]
                yield G(z[i : i + step].to(device), lb).clamp(-1, 1)

        with eval_mode(G):
            return self.fid(fakes())


def r3gan_arguments(cfg: R3ganConfig | None, resolution: int) -> dict[str, Any]:
    """The ``R3Generator`` arguments of the ``r3gan:`` section at ``resolution``: the preset's
    plan, with ``widths`` / ``blocks`` replacing it when given; one-line errors."""
    cfg = cfg or R3ganConfig()
    try:
        args = r3gan.preset(cfg.preset, resolution)
    except ConfigError as exc:
        message = str(exc).replace("r3gan preset", "r3gan.preset")
        raise ConfigError(f"params.yaml: {message}") from None
    args |= {"group_size": cfg.group_size, "expansion": cfg.expansion}
    if cfg.widths is not None:
        if len(cfg.widths) != r3gan.num_stages(resolution):
            raise ConfigError(
                f"params.yaml: r3gan.widths: {len(cfg.widths)} stages given; resolution "
                f"{resolution} has {r3gan.num_stages(resolution)} (4x4 up to {resolution}x"
                f"{resolution})"
            )
        args["widths"] = list(cfg.widths)
    if cfg.blocks is not None:
        args["blocks"] = cfg.blocks
    return args


class Generation(Task):
    """The record of ``task: generation``."""

    name = "generation"
    section = None
    fields = ("png",)
    probe_metric = "fid"
    promotion_metric = "fid"
    evaluator = "ganlib.evaluation.generation"
    metric_label = "FID"
    summary = "noise (and a class) -> image"
    example_call = 'images = model.predict(pd.DataFrame({"seed": [0, 1, 2]}))  # uint8 [3, H, W, C]'
    limits = Limits(max_rows=1024)  # 26,000 seeds of one request took 85 s and 3 GB

    def config(self, params: Params) -> R3ganConfig | None:
        """Generation has no section of its own; its family's options are its config (the
        ``r3gan:`` section for ``train.arch: r3gan``, none for dcgan and resnet)."""
        return params.r3gan if params.train.arch == "r3gan" else None

    def check(self, cfg: TrainConfig, task_cfg: Any, info: Mapping[str, Any]) -> None:
        supported = SUPPORTED_RESOLUTIONS[cfg.arch]
        if info["resolution"] not in supported:
            raise GanlibError(
                f"data.resolution: {info['resolution']} is not supported by train.arch "
                f"{cfg.arch} (supported: {', '.join(map(str, supported))})"
            )
        if cfg.conditional and not info["classes"]:
            raise GanlibError("train.conditional: true needs labelled data; the shards have none")
        if tuple(info["fields"]) != self.fields:
            raise GanlibError(
                "task: generation needs single-image shards; these hold (A, B) pairs "
                "for translation: set task: translation or re-shard another data.source"
            )
        if cfg.arch == "r3gan":  # the plan must fit the resolution
            r3gan_arguments(task_cfg, info["resolution"])

    def model_config(self, cfg: TrainConfig, task_cfg: Any, info: Mapping[str, Any]) -> dict:
        num_classes = len(info["classes"]) if cfg.conditional and info["classes"] else 0
        size = {"resolution": info["resolution"], "channels": info["channels"]}
        if cfg.arch == "r3gan":  # its own plan; train.width is dcgan's and resnet's
            family = r3gan_arguments(task_cfg, info["resolution"])
        else:
            family = {"width": cfg.width}
        return {"arch": cfg.arch, "z_dim": cfg.z_dim, **size, **family, "num_classes": num_classes}

    def build_models(
        self, cfg: TrainConfig, task_cfg: Any, mcfg: dict, info: Mapping[str, Any]
    ) -> tuple[nn.Module, dict[str, nn.Module]]:
        G, D = build_gan(**mcfg)
        return G, {"D": D}

    def make_step(self, ctx: StepContext) -> TaskStep:
        return GenerationStep(ctx)

    def grid_inputs(
        self, first_batch: Callable[[int], dict[str, Any]], seed: int, cfg: TrainConfig, task_cfg
    ) -> dict[str, Tensor]:
        return {"z": torch.randn(GRID, cfg.z_dim, generator=torch.Generator().manual_seed(seed))}

    @torch.no_grad()
    def grid_images(self, G: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """G's samples on the fixed noise; a conditional G cycles through its classes."""
        device = next(G.parameters()).device
        z = inputs["z"].to(device)
        K = G.config["num_classes"]
        y = (torch.arange(len(z)) % K).to(device) if K else None
        step = batch_for(G.config["resolution"], len(z))
        with eval_mode(G):
            parts = [
                G(z[i : i + step], None if y is None else y[i : i + step]).float().cpu()
                for i in range(0, len(z), step)
            ]
        return torch.cat(parts).clamp(-1, 1)

    def make_probe(self, task_cfg, featurize_dir, shards, num_images: int, seed: int):
        fid = FidProbe(featurize_dir, num_fake=num_images, seed=seed)
        return lambda G: fid(G, unwrap(G).config["num_classes"])

    def headline(self, m: Mapping[str, Any]) -> str:
        return (
            f"FID {m['fid']:.3f} (floor {m['floor']['fid']:.3f}), KID {m['kid_mean']:.4f}, "
            f"{m['protocol']['num_fake']} images"
        )

    def versus(self, m: Mapping[str, Any]) -> str:
        floor = m["floor"]
        text = (
            f"FID {m['fid']:.4g} against the real-vs-real floor {floor['fid']:.4g} (real val "
            f"images under the same card; lower is better), KID {m['kid_mean']:.4g} (floor "
            f"{floor['kid_mean']:.4g}), precision {m['precision']:.3f} / recall "
            f"{m['recall']:.3f}, density {m['density']:.3f} / coverage {m['coverage']:.3f}"
        )
        if "class_coverage" in m:
            text += f", {m['classes_covered']:.0f} classes produced ({m['class_coverage']:.0%})"
        return text

    def signature(self, meta: Mapping[str, Any]):
        """``seed`` (required), ``label`` (optional) -> ``uint8 [-1, H, W, C]``.

        Every generator takes the same columns; an unconditional one answers a ``label`` with
        an error rather than MLflow dropping the column unseen. Both columns are typed Any, not
        long: the scoring server casts JSON to a long column before predict sees it (1.5 -> 1,
        "5" -> 5, true -> 1, 2**63 -> -2**63), so the integers are checked by
        :func:`ganlib.sampling.generate` instead, on the values as sent.
        """
        import numpy as np
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema, TensorSpec
        from mlflow.types.schema import AnyType

        R, C = int(meta["resolution"]), int(meta["channels"])
        inputs = Schema([ColSpec(AnyType(), "seed"), ColSpec(AnyType(), "label", required=False)])
        return ModelSignature(inputs, Schema([TensorSpec(np.dtype(np.uint8), (-1, R, R, C))]))

    def input_example(self, meta: Mapping[str, Any]):
        import pandas as pd

        conditional = meta["model_config"]["num_classes"] > 0
        example = {"seed": [0, 1], **({"label": [0, 1]} if conditional else {})}
        return pd.DataFrame(example, dtype="int64")

    def predict(self, G: nn.Module, meta: Mapping[str, Any], frame, limits: Limits | None = None):
        """Images by seed: a ``seed`` column of integers in [0, 2**63) and, for conditional
        generators, an optional integer ``label`` column (see :func:`ganlib.sampling.generate`);
        at most ``limits.max_rows`` rows and ``limits.max_total_pixels`` pixels of images."""
        from ganlib.sampling import generate

        limits = limits or self.limits
        if "seed" not in frame.columns:
            have = ", ".join(map(str, frame.columns)) or "none"
            raise GanlibError(f"seed: the input needs an int column 'seed'; it has {have}")
        limits.check_rows(len(frame))
        R = int(meta["model_config"]["resolution"])
        limits.check_total(len(frame) * R * R, len(frame))
        labels = frame["label"].tolist() if "label" in frame.columns else None
        return generate(G, meta["model_config"], frame["seed"].tolist(), labels)


TASK = Generation()
