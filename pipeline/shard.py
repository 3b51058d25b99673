"""DVC stage ``shard``: ``data.source`` -> ``data/shards/{train,val}/*.tar``, manifest, stats.

Outs: ``data/shards/train``, ``data/shards/val``, ``data/shards/manifest.parquet`` and the
metrics file ``data/shards/stats.json``. Reads the ``data`` section of ``params.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ganlib.data.shards import MIN_TRAIN_SAMPLES, write_shards
from ganlib.data.sources import open_source
from pipeline import _stage

OUT = Path("data/shards")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.shard", description=__doc__)
    parser.parse_args(argv)  # no options: --help, and refuse unknown ones
    cfg = _stage.params().data
    source = open_source(cfg)
    stats = write_shards(
        source,
        OUT,
        shard_size=cfg.shard_size,
        val_fraction=cfg.val_fraction,
        classes=source.classes,
        total=source.total,
        progress=sys.stderr.isatty(),
        source=cfg.source,
        min_train=MIN_TRAIN_SAMPLES,
    )
    print(
        f"shard: {stats['train']} train + {stats['val']} val samples from {cfg.source} "
        f"in {stats['shards']['train']} + {stats['shards']['val']} shards; "
        f"{stats['skipped']} inputs skipped (see {OUT / 'stats.json'})"
    )


if __name__ == "__main__":
    _stage.run(main)
