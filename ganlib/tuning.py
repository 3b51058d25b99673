"""The Ray Tune sweep behind the ``tune`` stage, and how its result feeds the ``train`` stage.

Trials are single-process function trainables running the one training loop
(:func:`ganlib.training.loop.train`) through a :class:`TuneSession`: nested ``TorchTrainer``s
under ASHA leak placement groups in Ray 2.60 (FIELD_NOTES). A trial trains with the global
batch of the final DDP run (``train.batch_size x train.num_workers`` in one process), so the
learning rates it finds carry over, and reports the in-training FID of ``G_ema`` every
``tune.report_every`` steps; ASHA stops the unpromising trials at those rungs. Each trial is an
MLflow child run of one sweep run, logged from the driver by Ray's ``MLflowLoggerCallback``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from ganlib import storage, tracking
from ganlib.artifacts import load_extractor
from ganlib.config import TUNABLE, Params, TuneConfig, flatten, to_dict
from ganlib.data.shards import dataset_info
from ganlib.errors import GanlibError
from ganlib.metrics.extractors import check_compatible
from ganlib.tasks import get_task
from ganlib.training.loop import RunSpec, train
from ganlib.training.run import start_ray
from ganlib.training.session import pick_device

DIVERGED_FID = 1e6  # what a trial whose loss went NaN reports, so that ASHA drops it


def search_space(cfg: TuneConfig) -> dict[str, Any]:
    """``tune.space`` from params.yaml as Ray Tune search-space objects."""
    from ray import tune

    kinds = {
        "choice": tune.choice,
        "grid": tune.grid_search,
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
        "randint": lambda v: tune.randint(int(v[0]), int(v[1]) + 1),  # inclusive high
    }
    return {
        key: kinds[kind](values) for key, spec in cfg.space.items() for kind, values in spec.items()
    }


def trial_config(params: Params, overrides: dict[str, Any]) -> Any:
    """The train config of one trial: ``train:`` with the sampled values, in one process."""
    cfg = params.train
    return dataclasses.replace(
        cfg,
        **overrides,
        steps=params.tune.steps,
        batch_size=cfg.batch_size * cfg.num_workers,  # the global batch of the final run
        num_workers=1,
        cpus_per_worker=1,
        loader_workers=0,
        ckpt_every=params.tune.report_every,
        log_every=params.tune.report_every,
        sample_every=params.tune.steps,
        max_failures=0,
    )


class TuneSession:
    """A Tune trial: one process, metrics to ``ray.tune.report``, no checkpoints (ASHA only
    needs the metrics, and a sweep is cheap to re-run)."""

    rank = 0
    world_size = 1

    def __init__(self, device: str, metric: str):
        self.device = pick_device(device)
        self.metric = metric  # the task probe's name, what ASHA ranks trials by

    def prepare(self, module: torch.nn.Module, *, sync_buffers: bool) -> torch.nn.Module:
        return module.to(self.device)

    def load_latest(self) -> None:
        return None

    def stop_requested(self) -> bool:  # Ray Tune stops trials itself (ASHA, Ctrl-C)
        return False

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        from ray import tune

        out = dict(metrics)
        if out.get("diverged_at") is not None or not math.isfinite(out.get(self.metric, math.nan)):
            out[self.metric] = DIVERGED_FID
        tune.report(out)


def _trial(config: dict[str, Any], *, params: Params, shards: str, probe_dir: str) -> None:
    """One trial; ``shards`` and ``probe_dir`` are absolute paths or URLs (any node)."""
    task = get_task(params.task)
    spec = RunSpec(
        train=trial_config(params, config),
        seed=params.seed,
        shards=shards,
        identity="tune-trial",
        task=params.task,
        task_cfg=task.config(params),
        probe_dir=probe_dir,
        probe_fakes=params.tune.probe_fakes,
        cache_dir=params.storage.cache_dir or None,
    )
    device = params.train.device if params.train.device != "auto" else "cpu"
    train(spec, TuneSession(device, task.probe_metric))


def sweep(params: Params, project: Path, *, shards: str | Path, featurize: Path) -> dict[str, Any]:
    """Run the sweep; returns ``{"best": best.yaml content, "trials": [row, ...]}``. ``shards``
    is the shard root (a path or a URL); Tune's storage is ``{storage.root}/runs/tune``
    (``project/runs/tune`` without a root), where the extractor is staged for the trials."""
    # Logging a result to SQLite takes ~0.5 s; Tune would warn about it at every report.
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")  # read when ray.tune is imported
    import ray
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    cfg = params.tune
    metric = get_task(params.task).probe_metric
    info = dataset_info(shards)
    _, meta = load_extractor(featurize)  # fail here, not in every trial
    check_compatible(meta, channels=info["channels"], resolution=info["resolution"])
    mlflow = tracking.client(params.mlflow, project)
    exp = tracking.experiment_id(mlflow, params.mlflow.experiment, project)
    sweep_run = tracking.start_run(
        mlflow,
        exp,
        run_name="tune",
        params=flatten({"seed": params.seed, "tune": to_dict(cfg), "train": to_dict(params.train)}),
        tags={"ganlib.stage": "tune"},
    )
    runs = storage.runs_location(params.storage.root, project)
    storage.delete_tree(storage.join(runs, "tune"))  # a sweep always starts afresh
    probe_dir = str(Path(featurize).resolve())
    if storage.is_url(runs):  # trials on other nodes read the extractor there
        probe_dir = storage.join(runs, "tune-extractor")
        storage.copy_tree(featurize, probe_dir)
    shards = str(shards) if storage.is_url(shards) else str(Path(shards).resolve())
    if not ray.is_initialized():
        start_ray()
    trainable = tune.with_resources(
        tune.with_parameters(_trial, params=params, shards=shards, probe_dir=probe_dir),
        {"cpu": 1},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(cfg),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode="min",
            num_samples=cfg.num_samples,
            max_concurrent_trials=cfg.max_concurrent,
            scheduler=ASHAScheduler(
                time_attr="step",
                max_t=cfg.steps,
                grace_period=cfg.grace_period,
                reduction_factor=cfg.reduction_factor,
            ),
            search_alg=BasicVariantGenerator(random_state=params.seed),
        ),
        run_config=tune.RunConfig(
            name="tune",
            **storage.ray_storage(runs),
            callbacks=[
                MLflowLoggerCallback(
                    tracking_uri=tracking.resolve_uri(params.mlflow.tracking_uri, project),
                    experiment_name=params.mlflow.experiment,
                    tags={"mlflow.parentRunId": sweep_run, "ganlib.stage": "tune-trial"},
                )
            ],
            verbose=0,
        ),
    )
    results = tuner.fit()
    rows = [_trial_row(r, cfg, metric) for r in results]
    ok = [r for r in rows if r["status"] != "error" and r[metric] < DIVERGED_FID]
    if not ok:
        mlflow.set_terminated(sweep_run, status="FAILED")
        errors = [r for r in results if r.error is not None]
        why = f" (first error: {str(errors[0].error).splitlines()[0]})" if errors else ""
        raise GanlibError(f"tune: every trial failed or diverged{why}; check tune.space")
    best = min(ok, key=lambda r: (r[metric], r["trial_id"]))
    best_yaml = {
        "train": {k: best["config"][k] for k in sorted(cfg.space)},
        "metric": metric,
        metric: best[metric],
        "step": best["step"],
        "trial_id": best["trial_id"],
        "mlflow_run_id": sweep_run,
    }
    tracking.log_metrics(mlflow, sweep_run, {f"best_{metric}": best[metric], "trials": len(rows)})
    mlflow.set_terminated(sweep_run)
    return {"best": best_yaml, "trials": rows}


def _trial_row(result: Any, cfg: TuneConfig, metric: str) -> dict[str, Any]:
    """One row of ``tune/trials.parquet``: the sampled config, how far it got, its probe
    values (``metric``: the task's probe metric)."""
    history = result.metrics_dataframe
    fids = [] if history is None or metric not in history else list(history[metric])
    metrics = result.metrics or {}
    step = int(metrics.get("step", 0))
    if result.error is not None:
        status = "error"
    elif metrics.get("diverged_at") is not None:
        status = "diverged"
    else:
        status = "completed" if step >= cfg.steps else "stopped"
    config = {k: v for k, v in (result.config or {}).items() if k in cfg.space}
    return {
        "trial_id": str(metrics.get("trial_id", "")),
        "status": status,
        "step": step,
        metric: float(metrics.get(metric, math.inf)),
        f"best_{metric}": float(min(fids)) if fids else math.inf,
        "time_s": float(metrics.get("time_total_s", 0.0)),
        "config": config,
    }


def _trial_columns(metric: str):
    import pyarrow as pa

    return {
        "trial_id": pa.string(),
        "status": pa.string(),  # completed | stopped (by ASHA) | diverged | error
        "step": pa.int64(),
        metric: pa.float64(),  # at the trial's last report
        f"best_{metric}": pa.float64(),
        "time_s": pa.float64(),
    }


def write_trials(rows: list[dict[str, Any]], path: Path, metric: str) -> None:
    """``tune/trials.parquet``: one row per trial (``metric``: the task's probe metric, and
    its best value), the sampled values as ``train.<key>``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = sorted({k for r in rows for k in r["config"]})
    spec = _trial_columns(metric)
    columns = {c: pa.array([r[c] for r in rows], type=t) for c, t in spec.items()}
    for k in keys:
        columns[f"train.{k}"] = pa.array([r["config"].get(k) for r in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def write_best(best: dict[str, Any], path: Path) -> None:
    """``tune/best.yaml``: the chosen train values (``train:``), and where they came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(_plain(best), sort_keys=False))


def apply_best(params: Params, path: Path) -> Params:
    """``params`` with ``train:`` overridden by ``tune/best.yaml`` when tuning is enabled."""
    if not params.tune.enabled:
        return params
    if not path.is_file():
        raise GanlibError(f"{path}: missing; run `dvc repro tune` (or set tune.enabled: false)")
    best = yaml.safe_load(path.read_text()) or {}
    overrides = best.get("train") or {}
    unknown = sorted(set(overrides) - set(TUNABLE))
    if unknown:
        raise GanlibError(f"{path}: train.{unknown[0]} is not a tunable key; re-run the tune stage")
    raw = {**to_dict(params.train), **overrides}
    return dataclasses.replace(params, train=Params.from_dict({"train": raw}).train)


def _plain(value: Any) -> Any:
    """Numpy scalars and tuples as plain YAML values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value
