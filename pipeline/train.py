"""DVC stage ``train``: shards -> a trained generator, under Ray Train DDP.

Outs: ``models/generator/`` (weights + rebuild config), ``train/summary.json`` (metrics),
``train/history.csv`` (plots), ``train/samples.png``; also logged to the MLflow run and, with a
``storage.root``, copied to ``{root}/runs/<run>/outputs/``. Reads ``seed``, ``train``,
``tune.enabled``, ``mlflow`` and ``storage`` from ``params.yaml``; with tuning on, the values in
``tune/best.yaml`` replace those of ``train:``. With ``storage.root`` the shards are read from
where ``data/published.json`` says (the publish stage) and checkpoints go to ``{root}/runs``.
Logs the in-training FID of the featurize stage's extractor at every checkpoint. On a cluster::

    ray job submit --address http://HEAD:8265 --working-dir . -- python -m pipeline.train
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ganlib.config import load_params
from ganlib.data.publish import shard_location
from ganlib.data.shards import dataset_info
from ganlib.training.run import save_outputs, train_run
from ganlib.tuning import apply_best
from pipeline import _stage
from pipeline._stage import FEATURIZE, SHARDS, TUNE_BEST


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__)
    parser.add_argument(
        "--project",
        default=".",
        help="project dir holding params.yaml (and data/shards without a storage.root); "
        "outputs are written there too",
    )
    project = Path(parser.parse_args(argv).project).resolve()
    params = load_params(project / _stage.PARAMS_FILE)
    shards = shard_location(project, params.storage.root, SHARDS)
    # no shards, or shards of other data params: say so before asking for the sweep's result
    dataset_info(shards, params.data)
    params = apply_best(params, project / TUNE_BEST)
    probe = project / FEATURIZE
    result = train_run(params, project, shards=shards, probe_dir=probe if probe.is_dir() else None)
    where = save_outputs(result, params, project)
    print(
        f"train: {result.summary['steps']} steps, {result.summary['images_per_s']} images/s; "
        f"outputs in {where}"
    )


if __name__ == "__main__":
    _stage.run(main)
