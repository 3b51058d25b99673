"""DVC stage ``featurize``: the feature extractor behind every metric, and the reference.

Outs: ``featurize/extractor/`` (``extractor.pt`` weights, ``extractor.json`` kind, rebuild
config and weights hash, ``reference.npz`` features of the real train split) and
``featurize/report.json`` (metrics: the kind, and for the classifier its val accuracy).
Reads ``seed``, ``featurize`` and ``storage.root`` from ``params.yaml``: the shards are read
where the train and tune stages read them (:func:`ganlib.data.publish.shard_location`), the
published set that ``data/published.json`` names when ``storage.root`` is set, else
``data/shards``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ganlib.data.publish import shard_location
from ganlib.data.shards import dataset_info
from ganlib.errors import GanlibError
from ganlib.featurize import featurize
from pipeline import _stage
from pipeline._stage import FEATURIZE, SHARDS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.featurize", description=__doc__)
    parser.parse_args(argv)  # no options: --help, and refuse unknown ones
    params = _stage.params()
    cfg = params.featurize
    if cfg.inception_weights and not Path(cfg.inception_weights).is_file():
        raise GanlibError(
            f"featurize.inception_weights: {cfg.inception_weights} does not exist; give the "
            "path of pt_inception-2015-12-05-6726825d.pth (it is never downloaded)"
        )
    shards = shard_location(Path("."), params.storage.root, SHARDS)
    dataset_info(shards, params.data)  # shards of other data params: say so first
    report = featurize(cfg, shards, FEATURIZE, seed=params.seed)
    Path("featurize/report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    acc = report.get("val_accuracy")
    accuracy = f", val accuracy {acc:.3f}" if isinstance(acc, float) else ""
    print(f"featurize: {report['kind']} extractor{accuracy}, {report['reference_samples']} real")


if __name__ == "__main__":
    _stage.run(main)
