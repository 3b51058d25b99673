"""DVC stage ``shard``: ``data.source`` -> ``data/shards/{train,val}/*.tar``, manifest, stats.

Outs: ``data/shards/train``, ``data/shards/val``, ``data/shards/manifest.parquet`` and the
metrics file ``data/shards/stats.json``. Reads the ``data`` section of ``params.yaml``.
``--workers N`` (default: the CPUs this process may use) decodes and encodes in an ordered
process pool; the shards are byte-identical for every N, so it is not a param.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ganlib.data.shards import MIN_TRAIN_SAMPLES, write_shards
from ganlib.data.sources import open_source
from pipeline import _stage

OUT = Path("data/shards")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.shard", description=__doc__)
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)), help="decoding processes"
    )
    workers = max(1, parser.parse_args(argv).workers)
    cfg = _stage.params().data
    source = open_source(cfg)
    stats = write_shards(
        source.lazy() if workers > 1 else source,
        OUT,
        shard_size=cfg.shard_size,
        val_fraction=cfg.val_fraction,
        classes=source.classes,
        total=source.total,
        progress=sys.stderr.isatty(),
        source=cfg.source,
        min_train=MIN_TRAIN_SAMPLES,
        workers=workers,
    )
    print(
        f"shard: {stats['train']} train + {stats['val']} val samples from {cfg.source} "
        f"in {stats['shards']['train']} + {stats['shards']['val']} shards; "
        f"{stats['skipped']} inputs skipped (see {OUT / 'stats.json'})"
    )


if __name__ == "__main__":
    _stage.run(main)
