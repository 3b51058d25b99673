"""Ray Train glue: the worker session and the ``TorchTrainer`` run.

The loop (:mod:`ganlib.training.loop`) is plain PyTorch; this module is the only place that
knows about ``ray.train``. Backend: ``TorchTrainer`` picks gloo on CPU and NCCL on GPU.
Checkpoints are reported by rank 0 (every rank reports, the same number of times) and kept
under ``storage/name`` (a path, or a URL such as ``s3://bucket/prefix/runs`` that every node
reaches: :mod:`ganlib.storage`); running again with the same ``storage`` and ``name`` resumes, and a
crashed worker group is restarted from the last checkpoint up to ``train.max_failures`` times.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ganlib.artifacts import check_finite, load_checkpoint, save_checkpoint
from ganlib.config import TrainConfig
from ganlib.errors import GanlibError, Interrupted
from ganlib.training.loop import RunSpec, train


class RunControl:
    """A Ray actor between the driver and the workers of one run: the driver calls ``set`` on
    SIGINT/SIGTERM and every worker watches for it; rank 0 notes a divergence here, which Ray's
    ``Result`` would not carry (its metrics are those of the last checkpoint).

    An actor rather than a file: it works on a cluster whose nodes share no disk. A worker
    asks ``wait`` once and checks the future every step (a local ``done()``, no RPC).
    """

    def __init__(self) -> None:
        import asyncio

        self._event = asyncio.Event()
        self._diverged_at: int | None = None

    async def set(self) -> None:
        self._event.set()

    async def wait(self) -> bool:
        await self._event.wait()
        return True

    async def note_divergence(self, step: int) -> None:
        self._diverged_at = step

    async def diverged_at(self) -> int | None:
        return self._diverged_at


class RayTrainSession:
    """A Ray Train worker: its rank, DDP wrapping via ``prepare_model``, checkpoints via report,
    the driver's stop request and the divergence note via a :class:`RunControl` actor."""

    def __init__(self, control=None) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._control = control
        self._stop = control.wait.remote().future() if control is not None else None

    def stop_requested(self) -> bool:
        return self._stop is not None and self._stop.done()

    def prepare(self, module: torch.nn.Module, *, sync_buffers: bool) -> torch.nn.Module:
        import ray.train.torch

        if self.world_size == 1:
            return ray.train.torch.prepare_model(module, parallel_strategy=None)
        return ray.train.torch.prepare_model(
            module, parallel_strategy_kwargs={"forward_sync_buffers": sync_buffers}
        )

    def load_latest(self) -> dict[str, Any] | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()  # readable: the driver checked it (repair_run_dir)
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return load_checkpoint(Path(d))

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        import ray.train

        if metrics.get("diverged_at") is not None and self._control is not None and self.rank == 0:
            ray.get(self._control.note_divergence.remote(int(metrics["diverged_at"])))
        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(state, Path(tmp))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _worker(config: dict[str, Any]) -> None:
    train(config["spec"], RayTrainSession(config.get("control")))


def use_gpu(device: str) -> bool:
    """Whether workers get a GPU: ``auto`` asks the Ray cluster, not the driver's machine."""
    if device == "cpu":
        return False
    import ray

    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    if device == "cuda" and not has_gpu:
        raise GanlibError("train.device: cuda, but the Ray cluster has no GPU; use auto or cpu")
    return has_gpu


def check_placeable(cfg: TrainConfig, gpu: bool) -> None:
    """Fail fast (Ray would wait forever) when the cluster cannot place every worker."""
    import ray

    have = ray.cluster_resources()
    need_cpu = cfg.num_workers * cfg.cpus_per_worker
    if need_cpu > have.get("CPU", 0):
        raise GanlibError(
            f"train.num_workers: {cfg.num_workers} workers x {cfg.cpus_per_worker} CPU need "
            f"{need_cpu} CPUs, the Ray cluster has {have.get('CPU', 0):g}; lower train.num_workers"
        )
    if gpu and cfg.num_workers > have.get("GPU", 0):
        raise GanlibError(
            f"train.num_workers: {cfg.num_workers} GPU workers, the Ray cluster has "
            f"{have.get('GPU', 0):g} GPUs; lower train.num_workers"
        )


def fit(spec: RunSpec, *, storage: str | Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train under Ray Train; returns ``(final checkpoint state, last rank-0 metrics)``.
    ``storage`` is Ray Train's storage: a local path, or a URL every node reaches."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from ganlib import storage as stores

    cfg = spec.train
    gpu = use_gpu(cfg.device)
    check_placeable(cfg, gpu)
    run_dir = stores.join(storage, name)
    if not stores.is_url(storage):  # a remote run directory is left to Ray
        repair_run_dir(Path(run_dir))
    control = ray.remote(num_cpus=0)(RunControl).remote()
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"spec": spec, "control": control},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=name,
            **stores.ray_storage(str(storage)),
            failure_config=ray.train.FailureConfig(
                max_failures=cfg.max_failures, controller_failure_limit=3
            ),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    try:
        with _stop_on_signals(control) as received:
            result = _in_thread(trainer.fit)
    except ray.train.TrainingFailedError as exc:
        raise GanlibError(
            f"training failed after {cfg.max_failures} restarts: {failure_cause(exc)} "
            f"(worker logs under {run_dir})"
        ) from None
    metrics = dict(result.metrics or {})
    diverged_at = ray.get(control.diverged_at.remote())
    if diverged_at is not None:
        last = result.checkpoint.path if result.checkpoint is not None else None
        raise diverged_error(int(diverged_at), last)
    if result.checkpoint is None:
        raise GanlibError(f"training under {run_dir} produced no checkpoint")
    if metrics.get("interrupted_at") is not None:
        raise Interrupted(
            f"interrupted at step {int(metrics['interrupted_at'])}; `dvc repro` resumes",
            received[0] if received else signal.SIGINT,
        )
    with result.checkpoint.as_directory() as d:
        state = load_checkpoint(Path(d))
    if state["step"] < cfg.steps:  # never exported as a finished run
        raise GanlibError(
            f"training under {run_dir} ended at step {state['step']} of {cfg.steps} "
            "without an error; see the worker logs there, then rerun (it resumes)"
        )
    return state, metrics


