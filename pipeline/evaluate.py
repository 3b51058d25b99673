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
section and ``mlflow``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ganlib import tracking
from ganlib.config import Params, flatten
from ganlib.evaluation import evaluate_generator
from pipeline import _stage
from pipeline._stage import FEATURIZE, GENERATOR, SHARDS, TRAIN_SUMMARY

OUT = Path("eval")


def main() -> None:
    params = _stage.params()
    run_id = json.loads(TRAIN_SUMMARY.read_text())["mlflow_run_id"]
    mlflow = tracking.client(params.mlflow, Path.cwd())  # unreachable: fail before measuring
    metrics = measure(params)
    text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    (OUT / "metrics.json").write_text(text)
    numbers = {
        f"eval/{k}": v
        for k, v in flatten(metrics).items()
        if isinstance(v, float) and not k.startswith("protocol")
    }
    tracking.log_metrics(mlflow, run_id, numbers, int(metrics["generator_step"] or 0))
    mlflow.log_artifact(run_id, str(OUT / "metrics.json"), artifact_path="eval")
    mlflow.log_artifact(run_id, str(OUT / "samples.png"), artifact_path="eval")
    mlflow.log_artifacts(run_id, str(OUT / "sheets"), artifact_path="eval/sheets")
    mlflow.set_tag(run_id, "protocol_hash", metrics["protocol_hash"])
    print(f"evaluate: {headline(params.task, metrics)}, protocol {metrics['protocol_hash']}")


def measure(params: Params) -> dict[str, Any]:
    """The task's evaluation of ``models/generator``; writes samples and sheets under eval/."""
    args = (GENERATOR, SHARDS, FEATURIZE)
    if params.task == "inpainting":
        from ganlib.evaluation.inpainting import evaluate_inpainter

        return evaluate_inpainter(*args, params.inpainting, params.eval, seed=params.seed, out=OUT)
    if params.task == "translation":
        from ganlib.evaluation.translation import evaluate_translator

        return evaluate_translator(
            *args, params.translation, params.eval, seed=params.seed, out=OUT
        )
    return evaluate_generator(*args, params.eval, seed=params.seed, out=OUT)


def headline(task: str, m: dict[str, Any]) -> str:
    """The evaluation in one line."""
    if task == "inpainting":
        return f"hole L1 {m['l1_hole']:.4f}, PSNR {m['psnr']:.2f} dB, FID {m['fid']:.3f}"
    if task == "translation":
        return (
            f"FID {m['fid']:.3f} (identity {m['identity_fid']:.3f}), PSNR {m['psnr']:.2f} dB "
            f"(identity {m['identity_psnr']:.2f})"
        )
    return (
        f"FID {m['fid']:.3f} (floor {m['floor']['fid']:.3f}), KID {m['kid_mean']:.4f}, "
        f"{m['protocol']['num_fake']} images"
    )


if __name__ == "__main__":
    _stage.run(main)
