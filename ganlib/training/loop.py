"""The one GAN training loop, organised by phase: D step, D regulariser, G step, EMA, log,
snapshot, checkpoint. It runs the same in a plain process and in every Ray Train worker; where
it runs is a :class:`~ganlib.training.session.Session`.

DDP notes (see FIELD_NOTES): G and D have separate DDP wrappers. Every D forward (real, fake,
R1, gradient penalty) is followed by its own backward: two forwards before one backward make
DDP either fail ("Expected to have finished reduction") or, with gloo, silently reduce
different gradients on each rank; it also avoids the CUDA BatchNorm + DDP in-place error.
Real and fake go through D separately, so D's BatchNorm sees real-only and fake-only
batches in the D phase and fake-only ones in the G phase, as in DCGAN (one forward on
``cat([real, fake])`` would give D a different function in each phase). D's BatchNorm
buffers are not broadcast (``forward_sync_buffers=False``): D is never run in eval mode. In
the G phase D is used unwrapped with frozen parameters: only G's gradients are wanted.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ganlib import losses
from ganlib.config import TrainConfig, to_dict
from ganlib.data.augment import diff_augment
from ganlib.data.loader import ShardLoader
from ganlib.data.shards import dataset_info
from ganlib.models import build_gan, build_generator
from ganlib.models.ema import ema_beta, ema_copy, ema_update
from ganlib.training.checkpoint import rng_state, set_rng_state
from ganlib.training.session import Session, all_gather_object, all_reduce_mean

EMA_RAMPUP = 0.05  # G_ema's half-life is at most this share of the images seen so far
GRID = 64  # samples in the 8x8 grid drawn from G_ema on fixed noise
HISTORY_COLUMNS = (
    "step", "epoch", "kimg", "loss_D", "loss_G", "D_real", "D_fake",
    "grad_norm_D", "grad_norm_G", "r1", "gp", "images_per_s",
)  # fmt: skip


@dataclass(frozen=True)
class RunSpec:
    """Everything a training worker needs, as plain data (it is shipped to Ray workers)."""

    train: TrainConfig
    seed: int
    shards: str  # absolute path of the shard directory (workers run in another cwd)
    identity: str  # hash of what makes two runs the same run; see ganlib.training.distributed
    mlflow_uri: str | None = None
    mlflow_run_id: str | None = None
    probe_dir: str | None = None  # featurize outputs: report an in-training FID of G_ema
    probe_fakes: int = 500  # generated images per FID probe
    fail_at_step: int | None = None  # tests: the last rank dies once at this step
    fail_marker: str | None = None  # file that makes the injected failure happen only once


def model_config(cfg: TrainConfig, info: dict[str, Any]) -> dict[str, Any]:
    """The generator's rebuild config for this run (what checkpoints and models/ store)."""
    num_classes = len(info["classes"]) if cfg.conditional and info["classes"] else 0
    return {
        "arch": cfg.arch,
        "z_dim": cfg.z_dim,
        "resolution": info["resolution"],
        "channels": info["channels"],
        "width": cfg.width,
        "num_classes": num_classes,
    }


class DataCursor:
    """Where training is in the data, ``(epoch, batch)``, so that a resume continues exactly."""

    def __init__(self, loader: ShardLoader, epoch: int = 0, batch: int = 0):
        self.loader, self.epoch, self.batch = loader, epoch, batch
        self._it = None

    def next(self) -> dict[str, Any]:
        while True:
            if self._it is None:
                self.loader.set_epoch(self.epoch, start_batch=self.batch)
                self._it = iter(self.loader)
            try:
                out = next(self._it)
            except StopIteration:
                self.epoch, self.batch, self._it = self.epoch + 1, 0, None
                continue
            self.batch += 1
            return out


