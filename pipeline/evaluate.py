"""DVC stage ``evaluate``: the generator measured under a protocol card, next to a baseline.

Outs: ``eval/metrics.json`` (DVC metrics), ``eval/samples.png`` and ``eval/sheets/``, by task:

- generation: FID, KID, precision/recall, density/coverage, and for labelled data the
  classifier score and class coverage; ``floor`` the same numbers for real val images; sheets:
  per class for labelled data, nearest real neighbours;
- inpainting: PSNR, SSIM, hole L1 and FID per hole-area bin, for ganlib and the classical
  fills (biharmonic, mean fill) under the same fixed masks; a before/after sheet;
- translation: FID to the target domain, PSNR/SSIM/L1 to the ground truth, cycle error for
  CycleGAN, next to the identity baseline; an input/output/target sheet.

``protocol`` holds the card every number was measured under. The numbers are also logged to the
train stage's MLflow run as ``eval/<metric>``. Reads ``task``, ``seed``, ``eval``, the task's
section, ``mlflow`` and ``storage.root``; the task's record (:data:`ganlib.tasks.TASKS`) does the
measuring. The val shards are read where the train stage read its shards
(:func:`ganlib.data.publish.shard_location`): the published set with a ``storage.root``, else
``data/shards``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import ganlib.evaluation  # noqa: F401  every task's evaluator (Task.evaluate runs one)
from ganlib import tracking
from ganlib.config import flatten
from ganlib.data.publish import shard_location
from ganlib.data.shards import dataset_info
from ganlib.tasks import get_task
from pipeline import _stage
from pipeline._stage import FEATURIZE, GENERATOR, SHARDS, TRAIN_SUMMARY

OUT = Path("eval")
STAGING = Path(".eval.tmp")  # the next outputs, until they are complete


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__)
    parser.parse_args(argv)  # no options: --help, and refuse unknown ones
    params = _stage.params()
    run_id = json.loads(TRAIN_SUMMARY.read_text())["mlflow_run_id"]
    # unreachable, or no store yet: fail before measuring
    mlflow = tracking.client(params.mlflow, Path.cwd(), existing=True)
    tracking.require_run(mlflow, run_id, str(TRAIN_SUMMARY))
    shards = shard_location(Path("."), params.storage.root, SHARDS)
    dataset_info(shards, params.data)  # shards of other data params: say so before measuring
    task = get_task(params.task)
    # Measured into STAGING and logged from there; eval/ is replaced only when all is done, so
    # a failure leaves the previous outputs whole (when they are there: see the README).
    shutil.rmtree(STAGING, ignore_errors=True)
    try:
        metrics = measure_and_log(task, params, shards, mlflow, run_id)
    finally:
        shutil.rmtree(STAGING, ignore_errors=True)  # nothing left half-written
    print(f"evaluate: {task.headline(metrics)}, protocol {metrics['protocol_hash']}")


def measure_and_log(task, params, shards: str, mlflow, run_id: str) -> dict:
    """Measure the shards' val split into STAGING, log the numbers and images to the run, then
    replace eval/."""
    metrics = task.evaluate(GENERATOR, shards, FEATURIZE, params, STAGING)
    text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    (STAGING / "metrics.json").write_text(text)
    numbers = {
        f"eval/{k}": v
        for k, v in flatten(metrics).items()
        if isinstance(v, float) and not k.startswith("protocol")
    }
    tracking.log_metrics(mlflow, run_id, numbers, int(metrics["generator_step"] or 0))
    mlflow.log_artifact(run_id, str(STAGING / "metrics.json"), artifact_path="eval")
    mlflow.log_artifact(run_id, str(STAGING / "samples.png"), artifact_path="eval")
    mlflow.log_artifacts(run_id, str(STAGING / "sheets"), artifact_path="eval/sheets")
    mlflow.set_tag(run_id, "protocol_hash", metrics["protocol_hash"])
    shutil.rmtree(OUT, ignore_errors=True)
    STAGING.rename(OUT)
    return metrics


if __name__ == "__main__":
    _stage.run(main)
