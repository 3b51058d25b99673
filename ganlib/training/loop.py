"""The one GAN training loop of every task, organised by phase: the task's step (its D and G
phases, :meth:`ganlib.tasks.base.Task.make_step`), EMA, log, snapshot, checkpoint. It runs the
same in a plain process and in every Ray Train worker; where it runs is a
:class:`~ganlib.training.session.Session`.

DDP notes (see FIELD_NOTES): G and D have separate DDP wrappers. Every D forward (real, fake,
R1, gradient penalty) is followed by its own backward: two forwards before one backward make
DDP either fail ("Expected to have finished reduction") or, with gloo, silently reduce
different gradients on each rank; it also avoids the CUDA BatchNorm + DDP in-place error.
The passes before a D update's last backward run under ``no_sync`` (``StepContext.d_pass``):
their gradients accumulate locally and are all-reduced once, by the last backward.
Real and fake go through D separately, so D's BatchNorm sees real-only and fake-only
batches in the D phase and fake-only ones in the G phase, as in DCGAN (one forward on
``cat([real, fake])`` would give D a different function in each phase). D's BatchNorm
buffers are not broadcast (``forward_sync_buffers=False``): D is never run in eval mode. In
the G phase D is used unwrapped with frozen parameters: only G's gradients are wanted.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganlib.artifacts import checkpoint_state, rng_state, set_rng_state
from ganlib.config import InpaintingConfig, TrainConfig, TranslationConfig, to_dict
from ganlib.data.loader import ShardLoader
from ganlib.data.shards import dataset_info
from ganlib.errors import GanlibError
from ganlib.models.ema import ema_beta, ema_copy, ema_update
from ganlib.tasks import get_task
from ganlib.tasks.base import Task
from ganlib.training import fastpath
from ganlib.training.schedule import values_at
from ganlib.training.session import Session, all_gather_object, all_reduce_mean
from ganlib.training.step import StepContext, TaskStep

EMA_RAMPUP = 0.05  # G_ema's half-life is at most this share of the images seen so far
BASE_COLUMNS = ("step", "epoch", "kimg", "loss_D", "loss_G", "D_real", "D_fake")


@dataclass(frozen=True)
class RunSpec:
    """Everything a training worker needs, as plain data (it is shipped to Ray workers)."""

    train: TrainConfig
    seed: int
    shards: str  # the shard root: an absolute path (workers run in another cwd) or a URL
    identity: str  # hash of what makes two runs the same run; see ganlib.training.run
    task: str = "generation"  # a name of ganlib.tasks.TASKS
    task_cfg: InpaintingConfig | TranslationConfig | None = None  # the task's own section
    mlflow_uri: str | None = None
    mlflow_run_id: str | None = None
    # featurize outputs (a path or a URL): report an in-training probe of G_ema
    probe_dir: str | None = None
    probe_fakes: int = 500  # images per probe
    fail_at_step: int | None = None  # tests: the last rank dies once at this step
    fail_marker: str | None = None  # file that makes the injected failure happen only once
    poison_at_step: int | None = None  # tests: G's weights turn NaN in this step's update
    cache_dir: str | None = None  # storage.cache_dir: node-local copies of remote shards


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


def build_models(
    task: Task, cfg: TrainConfig, task_cfg: Any, info: dict[str, Any], seed: int
) -> tuple[dict[str, Any], nn.Module, dict[str, nn.Module]]:
    """``(G's saved config, G, {name: D})``, fresh from ``seed``: the same on every rank."""
    mcfg = task.model_config(cfg, task_cfg, info)
    torch.manual_seed(seed)
    G, Ds = task.build_models(cfg, task_cfg, mcfg, info)
    return mcfg, G, Ds


def joint(Ds: dict[str, nn.Module]) -> nn.Module:
    """What checkpoints and ``opt_D`` hold: the one D, or every D in a ModuleDict."""
    return Ds["D"] if len(Ds) == 1 else nn.ModuleDict(Ds)


def optimizers(cfg: TrainConfig, G: nn.Module, D: nn.Module) -> tuple[torch.optim.Adam, ...]:
    """Adam for G and for D; fused into one kernel per step when the weights are on CUDA."""
    betas = (cfg.beta1, cfg.beta2)
    fused = {"fused": True} if next(G.parameters()).is_cuda else {}
    return (
        torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=betas, **fused),
        torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=betas, **fused),
    )


