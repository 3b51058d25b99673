"""The train stage's driver: check everything, start (or join) Ray, train, hand back the result.

``train_run`` is what ``python -m pipeline.train`` calls, under ``dvc repro`` on one machine
and under ``ray job submit`` on a cluster alike.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ganlib import tracking
from ganlib.config import Params, flatten, to_dict
from ganlib.data.shards import dataset_info
from ganlib.errors import GanlibError
from ganlib.grid import save_grid
from ganlib.metrics.probe import PROBE_METRICS
from ganlib.models import SUPPORTED_RESOLUTIONS
from ganlib.training.distributed import fit, run_identity
from ganlib.training.loop import RunSpec, generator_from_checkpoint, grid_labels, history_columns
from ganlib.training.tasks import grid_images

SHARDS = Path("data/shards")
RUNS = Path("runs")


@dataclass(frozen=True)
class TrainResult:
    state: dict[str, Any]  # the final checkpoint
    summary: dict[str, Any]  # what train/summary.json holds


def preflight(params: Params, project: Path, *, local: bool) -> dict[str, Any]:
    """Every check that can fail, before Ray starts; returns the dataset info."""
    cfg = params.train
    if local:
        cpus = os.cpu_count() or 1
        if cfg.num_workers * cfg.cpus_per_worker > cpus:
            raise GanlibError(
                f"train.num_workers: {cfg.num_workers} workers x {cfg.cpus_per_worker} CPU "
                f"need {cfg.num_workers * cfg.cpus_per_worker} CPUs, this machine has {cpus}; "
                "lower train.num_workers"
            )
    shards = project / SHARDS
    if not (shards / "manifest.parquet").is_file():
        raise GanlibError(f"{shards}: missing shards; run `dvc repro shard` first")
    info = dataset_info(shards)
    check_task(params, info)
    global_batch = cfg.batch_size * cfg.num_workers
    if info["train_samples"] < global_batch:
        raise GanlibError(
            f"train.batch_size: {cfg.num_workers} workers x {cfg.batch_size} = {global_batch} "
            f"exceeds the {info['train_samples']} train samples; lower train.batch_size"
        )
    if cfg.device == "cuda" and local and not torch.cuda.is_available():
        raise GanlibError("train.device: cuda, but this machine has no CUDA GPU; use auto")
    return info


def check_task(params: Params, info: dict[str, Any]) -> None:
    """The task, its model and the shards fit together (one-line errors)."""
    cfg, task = params.train, params.task
    if task == "generation":
        supported = SUPPORTED_RESOLUTIONS[cfg.arch]
        if info["resolution"] not in supported:
            raise GanlibError(
                f"data.resolution: {info['resolution']} is not supported by train.arch "
                f"{cfg.arch} (supported: {', '.join(map(str, supported))})"
            )
        if cfg.conditional and not info["classes"]:
            raise GanlibError("train.conditional: true needs labelled data; the shards have none")
        if info["fields"] != ["png"]:
            raise GanlibError(
                "task: generation needs single-image shards; these hold (A, B) pairs "
                "for translation: set task: translation or re-shard another data.source"
            )
        return
    for key in ("augment", "r1_gamma", "gp_weight", "conditional"):
        default = getattr(type(cfg)(), key)
        if getattr(cfg, key) != default:
            raise GanlibError(f"train.{key}: applies to task: generation only; remove it")
    if cfg.d_steps != 1:
        raise GanlibError("train.d_steps: image-to-image tasks take one D step per G step; set 1")
    if info["resolution"] < 24:
        raise GanlibError(
            f"data.resolution: {info['resolution']} is too small for the PatchGAN "
            "discriminator of image-to-image tasks; use at least 24 (64 recommended)"
        )
    if task == "inpainting" and info["fields"] != ["png"]:
        raise GanlibError(
            "task: inpainting needs single-image shards; these hold (A, B) pairs: "
            "set data.source to a folder or table of single images"
        )
    if task == "translation" and info["fields"] != ["a.png", "b.png"]:
        raise GanlibError(
            "task: translation needs (A, B) shards: use builtin:photos2art, imagefolder:PATH "
            "with data.paired or data.unpaired (PATH/A, PATH/B), or parquet with "
            "data.image_column_b; then run `dvc repro shard`"
        )


def data_fingerprint(shards: Path) -> str:
    """The manifest's hash: it lists every sample's key, split and sha256."""
    return hashlib.sha256((shards / "manifest.parquet").read_bytes()).hexdigest()


def train_run(
    params: Params,
    project: Path,
    *,
    probe_dir: Path | None = None,
    fail_at_step: int | None = None,
) -> TrainResult:
    """Train with Ray Train as ``params`` say, logging to MLflow; resumes an interrupted run.
    With ``probe_dir`` (the featurize stage's extractor), checkpoints also report an FID."""
    import ray

    project = project.resolve()
    joining = ray.is_initialized() or bool(os.environ.get("RAY_ADDRESS"))
    info = preflight(params, project, local=not joining)
    cfg = params.train
    shards = project / SHARDS
    task_identity = (
        {"task": params.task, **params.task_config()} if params.task != "generation" else None
    )
    identity = run_identity(cfg, params.seed, data_fingerprint(shards), task_identity)
    name = f"train-{identity[:12]}"
    storage = project / RUNS

    mlflow = tracking.client(params.mlflow, project)
    exp = tracking.experiment_id(mlflow, params.mlflow.experiment, project)
    run_id = tracking.start_run(
        mlflow,
        exp,
        run_name=name,
        params=flatten(
            {
                "task": params.task,
                "seed": params.seed,
                "data": to_dict(params.data),
                "train": to_dict(cfg),
            }
        ),  # fmt: skip
        tags={"ganlib.stage": "train", "ganlib.identity": identity},
        resume_file=storage / name / "mlflow_run_id",
    )
    spec = RunSpec(
        train=cfg,
        seed=params.seed,
        task=params.task,
        task_cfg=getattr(params, params.task) if params.task != "generation" else None,
        shards=str(shards),
        identity=identity,
        mlflow_uri=tracking.resolve_uri(params.mlflow.tracking_uri, project),
        mlflow_run_id=run_id,
        probe_dir=str(probe_dir.resolve()) if probe_dir is not None else None,
        fail_at_step=fail_at_step,
        fail_marker=str(storage / name / "injected_failure") if fail_at_step else None,
    )
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network here, no prompt
        # The dashboard is needed: Ray Train's placement-group cleaner asks its state API.
        ray.init(logging_level="WARNING")
    t0 = time.perf_counter()
    try:
        state, last = fit(spec, storage=storage, name=name)
    except GanlibError:
        mlflow.set_terminated(run_id, status="FAILED")
        raise
    wall = time.perf_counter() - t0
    summary = summarize(state, wall, run_id, info)
    metric = PROBE_METRICS[params.task]
    if metric in last:  # in-training, on few images; eval/ has the real numbers
        summary[f"{metric}_probe"] = round(float(last[metric]), 4)
    numbers = {f"summary/{k}": v for k, v in summary.items() if isinstance(v, (int, float))}
    tracking.log_metrics(mlflow, run_id, numbers, state["step"])
    mlflow.set_terminated(run_id)
    return TrainResult(state=state, summary=summary)


def summarize(state: dict[str, Any], wall_s: float, run_id: str, info: dict) -> dict[str, Any]:
    """The numbers of ``train/summary.json``."""
    last = state["history"][-1] if state["history"] else {}
    return {
        "steps": state["step"],
        "images_seen": state["images_seen"],
        "epochs": state["epoch"],
        "train_wall_s": round(state["wall_s"], 2),
        "stage_wall_s": round(wall_s, 2),
        "images_per_s": round(state["images_seen"] / max(state["wall_s"], 1e-9), 1),
        "loss_D": last.get("loss_D"),
        "loss_G": last.get("loss_G"),
        "D_real": last.get("D_real"),
        "D_fake": last.get("D_fake"),
        "train_samples": info["train_samples"],
        "mlflow_run_id": run_id,
        "identity": state["identity"],
    }


def write_history(history: list[dict[str, Any]], path: Path) -> None:
    """``train/history.csv``: one row per ``log_every`` steps (DVC plots)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = history_columns(history)
    lines = [",".join(columns)]
    for row in history:
        cells = ["" if row.get(c) is None else f"{row[c]:.6g}" for c in columns]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")


def write_samples(state: dict[str, Any], path: Path) -> Path:
    """``train/samples.png``: G_ema on the run's fixed grid inputs (noise, or input images
    shown next to their outputs)."""
    G = generator_from_checkpoint(state)
    task = state.get("task", "generation")
    y = grid_labels(state["model_config"].get("num_classes", 0))
    scale = max(1, 128 // state.get("resolution", state["model_config"].get("resolution", 64)))
    return save_grid(grid_images(task, G, state["grid_inputs"], y), path, scale=scale)
