"""Benchmark: decoded images/s of ShardLoader next to a plain DataLoader over PNG files.

    python benchmarks/loader.py [--n 20000] [--batch-size 64] [--workdir DIR]

Same 64×64 RGB images as ``benchmarks/shard.py`` (generated, then sharded, and kept in
``--workdir`` when one is given; shards written before the manifest's byte index are redone).
Each loader runs one epoch with 0 and 2 loader workers, each in a fresh subprocess; prints one
JSON object. ShardLoader reads the train split (about 90% of the images), the file loader all
of them: compare ``images_per_s``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from shard import make_image_folder, shard_folder  # benchmarks/shard.py, next to this file
from torch.utils.data import DataLoader, Dataset


class _PngFiles(Dataset):
    """The usual map-style baseline: one PNG file per item, opened with Pillow."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        with Image.open(self.paths[i]) as img:
            arr = np.asarray(img.convert("RGB"))  # [H, W, 3] uint8
        x = torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1  # [3, H, W]
        return {"image": x, "label": int(self.paths[i].parent.name[1:])}


def _epoch(kind: str, workers: int, images: Path, shards: Path, batch_size: int) -> None:
    """Subprocess entry: one epoch of one loader; prints its figures."""
    from ganlib.data.loader import ShardLoader  # before t0: imports are not loading time

    t0 = time.perf_counter()
    if kind == "shard_loader":
        loader = ShardLoader(
            shards, batch_size=batch_size, rank=0, world_size=1, num_workers=workers, seed=0
        )
        loader.set_epoch(0)
    else:
        loader = DataLoader(
            _PngFiles(sorted(images.rglob("*.png"))),
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            generator=torch.Generator().manual_seed(0),
        )
    count, first = 0, None
    for batch in loader:
        count += len(batch["image"])  # [B, 3, 64, 64]
        if first is None:
            first = time.perf_counter() - t0
    wall = time.perf_counter() - t0
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    worker_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "images": count,
                "wall_s": round(wall, 2),
                "images_per_s": round(count / wall, 1),
                "first_batch_s": round(first, 2),
                "peak_rss_mib": round(self_kib / 1024, 1),
                "worker_peak_rss_mib": round(worker_kib / 1024, 1) if workers else None,
            }
        )
    )


def _has_byte_index(shards: Path) -> bool:
    """Whether ``shards`` holds complete shards with the manifest's byte offsets (reusable)."""
    manifest = shards / "manifest.parquet"
    return manifest.exists() and "offset" in pq.read_schema(manifest).names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workdir", type=Path, help="keep the generated images and shards here")
    parser.add_argument("--epoch", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epoch:
        kind, workers, images, shards, batch_size = args.epoch
        _epoch(kind, int(workers), Path(images), Path(shards), int(batch_size))
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        images, shards = work / f"images-{args.n}", work / f"shards-{args.n}"
        make_image_folder(images, args.n)
        if not _has_byte_index(shards):
            shard_folder(images, shards)
        results: dict = {"images": args.n, "batch_size": args.batch_size}
        for kind in ("shard_loader", "png_files"):
            for workers in (0, 2):
                cmd = [sys.executable, __file__, "--epoch", kind, str(workers)]
                cmd += [str(images), str(shards), str(args.batch_size)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                results.setdefault(kind, {})[f"workers_{workers}"] = json.loads(out)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