@contextlib.contextmanager
def _stop_on_signals(control) -> Iterator[list[int]]:
    """While training, the first SIGINT or SIGTERM sets ``control`` (the workers finish the next
    step, checkpoint it and return); a second one raises KeyboardInterrupt now, without a
    final checkpoint. Yields the signals received. Only the main thread can handle signals:
    elsewhere (under Tune) this does nothing."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame) -> None:
        received.append(signum)
        if len(received) > 1:
            raise KeyboardInterrupt
        control.set.remote()
        print(
            f"{signal.Signals(signum).name}: stopping after this step with a checkpoint "
            "(again to stop now, without one)",
            flush=True,
        )

    before = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def _in_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a helper thread while the main thread waits, handling signals.

    Ray Train's ``fit`` installs its own SIGINT handler when called from the main thread (it
    aborts the workers where they are: the checkpoints they report while shutting down are
    left out of Ray's snapshot, and the run exits 1); from another thread it installs none,
    as under Tune. Waiting in short joins keeps the main thread able to run handlers."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in box:
        raise box["error"]
    return box["result"]


def failure_cause(exc: BaseException) -> str:
    """One line for why Ray Train failed: the lowest failed rank's own exception (a
    ``GanlibError`` raised in a worker reads as it would in one process), not Ray's wrapper
    ("Training failed due to worker errors")."""
    failures = getattr(exc, "worker_failures", None) or {}
    if failures:
        rank = min(failures)
        return f"rank {rank}: {_one_line(failures[rank])}"
    inner = getattr(exc, "controller_failure", None)
    return _one_line(inner if inner is not None else exc)


def _one_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # a RayTaskError's original exception
    if isinstance(cause, BaseException):
        exc = cause
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if isinstance(exc, GanlibError):
        return lines[0] if lines else type(exc).__name__
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's list of a run's checkpoints


def repair_run_dir(run_dir: Path) -> None:
    """Make Ray Train's snapshot of a run name only checkpoints that can be resumed from.

    Ray hands the workers the newest checkpoint its snapshot names and refuses to start when
    a named one is gone; a truncated or corrupt one (a full disk, a copy cut short) would
    fail every restart until ``max_failures``. So, before Ray reads it: checkpoints that are
    gone are dropped from the snapshot, and the newest ones that cannot be read (format,
    fields, NaN/inf weights) are moved aside to ``bad-<name>`` and dropped, until a good one
    is found, each with one line on stderr. Checkpoint directories the snapshot does not name
    (reported just before a kill -9, never recorded) are removed. Local storage only (a
    remote run directory is left to Ray).
    """
    path = run_dir / RAY_SNAPSHOT
    names: list[str] = []
    if path.is_file():
        try:
            snap = json.loads(path.read_text())
            results, indices = snap["checkpoint_results"], snap["checkpoint_report_indices"]
            names = [r["checkpoint_dir_name"] for r in results]
        except (ValueError, KeyError, TypeError) as exc:
            raise GanlibError(
                f"{path}: not a readable Ray Train run snapshot ({type(exc).__name__}: {exc}); "
                f"delete {run_dir} to train this run from the start"
            ) from None
    # Reported by a run that was killed before Ray recorded them: Ray would never resume
    # from them nor delete them (num_to_keep counts only what its snapshot names).
    for orphan in sorted(run_dir.glob("checkpoint_*")):
        if orphan.is_dir() and orphan.name not in names:
            shutil.rmtree(orphan)
            print(f"warning: {orphan}: not in Ray's record of the run (left by a killed run); "
                  "removed", file=sys.stderr)  # fmt: skip
    if not path.is_file():
        return
    order = sorted(range(len(names)), key=lambda i: indices[i])  # oldest report first
    drop = {i for i in order if not (run_dir / names[i]).is_dir()}
    for i in drop:
        print(f"warning: {run_dir / names[i]}: checkpoint gone; dropped", file=sys.stderr)
    for i in reversed([i for i in order if i not in drop]):  # newest first, to a good one
        try:
            state = load_checkpoint(run_dir / names[i])
            for part in ("G", "D", "G_ema"):
                check_finite(state[part], f"{run_dir / names[i]}: {part}")
            break
        except GanlibError as exc:
            aside = run_dir / f"bad-{names[i]}"
            (run_dir / names[i]).rename(aside)
            drop.add(i)
            print(f"warning: {exc}; moved to {aside.name}, resuming before it", file=sys.stderr)
    if not drop:
        return
    kept = [i for i in order if i not in drop]
    if not kept:
        print(f"warning: {run_dir}: no checkpoint left; the run starts over", file=sys.stderr)
    snap["checkpoint_results"] = [results[i] for i in kept]
    snap["checkpoint_report_indices"] = [indices[i] for i in kept]
    snap["latest_checkpoint_result"] = results[kept[-1]] if kept else None
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(snap))
    os.replace(tmp, path)


def diverged_error(step: int, ckpt_dir: str | None) -> GanlibError:
    where = ckpt_dir or "none"
    return GanlibError(
        f"training diverged: a loss or a weight is NaN/inf at step {step}; last good "
        f"checkpoint: {where}; lower train.lr_g / train.lr_d or change train.loss"
    )
