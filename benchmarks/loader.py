"""Benchmark: decoded images/s of ShardLoader next to a plain DataLoader over PNG files.

    python benchmarks/loader.py [--n 20000] [--batch-size 64] [--workdir DIR]
    python benchmarks/loader.py --url s3://BUCKET/PREFIX [--block 16]    # over object storage
    python benchmarks/loader.py --manifest-rows 10000000                 # start-up and memory

With ``--url`` the shards are published there (``ganlib.data.publish``; credentials and endpoint
from the environment, e.g. ``AWS_ENDPOINT_URL`` for a local S3 server) and ShardLoader reads them
by URL (``--block`` = ``train.loader_block``); the figures add the ranged GET's latency and client
CPU. ``--manifest-rows N`` writes a manifest of N samples over sparse shard files and reports
ShardLoader's start-up time and the RSS it adds per rank (no images are decoded).

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


def _epoch(kind: str, workers: int, images: Path, shards: str, batch_size: int, block=1) -> None:
    """Subprocess entry: one epoch of one loader; prints its figures."""
    from ganlib.data.loader import ShardLoader  # before t0: imports are not loading time

    t0 = time.perf_counter()
    if kind == "shard_loader":
        loader = ShardLoader(
            shards, batch_size=batch_size, rank=0, world_size=1, num_workers=workers, seed=0,
            block=block,
        )  # fmt: skip
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


def _get_cost(url: str, n: int = 200) -> dict:
    """p50 wall and client CPU of one ranged read of one sample, ``n`` random samples."""
    from ganlib.data.loader import _read_split, _ShardReader

    data = _read_split(url, "train")
    rows = np.random.default_rng(0).choice(len(data.keys), min(n, len(data.keys)), replace=False)
    walls, cpus = [], []
    with _ShardReader(data) as reader:
        reader.read_many([(int(rows[0]), 0)])  # open the first shard
        for r in rows:
            w, c = time.perf_counter(), time.process_time()
            reader.read_many([(int(r), 0)])
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
    return {"get_p50_ms": round(1000 * float(np.median(walls)), 2),
            "get_cpu_p50_ms": round(1000 * float(np.median(cpus)), 3)}  # fmt: skip


def _startup(rows: int, work: Path) -> None:
    """Subprocess entry: ShardLoader's start-up over a synthetic manifest of ``rows`` samples."""
    import psutil

    from ganlib.data.loader import ShardLoader

    rss0 = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    loader = ShardLoader(work, batch_size=64, rank=0, world_size=8, num_workers=0, seed=0)
    wall = time.perf_counter() - t0
    rss = psutil.Process().memory_info().rss - rss0
    n = len(loader.data.keys)
    figures = {"rows": rows, "train_rows": n, "startup_s": round(wall, 2)}
    print(json.dumps(figures | {"rss_added_mib": round(rss / 2**20, 1)}))


def _synthetic_manifest(rows: int, work: Path) -> None:
    """A manifest of ``rows`` samples in shards of 1,000 (90 % train), over sparse tar files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ganlib.data.shards import MANIFEST, MANIFEST_SCHEMA, STATS

    if (work / MANIFEST).exists():
        return
    per, size = 1000, 12_288  # samples per shard; bytes a sample takes in its tar
    meta = {"classes": json.dumps([str(i) for i in range(10)]), "fields": json.dumps(["png"])}
    with pq.ParquetWriter(work / MANIFEST, MANIFEST_SCHEMA.with_metadata(meta)) as writer:
        for start in range(0, rows, 1_000_000):
            i = np.arange(start, min(rows, start + 1_000_000))
            split = np.where(i % 10 == 9, "val", "train")
            index = i % per
            shard = [f"{s}/{s}-{k:06d}.tar" for s, k in zip(split, i // per, strict=True)]
            cols = {
                "key": [f"img{k:09d}" for k in i], "split": split, "shard": shard,
                "index": index.astype(np.int32), "offset": index * size + 512,
                "length": np.full(len(i), 9000), "offset_b": None, "length_b": None,
                "label": i % 10, "width": np.full(len(i), 64, np.int32),
                "height": np.full(len(i), 64, np.int32), "sha256": None, "sha256_b": None,
                "origin": None,
            }  # fmt: skip
            n = len(i)
            arrays = {k: (pa.nulls(n, MANIFEST_SCHEMA.field(k).type) if v is None else v)
                      for k, v in cols.items()}  # fmt: skip
            writer.write_table(pa.table(arrays, schema=writer.schema))
    for split in ("train", "val"):
        (work / split).mkdir(exist_ok=True)
    for k in range(-(-rows // per)):
        for split in ("train", "val"):
            with open(work / split / f"{split}-{k:06d}.tar", "wb") as f:
                f.truncate(per * size)  # sparse: no disk used
    (work / STATS).write_text(json.dumps({"train": rows, "resolution": 64, "channels": 3}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workdir", type=Path, help="keep the generated images and shards here")
    parser.add_argument("--url", help="publish the shards there and read them by URL")
    parser.add_argument("--block", type=int, default=1, help="train.loader_block for --url")
    parser.add_argument("--manifest-rows", type=int, help="start-up and memory at N samples")
    parser.add_argument("--epoch", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--startup", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epoch:
        kind, workers, images, shards, batch_size, block = args.epoch
        _epoch(kind, int(workers), Path(images), shards, int(batch_size), int(block))
        return
    if args.startup:
        _startup(int(args.startup[0]), Path(args.startup[1]))
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        if args.manifest_rows:
            where = work / f"manifest-{args.manifest_rows}"
            where.mkdir(parents=True, exist_ok=True)
            _synthetic_manifest(args.manifest_rows, where)
            cmd = [sys.executable, __file__, "--startup", str(args.manifest_rows), str(where)]
            print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())
            return
        images, shards = work / f"images-{args.n}", work / f"shards-{args.n}"
        make_image_folder(images, args.n)
        if not _has_byte_index(shards):
            shard_folder(images, shards)
        results: dict = {"images": args.n, "batch_size": args.batch_size}
        location, kinds = str(shards), ("shard_loader", "png_files")
        if args.url:
            from ganlib.data.publish import publish_shards

            location, kinds = publish_shards(shards, args.url)["url"], ("shard_loader",)
            results |= {"url": location, "block": args.block, **_get_cost(location)}
        for kind in kinds:
            for workers in (0, 2):
                cmd = [sys.executable, __file__, "--epoch", kind, str(workers)]
                cmd += [str(images), location, str(args.batch_size), str(args.block)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                results.setdefault(kind, {})[f"workers_{workers}"] = json.loads(out)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