def plain_step(
    task_name: str,
    cfg: TrainConfig,
    task_cfg: Any,
    info: dict[str, Any],
    next_batch: Callable[[], dict[str, Any]],
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> TaskStep:
    """A task's training step over fresh models and optimisers in this process (one rank, no
    DDP) on ``device``, with ``cfg``'s fast path: the object the loop runs, for benchmarks to
    time and the CUDA checks to run.

    ``info`` needs ``resolution``, ``channels`` and ``classes`` (as ``dataset_info`` gives
    them); ``next_batch()`` returns a loader batch (on the CPU).
    """
    task = get_task(task_name)
    device = torch.device(device)
    fast = fastpath.resolve(cfg, device)
    _, G, Ds = build_models(task, cfg, task_cfg, info, seed)
    for m in (G, *Ds.values()):
        fast.prepare_model(m).to(device)
    opt_G, opt_D = optimizers(cfg, G, joint(Ds))
    ctx = StepContext(
        cfg=cfg, task_cfg=task_cfg, seed=seed, rank=0, world=1, device=device,
        next_batch=next_batch, G=G, G_ddp=G, D=Ds, D_ddp=Ds, opt_G=opt_G, opt_D=opt_D, fast=fast,
    )  # fmt: skip
    return task.make_step(ctx)


def train(spec: RunSpec, session: Session) -> dict[str, Any]:
    """Train until ``spec.train.steps``, resuming from the session's last checkpoint when it
    has the same ``identity``. Returns the final step, ``diverged_at`` (the step where a loss
    or a weight stopped being finite, else None), ``interrupted_at`` (the step of the final
    checkpoint when the session asked to stop, else None) and this rank's unwrapped ``G``,
    ``D`` and ``G_ema``."""
    cfg, task = spec.train, get_task(spec.task)
    device = session.device
    rank, world = session.rank, session.world_size
    if device.type == "cpu":
        torch.set_num_threads(cfg.cpus_per_worker)
    try:
        info = dataset_info(spec.shards)
    except GanlibError as exc:  # the driver read them: this node does not see them
        raise GanlibError(
            f"cannot read the shards the driver checked: {exc}; on a cluster whose nodes share "
            "no disk, set storage.root (README: Running on a Ray cluster)"
        ) from None
    B = cfg.batch_size

    # -- models and state: the same initial weights on every rank ------------------------------
    mcfg, G, Ds = build_models(task, cfg, spec.task_cfg, info, spec.seed)
    D = joint(Ds)
    G_ema = ema_copy(G)
    counters = {"step": 0, "epoch": 0, "batch": 0, "images_seen": 0, "wall_s": 0.0}
    history: list[dict[str, float]] = []
    resumed_from: list[int] = []  # the steps this run was resumed at (restarts, re-runs)
    state = session.load_latest()
    if state is not None and state["identity"] != spec.identity:
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
    # -- the fast path: memory format before DDP wraps the models (it keeps their strides) --
    fast = fastpath.resolve(cfg, device)
    for m in (G, D, G_ema):
        fast.prepare_model(m)
    G_ema.to(device)
    G_ddp = session.prepare(G, sync_buffers=True)
    D_ddp = {name: session.prepare(m, sync_buffers=False) for name, m in Ds.items()}
    opt_G, opt_D = optimizers(cfg, G, D)

    def loader(batch_size: int, rank: int, world: int, workers: int) -> ShardLoader:
        return ShardLoader(
            spec.shards, batch_size=batch_size, rank=rank, world_size=world,
            num_workers=workers, seed=spec.seed, unpaired=task.unpaired(spec.task_cfg),
            block=cfg.loader_block, cache_dir=spec.cache_dir,
        )  # fmt: skip

    def first_batch(n: int) -> dict[str, Any]:  # the first train samples of epoch 0
        first = loader(min(n, info["train_samples"]), 0, 1, 0)
        first.set_epoch(0)
        return next(iter(first))

    cursor = DataCursor(
        loader(B, rank, world, cfg.loader_workers), counters["epoch"], counters["batch"]
    )
    if state is not None:
        grid = state["grid_inputs"]
    else:  # the same for every run of the data
        grid = task.grid_inputs(first_batch, spec.seed, cfg, spec.task_cfg)
    ctx = StepContext(
        cfg=cfg, task_cfg=spec.task_cfg, seed=spec.seed, rank=rank, world=world, device=device,
        next_batch=cursor.next, G=G, G_ddp=G_ddp, D=Ds, D_ddp=D_ddp, opt_G=opt_G, opt_D=opt_D,
        fast=fast,
    )  # fmt: skip
    step_fn = task.make_step(ctx)
    if state is not None:
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        rngs = state["rng"]
        if len(rngs) == world:
            set_rng_state(rngs[rank])
            step_fn.load_extra_state(state["extra"][rank])
        else:  # resumed on another world size: continue, but not bit-exactly
            torch.manual_seed(spec.seed * 7919 + rank * 104729 + counters["step"])
    else:
        torch.manual_seed(spec.seed * 7919 + rank * 104729)  # each rank draws its own z
    tracker = _Tracker(spec) if rank == 0 else None
    probe = None
    if rank == 0 and spec.probe_dir is not None:
        probe = task.make_probe(
            spec.task_cfg, local_copy(spec.probe_dir), spec.shards, spec.probe_fakes, spec.seed
        )

    def snapshot() -> dict[str, Any]:
        # RNG states of every rank, so that each rank resumes its own stream exactly.
        rngs = all_gather_object(rng_state())
        extra = all_gather_object(step_fn.extra_state())
        if rank != 0:
            return {}
        return checkpoint_state(
            identity=spec.identity,
            task=spec.task,
            task_config=to_dict(spec.task_cfg) if spec.task_cfg is not None else {},
            resolution=info["resolution"],
            channels=info["channels"],
            model_config=mcfg,
            classes=info["classes"],
            train_config=to_dict(cfg),
            G=_cpu(G.state_dict()),
            D=_cpu(D.state_dict()),
            G_ema=_cpu(G_ema.state_dict()),
            opt_G=opt_G.state_dict(),
            opt_D=opt_D.state_dict(),
            rng=rngs,
            extra=extra,
            history=history,
            resumed_from=resumed_from,
            grid_inputs=grid,
            runtime=fast.record(),  # what ran: device, backend, precision, compile, ...
            **counters,  # step, epoch and batch (the data cursor), images seen, wall time
        )

    window_t0, window_images = time.perf_counter(), 0
    session_t0 = time.perf_counter()
    wall_at_start = counters["wall_s"]
    last_ckpt_step = counters["step"] if state is not None else None
    images_per_step = step_fn.images_per_step() * world
    stopping = False  # asked to stop: this step is the last, and it is checkpointed
    while counters["step"] < cfg.steps:
        step = counters["step"] + 1
        _maybe_fail(spec, step, rank, world)
        want_log = step % cfg.log_every == 0 or step == cfg.steps
        scheduled = apply_schedule(cfg, counters["images_seen"] / 1000, ctx)
        stats = step_fn.step(step, want_log)  # {name: detached scalar tensor}
        if spec.poison_at_step == step:  # fault injection: as an overflowing update would
            with torch.no_grad():
                next(G.parameters()).fill_(math.nan)

        # -- EMA of G (a plain copy when disabled, so G_ema is always the model to use) ------
        # The half-life ramps up with the images seen (StyleGAN2-ADA's ema_rampup), so that
        # early G_ema is not dominated by the random initial weights.
        half_life = min(cfg.ema_kimg, EMA_RAMPUP * counters["images_seen"] / 1000)
        if "ema_kimg" in scheduled:  # the schedule is the ramp (R3GAN: from 0)
            half_life = scheduled["ema_kimg"]
        ema_update(G_ema, G, ema_beta(B * world, half_life))
        counters["step"] = step
        counters["images_seen"] += images_per_step
        counters["epoch"], counters["batch"] = cursor.epoch, cursor.batch
        window_images += images_per_step

        # -- every rank agrees on finiteness and on stopping, so all of them stop together -----
        # The losses, and before a log or a checkpoint the weights after this step's update
        # (a huge learning rate can leave the losses finite and G NaN): a checkpoint never
        # holds a non-finite weight. Elsewhere NaN weights show in the next step's losses; not
        # checking every step saves 3-5 % of a digits step on CPU. A stop request seen by any
        # rank rides on the same all-reduce: the next step is the last and is checkpointed
        # (its weights are checked), so every rank stops at one step boundary.
        names = list(stats)
        values = torch.stack([stats[k].reshape(()) for k in names]).float()
        finite = torch.isfinite(values).all()
        want_ckpt = step % cfg.ckpt_every == 0 or step == cfg.steps or stopping
        if want_log or want_ckpt:
            finite &= _finite_weights(G, D)
        flags = torch.tensor([float(finite), float(session.stop_requested())])
        all_reduce_mean(flags)
        if flags[0].item() < 1.0:
            # Stop instead of training on garbage; no checkpoint of the broken state.
            session.report({"step": step, "diverged_at": step}, None)
            return {"step": step, "diverged_at": step, "last_good_step": last_ckpt_step}

        # -- log: rank-averaged values, one history row ---------------------------------------
        if want_log:
            all_reduce_mean(values)
            now = time.perf_counter()
            row = {"step": step, "epoch": counters["epoch"], "kimg": counters["images_seen"] / 1000}
            row |= {k: v.item() for k, v in zip(names, values, strict=True)}
            row |= scheduled  # the values this step trained with
            row["images_per_s"] = window_images / max(now - window_t0, 1e-9)
            window_t0, window_images = now, 0
            history.append(row)
            if tracker:
                tracker.log_metrics(row, step)
                print(
                    f"step {step}/{cfg.steps}  loss_D {row['loss_D']:.3f}  "
                    f"loss_G {row['loss_G']:.3f}  {_rate(row['images_per_s'])} images/s",
                    flush=True,
                )

        # -- snapshot: the fixed-input grid, over time ----------------------------------------
        if tracker and (step % cfg.sample_every == 0 or step == cfg.steps):
            tracker.log_grid(task.grid_images(G_ema, grid), step)

        # -- checkpoint: every rank reports, rank 0 with the state -----------------------------
        if want_ckpt:
            counters["wall_s"] = wall_at_start + time.perf_counter() - session_t0
            snap = snapshot()
            # the last log's numbers, with this step's own step and kimg
            metrics = {k: v for k, v in (history[-1] if history else {}).items() if v is not None}
            metrics |= {"step": step, "kimg": counters["images_seen"] / 1000}
            if stopping and step < cfg.steps:  # no probe: whoever stops the run is waiting
                metrics["interrupted_at"] = step
            elif probe is not None:  # rank 0 only: Ray Train and Tune read rank 0's metrics
                metrics[task.probe_metric] = probe(G_ema)
                if tracker:
                    tracker.log_metrics({task.probe_metric: metrics[task.probe_metric]}, step)
            session.report(metrics, snap or None)
            last_ckpt_step = step
        if stopping and step < cfg.steps:
            return {"step": step, "diverged_at": None, "interrupted_at": step}
        stopping = flags[1].item() > 0

    if state is not None and counters["step"] == state["step"]:
        # Nothing left to train (a finished run was re-run): report once so that every
        # rank has reported and the result carries the checkpoint we resumed from.
        session.report({"step": counters["step"]}, snapshot() or None)
    return {
        "step": counters["step"], "diverged_at": None, "interrupted_at": None,
        "G": G, "D": D, "G_ema": G_ema,
    }  # fmt: skip


def local_copy(location: str) -> Path:
    """A directory to read ``location`` from on this node: itself when it is a path, else a
    download into a temporary directory (a featurize extractor that the driver staged)."""
    from ganlib import storage

    if not storage.is_url(location):
        return Path(location)
    import tempfile

    local = Path(tempfile.mkdtemp(prefix="ganlib-"))
    storage.copy_tree(location, local)
    return local


def apply_schedule(cfg: TrainConfig, kimg: float, ctx: StepContext) -> dict[str, float]:
    """Set this step's scheduled values (``train.schedule``) on the optimisers and the step's
    knobs; returns them (``{}`` without a schedule). Both optimisers follow ``lr``."""
    if not cfg.schedule.active:
        return {}
    values = values_at(cfg, kimg)
    for opt in (ctx.opt_G, ctx.opt_D):
        for group in opt.param_groups:
            if "lr" in values:
                group["lr"] = values["lr"]
            if "beta2" in values:
                group["betas"] = (group["betas"][0], values["beta2"])
    ctx.knobs.update({k: values[k] for k in ("gamma", "augment_p") if k in values})
    return values


def history_columns(history: list[dict[str, Any]]) -> list[str]:
    """The columns of ``train/history.csv``: the shared ones, then each task's, in order."""
    columns = list(BASE_COLUMNS)
    for row in history:
        columns += [k for k in row if k not in columns]
    return columns


def _finite_weights(*models: nn.Module) -> torch.Tensor:
    """A bool scalar: every parameter of ``models`` is finite (one norm per tensor; NaN and
    inf propagate through the sum)."""
    norms = [p.detach().norm() for m in models for p in m.parameters()]
    return torch.isfinite(torch.stack(norms).sum())


def _cpu(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CPU copy in the default memory format (channels_last weights are stored as NCHW)."""
    fmt = torch.contiguous_format
    return {k: v.detach().to("cpu", memory_format=fmt, copy=True) for k, v in sd.items()}


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
            from ganlib.tracking import worker_client

            self.client = worker_client(spec.mlflow_uri)
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


def _rate(per_s: float) -> str:
    """``577`` images/s, or ``0.52`` where a step of 1024-px images takes seconds."""
    return f"{per_s:.0f}" if per_s >= 10 else f"{per_s:.2g}"
