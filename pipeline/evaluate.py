"""DVC stage ``evaluate``: the generator measured under a protocol card, next to its floor.

Outs: ``eval/metrics.json`` (DVC metrics: FID, KID, precision/recall, density/coverage, and
for labelled data the classifier score and class coverage; ``floor`` the same numbers for
real val images; ``protocol`` the card), ``eval/samples.png`` and ``eval/sheets/`` (a
per-class sheet for labelled data, nearest real neighbours). The numbers are also logged to
the train stage's MLflow run as ``eval/<metric>``. Reads ``seed``, ``eval`` and ``mlflow``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ganlib import tracking
from ganlib.evaluation import evaluate_generator
from pipeline import _stage
from pipeline._stage import FEATURIZE, GENERATOR, SHARDS, TRAIN_SUMMARY

OUT = Path("eval")


def main() -> None:
    params = _stage.params()
    run_id = json.loads(TRAIN_SUMMARY.read_text())["mlflow_run_id"]
    mlflow = tracking.client(params.mlflow, Path.cwd())  # unreachable: fail before measuring
    metrics = evaluate_generator(
        GENERATOR, SHARDS, FEATURIZE, params.eval, seed=params.seed, out=OUT
    )
    text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    (OUT / "metrics.json").write_text(text)
    numbers = {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, float)}
    numbers |= {f"eval/floor/{k}": v for k, v in metrics["floor"].items()}
    tracking.log_metrics(mlflow, run_id, numbers, int(metrics["generator_step"] or 0))
    mlflow.log_artifact(run_id, str(OUT / "metrics.json"), artifact_path="eval")
    mlflow.log_artifact(run_id, str(OUT / "samples.png"), artifact_path="eval")
    mlflow.set_tag(run_id, "protocol_hash", metrics["protocol_hash"])
    floor = metrics["floor"]["fid"]
    print(
        f"evaluate: FID {metrics['fid']:.3f} (floor {floor:.3f}), KID {metrics['kid_mean']:.4f}, "
        f"{metrics['protocol']['num_fake']} images, protocol {metrics['protocol_hash']}"
    )


if __name__ == "__main__":
    _stage.run(main)
