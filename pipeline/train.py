"""DVC stage ``train``: shards -> a trained generator, under Ray Train DDP.

Outs: ``models/generator/`` (weights + rebuild config), ``train/summary.json`` (metrics),
``train/history.csv`` (plots), ``train/samples.png``. Reads ``seed``, ``train``, ``tune.enabled``
and ``mlflow`` from ``params.yaml``; with tuning on, the values in ``tune/best.yaml`` replace
those of ``train:``. Logs the in-training FID of the featurize stage's extractor at every
checkpoint. On a cluster::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m pipeline.train --project /shared/path/to/this/project
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ganlib.artifacts import export_generator
from ganlib.config import load_params
from ganlib.data.shards import dataset_info
from ganlib.training.run import train_run, write_history, write_samples
from ganlib.tuning import apply_best
from pipeline import _stage
from pipeline._stage import FEATURIZE, SHARDS, TUNE_BEST


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__)
    parser.add_argument(
        "--project",
        default=".",
        help="project dir holding params.yaml and data/shards; outputs are written there too",
    )
    project = Path(parser.parse_args(argv).project).resolve()
    params = load_params(project / _stage.PARAMS_FILE)
    # no shards, or shards of other data params: say so before asking for the sweep's result
    dataset_info(project / SHARDS, params.data)
    params = apply_best(params, project / TUNE_BEST)
    probe = project / FEATURIZE
    result = train_run(params, project, probe_dir=probe if probe.is_dir() else None)
    export_generator(result.state, project / "models" / "generator")
    write_history(result.state["history"], project / "train" / "history.csv")
    write_samples(result.state, project / "train" / "samples.png")
    summary = json.dumps(result.summary, indent=2, sort_keys=True)
    (project / "train" / "summary.json").write_text(summary + "\n")
    print(f"train: {result.summary['steps']} steps, {result.summary['images_per_s']} images/s")


if __name__ == "__main__":
    _stage.run(main)
