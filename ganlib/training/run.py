"""The train stage's driver: check everything, start (or join) Ray, train, hand back the result.

``train_run`` is what ``python -m pipeline.train`` calls, under ``dvc repro`` on one machine
and under ``ray job submit`` on a cluster alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ganlib import storage, tracking
from ganlib.artifacts import export_generator, generator_from_checkpoint
from ganlib.config import Params, flatten, to_dict
from ganlib.data.shards import MANIFEST, dataset_info
from ganlib.errors import GanlibError, Interrupted
from ganlib.grid import save_grid
from ganlib.tasks import get_task
from ganlib.training.distributed import fit
from ganlib.training.loop import RunSpec, history_columns

SHARDS = Path("data/shards")
# The train stage's outs, relative to the project (and to a run's outputs/ directory)
GENERATOR = Path("models/generator")
TRAIN_OUTS = Path("train")


@dataclass(frozen=True)
class TrainResult:
    state: dict[str, Any]  # the final checkpoint
    summary: dict[str, Any]  # what train/summary.json holds
    run_dir: str = ""  # the run's Ray storage (a path or a URL); outputs/ under it


def preflight(
    params: Params, project: Path, *, local: bool, shards: str | None = None
) -> dict[str, Any]:
    """Every check that can fail, before Ray starts; returns the dataset info. ``shards`` is
    the shard root to train on (a path or a URL), ``project/data/shards`` by default."""
    cfg = params.train
    if params.storage.root:
        storage.check_root(params.storage.root)
    if local:
        cpus = os.cpu_count() or 1
        if cfg.num_workers * cfg.cpus_per_worker > cpus:
            raise GanlibError(
                f"train.num_workers: {cfg.num_workers} workers x {cfg.cpus_per_worker} CPU "
                f"need {cfg.num_workers * cfg.cpus_per_worker} CPUs, this machine has {cpus}; "
                "lower train.num_workers"
            )
    shards = shards or str(project / SHARDS)
    if storage.file_type(storage.join(shards, MANIFEST)).name != "File":
        raise GanlibError(f"{shards}: missing shards; run `dvc repro shard` first")
    info = dataset_info(shards, params.data)  # shards of these data params
    task = get_task(params.task)
    task.check(cfg, task.config(params), info)
    global_batch = cfg.batch_size * cfg.num_workers
    if info["train_samples"] < global_batch:
        raise GanlibError(
            f"train.batch_size: {cfg.num_workers} workers x {cfg.batch_size} = {global_batch} "
            f"exceeds the {info['train_samples']} train samples; lower train.batch_size"
        )
    if cfg.device == "cuda" and local and not torch.cuda.is_available():
        raise GanlibError("train.device: cuda, but this machine has no CUDA GPU; use auto")
    return info


def data_fingerprint(shards: str | Path) -> str:
    """The manifest's hash: it lists every sample's key, split and sha256 (the same for a
    local shard root and its published copy)."""
    return storage.sha256_of(storage.join(shards, MANIFEST))


def run_identity(params: Params, data_fingerprint: str) -> str:
    """A hash of everything that defines a training run; checkpoints resume only within one.

    The train settings and the task's section, without what only says how long, how often or
    how it is run, or what is evaluated (:meth:`ganlib.config.Params.training_identity`), the
    seed and the data. Generation runs keep the hash they had before tasks existed.
    """
    what = params.training_identity()
    blob = {"train": what["train"], "seed": params.seed, "data": data_fingerprint}
    if what["task"]:
        blob["task"] = what["task"]
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def train_run(
    params: Params,
    project: Path,
    *,
    shards: str | None = None,
    probe_dir: Path | None = None,
    fail_at_step: int | None = None,
) -> TrainResult:
    """Train with Ray Train as ``params`` say, logging to MLflow; resumes an interrupted run.
    ``shards`` is the shard root (a path or a URL; ``project/data/shards`` by default). With
    ``probe_dir`` (the featurize stage's extractor), checkpoints also report an FID. Ray's
    storage is ``{storage.root}/runs`` (``project/runs`` without a root)."""
    import ray

    project = project.resolve()
    joining = ray.is_initialized() or bool(os.environ.get("RAY_ADDRESS"))
    shards = shards or str(project / SHARDS)
    info = preflight(params, project, local=not joining, shards=shards)
    cfg, task = params.train, get_task(params.task)
    identity = run_identity(params, data_fingerprint(shards))
    name = f"train-{identity[:12]}"
    runs = storage.runs_location(params.storage.root, project)
    run_dir = storage.join(runs, name)
    if probe_dir is not None and storage.is_url(runs):  # ranks on other nodes read it there
        staged = storage.join(run_dir, "extractor")
        storage.copy_tree(probe_dir, staged)
        probe_dir = staged

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
        resume_file=storage.join(run_dir, "mlflow_run_id"),
    )
    spec = RunSpec(
        train=cfg,
        seed=params.seed,
        task=params.task,
        task_cfg=task.config(params),
        shards=shards if storage.is_url(shards) else str(Path(shards).resolve()),
        identity=identity,
        mlflow_uri=tracking.resolve_uri(params.mlflow.tracking_uri, project),
        mlflow_run_id=run_id,
        probe_dir=_absolute(probe_dir) if probe_dir is not None else None,
        fail_at_step=fail_at_step,
        fail_marker=str(project / "runs" / name / "injected_failure") if fail_at_step else None,
        cache_dir=params.storage.cache_dir or None,
    )
    t0 = time.perf_counter()
    try:  # from here on, the MLflow run ends FAILED or KILLED if the stage does not finish
        if not ray.is_initialized():
            start_ray()
        state, last = fit(spec, storage=runs, name=name)
    except (Interrupted, KeyboardInterrupt):
        mlflow.set_terminated(run_id, status="KILLED")
        raise
    except GanlibError:
        mlflow.set_terminated(run_id, status="FAILED")
        raise
    wall = time.perf_counter() - t0
    summary = summarize(state, wall, run_id, info)
    metric = task.probe_metric
    if metric in last:  # in-training, on few images; eval/ has the real numbers
        summary[f"{metric}_probe"] = round(float(last[metric]), 4)
    numbers = {f"summary/{k}": v for k, v in summary.items() if isinstance(v, (int, float))}
    tracking.log_metrics(mlflow, run_id, numbers, state["step"])
    for key, value in summary["runtime"].items():  # what ran, as tags (a resume may differ)
        text = value if isinstance(value, str) else json.dumps(value)
        mlflow.set_tag(run_id, f"ganlib.runtime.{key}", text)
    mlflow.set_terminated(run_id)
    return TrainResult(state=state, summary=summary, run_dir=run_dir)


def _absolute(location: str | Path) -> str:
    return str(location) if storage.is_url(location) else str(Path(location).resolve())


def save_outputs(result: TrainResult, params: Params, project: Path) -> str:
    """Write the train stage's outs into ``project`` (``models/generator/``, ``train/history.csv``,
    ``train/samples.png``, ``train/summary.json``), log them to the run's MLflow run
    (``generator/``, ``train/``), and with a ``storage.root`` copy them to the run's storage,
    ``{run}/outputs/``, where any machine finds them. Returns where the outputs are."""
    project = Path(project)
    export_generator(result.state, project / GENERATOR)
    write_history(result.state["history"], project / TRAIN_OUTS / "history.csv")
    write_samples(result.state, project / TRAIN_OUTS / "samples.png")
    summary = json.dumps(result.summary, indent=2, sort_keys=True)
    (project / TRAIN_OUTS / "summary.json").write_text(summary + "\n")
    run_id = result.summary["mlflow_run_id"]
    mlflow = tracking.client(params.mlflow, project)
    mlflow.log_artifacts(run_id, str(project / GENERATOR), artifact_path="generator")
    for name in ("history.csv", "samples.png", "summary.json"):
        mlflow.log_artifact(run_id, str(project / TRAIN_OUTS / name), artifact_path="train")
    if not params.storage.root:
        return str(project)
    outputs = storage.join(result.run_dir, "outputs")
    storage.copy_tree(project / GENERATOR, storage.join(outputs, GENERATOR.as_posix()))
    storage.copy_tree(project / TRAIN_OUTS, storage.join(outputs, TRAIN_OUTS.as_posix()))
    return outputs


def start_ray() -> None:
    """``ray.init``: the cluster of ``RAY_ADDRESS`` when set, else a one-machine cluster for
    this process."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network here, no prompt
    # Ray Train's controller polls its workers every 2 s by default: each run then waits
    # up to 2 s to see the workers finish, and a crash soon after a report can miss its
    # checkpoint. A poll is one cheap RPC; 0.25 s cut a small run's end from 5 s to 1 s.
    # Read by the local cluster ray.init starts here (a joined cluster keeps its own).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    # The dashboard is needed: Ray Train's placement-group cleaner asks its state API.
    # Not a bare ray.init(): that joins the latest `ray start` cluster of this machine, which
    # preflight did not check; joining one is RAY_ADDRESS's job (ray job submit sets it).
    address = os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, logging_level="WARNING")


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
        # device, DDP backend, precision, channels_last, compile, ... as they ran, with any
        # fallback lines (ganlib.training.fastpath); older checkpoints did not record it
        "runtime": state.get("runtime", {}),
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
    images = get_task(state["task"]).grid_images(G, state["grid_inputs"])
    return save_grid(images, path, scale=max(1, 128 // state["resolution"]))
