"""DVC stage ``tune``: a Ray Tune sweep over ``tune.space``, ASHA on an in-training FID.

Outs: ``tune/best.yaml`` (the best trial's train values, which the train stage uses when
``tune.enabled`` is true) and ``tune/trials.parquet`` (one row per trial). With
``tune.enabled: false`` both are written empty and nothing runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ganlib.config import load_params
from ganlib.data.publish import shard_location
from ganlib.tasks import get_task
from ganlib.training.run import preflight
from ganlib.tuning import sweep, write_best, write_trials
from pipeline import _stage
from pipeline._stage import FEATURIZE, SHARDS, TUNE_BEST


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tune", description=__doc__)
    parser.add_argument("--project", default=".", help="project dir holding params.yaml")
    project = Path(parser.parse_args(argv).project).resolve()
    params = load_params(project / _stage.PARAMS_FILE)
    out = project / "tune"
    if not params.tune.enabled:
        write_best({"enabled": False, "train": {}}, project / TUNE_BEST)
        write_trials([], out / "trials.parquet", get_task(params.task).probe_metric)
        print("tune: disabled (tune.enabled: false); train uses train: as written")
        return
    shards = shard_location(project, params.storage.root, SHARDS)
    preflight(params, project, local=False, shards=shards)  # resolution, labels, batch size
    result = sweep(params, project, shards=shards, featurize=project / FEATURIZE)
    write_trials(result["trials"], out / "trials.parquet", result["best"]["metric"])
    write_best({"enabled": True, **result["best"]}, project / TUNE_BEST)
    best = result["best"]
    metric = best["metric"]
    print(
        f"tune: {len(result['trials'])} trials, best {metric} {best[metric]:.4g}: {best['train']}"
    )


if __name__ == "__main__":
    _stage.run(main)
