"""DVC stage ``register``: publish the generator to the MLflow Model Registry.

Logs ``models/generator`` as a pyfunc model in the train stage's MLflow run, registers it as
a new version of ``register.model_name``, tags the version with its task, metrics, protocol
card, git commit and data hash, describes it (and the registered model) for the MLflow UI, and
moves the alias ``champion`` to it only if it beats the current champion's promotion metric
(the task's: FID; hole L1 for inpainting) under the same protocol card (else it gets
``challenger``). Out: ``register/model.json``. Reads ``task``, ``data``, ``register`` and
``mlflow``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import subprocess
from pathlib import Path

from ganlib import tracking
from ganlib.registry import model_description, register_generator, version_description
from pipeline import _stage
from pipeline._stage import GENERATOR, SHARDS, TRAIN_SUMMARY

EVAL_METRICS = Path("eval/metrics.json")
OUT = Path("register/model.json")


def git_commit() -> str:
    """The project's HEAD commit (with ``-dirty`` for uncommitted changes), or ``unknown``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.register", description=__doc__)
    parser.parse_args(argv)  # no options: --help, and refuse unknown ones
    params = _stage.params()
    name = params.register.model_name
    metrics = json.loads(EVAL_METRICS.read_text())
    run_id = json.loads(TRAIN_SUMMARY.read_text())["mlflow_run_id"]
    mlflow = tracking.client(params.mlflow, Path.cwd(), existing=True)
    tracking.require_run(mlflow, run_id, str(TRAIN_SUMMARY))
    promotion = metrics["promotion"]
    metric = promotion["metric"]
    numbers = {f"metric.{k}": v for k, v in metrics.items() if isinstance(v, float) and k != metric}
    if "floor" in metrics:
        numbers["metric.floor_fid"] = metrics["floor"]["fid"]
    manifest = (SHARDS / "manifest.parquet").read_bytes()
    stats = json.loads((SHARDS / "stats.json").read_text())
    data = {"source": params.data.source} | {
        k: stats[k] for k in ("train", "val", "resolution", "channels")
    }  # what was sharded
    describe = functools.partial(
        version_description, task_name=params.task, model_name=name, metrics=metrics,
        data=data, run_id=run_id,
    )  # fmt: skip
    record = register_generator(
        mlflow,
        run_id,
        GENERATOR,
        model_name=name,
        score=promotion["value"],
        metric=metric,
        protocol_hash=metrics["protocol_hash"],
        tags={
            **numbers,
            "task": params.task,
            "protocol_card": metrics["protocol"],
            "git_commit": git_commit(),
            "data_hash": hashlib.sha256(manifest).hexdigest(),
        },
        describe=describe,
        model_description=model_description(name, params.task, params.data.source),
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"register: {name} v{record['version']} is {record['alias']}: {record['reason']}")


if __name__ == "__main__":
    _stage.run(main)