def train(spec: RunSpec, session: Session) -> dict[str, Any]:
    """Train until ``spec.train.steps``, resuming from the session's last checkpoint when it
    has the same ``identity``. Returns the final step, ``diverged_at`` (the step where a loss
    stopped being finite, else None) and this rank's unwrapped ``G``, ``D`` and ``G_ema``."""
    cfg = spec.train
    device = session.device
    rank, world = session.rank, session.world_size
    if device.type == "cpu":
        torch.set_num_threads(cfg.cpus_per_worker)
    info = dataset_info(spec.shards)
    mcfg = model_config(cfg, info)
    conditional = mcfg["num_classes"] > 0
    B = cfg.batch_size

    # -- models and state: the same initial weights on every rank ------------------------------
    torch.manual_seed(spec.seed)
    G, D = build_gan(**mcfg)
    G_ema = ema_copy(G)
    counters = {"step": 0, "epoch": 0, "batch": 0, "images_seen": 0, "wall_s": 0.0}
    history: list[dict[str, float]] = []
    resumed_from: list[int] = []  # the steps this run was resumed at (restarts, re-runs)
    state = session.load_latest()
    if state is not None and state.get("identity") != spec.identity:
        state = None  # another configuration's checkpoint: start over
    if state is not None and state["step"] > cfg.steps:
        state = None  # fewer steps than already trained: the shorter run is a new one
    if state is not None:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        counters = {k: state[k] for k in counters}
        history = list(state["history"])
        resumed_from = [*state["resumed_from"], counters["step"]]
    G_ema.to(device)
    G_ddp = session.prepare(G, sync_buffers=True)
    D_ddp = session.prepare(D, sync_buffers=False)
    if cfg.channels_last and device.type == "cuda":
        for m in (G, D, G_ema):
            m.to(memory_format=torch.channels_last)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    if state is not None:
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        rngs = state["rng"]
        if len(rngs) == world:
            set_rng_state(rngs[rank])
        else:  # resumed on another world size: continue, but not bit-exactly
            torch.manual_seed(spec.seed * 7919 + rank * 104729 + counters["step"])
    else:
        torch.manual_seed(spec.seed * 7919 + rank * 104729)  # each rank draws its own z

    loader = ShardLoader(
        spec.shards,
        batch_size=B,
        rank=rank,
        world_size=world,
        num_workers=cfg.loader_workers,
        seed=spec.seed,
    )
    cursor = DataCursor(loader, counters["epoch"], counters["batch"])
    loss_fns = losses.LOSSES[cfg.loss]
    augment = (lambda x: diff_augment(x, cfg.augment)) if cfg.augment else (lambda x: x)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cfg.precision == "bf16" and device.type == "cuda"
        else contextlib.nullcontext()
    )
    fixed_z = torch.randn(GRID, cfg.z_dim, generator=torch.Generator().manual_seed(spec.seed))
    fixed_y = grid_labels(mcfg["num_classes"])
    tracker = _Tracker(spec) if rank == 0 else None
    probe = _fid_probe(spec) if rank == 0 else None

    def to_device(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        real = batch["image"].to(device, non_blocking=True)  # [B, C, H, W] in [-1, 1]
        if cfg.channels_last and device.type == "cuda":
            real = real.contiguous(memory_format=torch.channels_last)
        y = batch["label"].to(device) if conditional else None  # [B]
        return real, y

    def snapshot() -> dict[str, Any]:
        # RNG states of every rank, so that each rank resumes its own stream exactly.
        rngs = all_gather_object(rng_state())
        if rank != 0:
            return {}
        return {
            "identity": spec.identity,
            "model_config": mcfg,
            "classes": info["classes"],
            "train_config": to_dict(cfg),
            "G": _cpu(G.state_dict()),
            "D": _cpu(D.state_dict()),
            "G_ema": _cpu(G_ema.state_dict()),
            "opt_G": opt_G.state_dict(),
            "opt_D": opt_D.state_dict(),
            "rng": rngs,
            "history": history,
            "resumed_from": resumed_from,
            "fixed_z": fixed_z,
            **counters,  # step, epoch and batch (the data cursor), images seen, wall time
        }

    window_t0, window_images = time.perf_counter(), 0
    session_t0 = time.perf_counter()
    wall_at_start = counters["wall_s"]
    last_ckpt_step = counters["step"] if state is not None else None
    while counters["step"] < cfg.steps:
        step = counters["step"] + 1
        _maybe_fail(spec, step, rank, world)
        want_log = step % cfg.log_every == 0 or step == cfg.steps
        r1_due = cfg.r1_gamma > 0 and step % cfg.r1_every == 0

        # -- D phase: real, then detached fake; each forward followed by its own backward ----
        G.requires_grad_(False)
        D.requires_grad_(True)
        r1 = gp = torch.zeros((), device=device)
        for _ in range(cfg.d_steps):
            real, y = to_device(cursor.next())
            z = torch.randn(B, cfg.z_dim, device=device)
            with torch.no_grad(), autocast:
                fake = G(z, y).to(real.dtype)  # [B, C, H, W]; unwrapped G: no grads, no DDP
            opt_D.zero_grad(set_to_none=True)
            with autocast:
                real_logits = D_ddp(augment(real), y).float()  # [B]
            loss_D_real = loss_fns.d_real(real_logits)
            loss_D_real.backward()
            with autocast:
                fake_logits = D_ddp(augment(fake), y).float()  # [B]
            loss_D_fake = loss_fns.d_fake(fake_logits)
            loss_D_fake.backward()
            loss_D = loss_D_real.detach() + loss_D_fake.detach()
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
            opt_D.step()

        # -- G phase: fool D; D frozen and unwrapped ------------------------------------------
        D.requires_grad_(False)
        G.requires_grad_(True)
        z = torch.randn(B, cfg.z_dim, device=device)
        with autocast:
            fake = G_ddp(z, y)
            fake_logits_G = D(augment(fake), y).float()
        loss_G = loss_fns.g_loss(fake_logits_G)
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        grad_norm_G = _grad_norm(G) if want_log else None
        opt_G.step()

        # -- EMA of G (a plain copy when disabled, so G_ema is always the model to use) ------
        # The half-life ramps up with the images seen (StyleGAN2-ADA's ema_rampup), so that
        # early G_ema is not dominated by the random initial weights.
        half_life = min(cfg.ema_kimg, EMA_RAMPUP * counters["images_seen"] / 1000)
        ema_update(G_ema, G, ema_beta(B * world, half_life))
        counters["step"] = step
        counters["images_seen"] += B * world * cfg.d_steps
        counters["epoch"], counters["batch"] = cursor.epoch, cursor.batch
        window_images += B * world * cfg.d_steps

        # -- every rank agrees on finiteness, so all of them stop together ---------------------
        stats = torch.stack(
            [loss_D.detach(), loss_G.detach(), real_logits.detach().mean(),
             fake_logits.detach().mean(), r1.detach(), gp.detach()]
        ).float()  # fmt: skip
        finite = torch.isfinite(stats).all().float().reshape(1)
        all_reduce_mean(finite)
        if finite.item() < 1.0:
            # Stop instead of training on garbage; no checkpoint of the broken state.
            session.report({"step": step, "diverged_at": step}, None)
            return {"step": step, "diverged_at": step, "last_good_step": last_ckpt_step}

        # -- log: rank-averaged values, one history row ---------------------------------------
        if want_log:
            all_reduce_mean(stats)
            now = time.perf_counter()
            row = {
                "step": step,
                "epoch": counters["epoch"],
                "kimg": counters["images_seen"] / 1000,
                "loss_D": stats[0].item(),
                "loss_G": stats[1].item(),
                "D_real": stats[2].item(),
                "D_fake": stats[3].item(),
                "grad_norm_D": grad_norm_D,
                "grad_norm_G": grad_norm_G,
                "r1": stats[4].item(),
                "gp": stats[5].item(),
                "images_per_s": window_images / max(now - window_t0, 1e-9),
            }
            window_t0, window_images = now, 0
            history.append(row)
            if tracker:
                tracker.log_metrics(row, step)
                print(
                    f"step {step}/{cfg.steps}  loss_D {row['loss_D']:.3f}  "
                    f"loss_G {row['loss_G']:.3f}  {row['images_per_s']:.0f} images/s",
                    flush=True,
                )

        # -- snapshot: the fixed-noise grid, over time ----------------------------------------
        if tracker and (step % cfg.sample_every == 0 or step == cfg.steps):
            tracker.log_grid(sample_grid(G_ema, fixed_z, fixed_y), step)

        # -- checkpoint: every rank reports, rank 0 with the state -----------------------------
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            counters["wall_s"] = wall_at_start + time.perf_counter() - session_t0
            snap = snapshot()
            metrics = {"step": step, "kimg": counters["images_seen"] / 1000}
            if history:
                metrics.update({k: v for k, v in history[-1].items() if v is not None})
            if probe is not None:  # rank 0 only: Ray Train and Tune read rank 0's metrics
                metrics["fid"] = probe(G_ema, mcfg["num_classes"])
                if tracker:
                    tracker.log_metrics({"fid": metrics["fid"]}, step)
            session.report(metrics, snap or None)
            last_ckpt_step = step

    if state is not None and counters["step"] == state["step"]:
        # Nothing left to train (a finished run was re-run): report once so that every
        # rank has reported and the result carries the checkpoint we resumed from.
        session.report({"step": counters["step"]}, snapshot() or None)
    return {"step": counters["step"], "diverged_at": None, "G": G, "D": D, "G_ema": G_ema}


def grid_labels(num_classes: int) -> torch.Tensor | None:
    """The class of each grid cell (cycling through the classes), None for unconditional G."""
    return torch.arange(GRID) % num_classes if num_classes else None


@torch.no_grad()
def sample_grid(G: torch.nn.Module, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """G's images for ``z`` (and labels ``y``) on G's device, back on the CPU: ``[N, C, H, W]``."""
    device = next(G.parameters()).device
    was_training = G.training
    G.eval()
    out = G(z.to(device), None if y is None else y.to(device)).float().cpu()
    G.train(was_training)
    return out.clamp(-1, 1)


def generator_from_checkpoint(state: dict[str, Any]) -> torch.nn.Module:
    """Rebuild G_ema from a checkpoint's data (no pickled code) in eval mode."""
    G = build_generator(state["model_config"])
    G.load_state_dict(state["G_ema"])
    return G.eval().requires_grad_(False)


def _fid_probe(spec: RunSpec):
    """The cheap in-training FID of ``spec.probe_dir``'s extractor, or None."""
    if spec.probe_dir is None:
        return None
    from ganlib.metrics.probe import FidProbe

    return FidProbe(spec.probe_dir, num_fake=spec.probe_fakes, seed=spec.seed)


def _cpu(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


def _grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return torch.stack(grads).norm().item() if grads else 0.0


def _maybe_fail(spec: RunSpec, step: int, rank: int, world: int) -> None:
    """Fault injection for tests: the last rank's process dies, once, at ``fail_at_step``."""
    if spec.fail_at_step != step or rank != world - 1 or spec.fail_marker is None:
        return
    marker = Path(spec.fail_marker)
    if marker.exists():
        return
    marker.write_text(str(step))
    os._exit(17)  # a hard crash, as when a node dies: no exception, no cleanup


class _Tracker:
    """Rank 0's MLflow logging: metrics with steps and sample grids, straight to the run."""

    def __init__(self, spec: RunSpec):
        self.client = None
        if spec.mlflow_uri and spec.mlflow_run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=spec.mlflow_uri)
        self.run_id = spec.mlflow_run_id

    def log_metrics(self, row: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        from ganlib.tracking import log_metrics

        keep = {k: v for k, v in row.items() if k != "step" and v is not None and math.isfinite(v)}
        log_metrics(self.client, self.run_id, keep, step)

    def log_grid(self, images: torch.Tensor, step: int) -> None:
        if self.client is None:
            return
        import tempfile

        from ganlib.grid import save_grid

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"samples_step{step:07d}.png"
            save_grid(images, path)
            self.client.log_artifact(self.run_id, str(path), artifact_path="samples")
