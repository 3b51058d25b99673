"""Benchmark: shard an image folder of 64×64 RGB PNGs; prints one JSON object.

    python benchmarks/shard.py [--n 100000] [--workdir DIR] [--workers N]

The folder (10 class sub-folders) is generated first, in parallel, and kept in ``--workdir``
when one is given (a later run with the same ``--n`` reuses it). The sharding itself runs in a
fresh subprocess that does nothing else, so ``peak_rss_mib`` is the sharding process's own peak.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = 10
SIDE = 64


def _write_images(args: tuple[Path, range]) -> None:
    root, indices = args
    for i in indices:
        rng = np.random.default_rng(i)
        # Smooth colour fields plus mild noise: compresses like a photo, not like pure noise.
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((SIDE, SIDE), Image.Resampling.BILINEAR), np.int16)
        noisy = smooth + rng.integers(-12, 13, smooth.shape, dtype=np.int16)  # [64, 64, 3]
        img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        img.save(root / f"c{i % CLASSES}" / f"img{i:07d}.png", compress_level=1)


def make_image_folder(root: Path, n: int) -> float:
    """Write ``n`` PNGs under ``root/c0..c9`` (skipped if already done); returns seconds."""
    done = root / f".done-{n}"
    if done.exists():
        return 0.0
    t0 = time.perf_counter()
    for c in range(CLASSES):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    chunks = [(root, range(s, min(s + 1000, n))) for s in range(0, n, 1000)]
    with multiprocessing.Pool() as pool:
        pool.map(_write_images, chunks)
    done.touch()
    return time.perf_counter() - t0


def shard_folder(images: Path, out: Path, workers: int = 1) -> dict:
    """Shard ``images`` into ``out`` the way the shard stage does; returns the stats."""
    from ganlib.config import DataConfig
    from ganlib.data.shards import write_shards
    from ganlib.data.sources import open_source

    source = open_source(DataConfig(source=f"imagefolder:{images}", resolution=SIDE, channels=3))
    return write_shards(
        source.lazy() if workers > 1 else source,
        out,
        shard_size=1000,
        val_fraction=0.1,
        classes=source.classes,
        total=source.total,
        progress=False,
        workers=workers,
    )


def _shard_only(images: Path, out: Path, workers: int) -> None:
    """Subprocess entry: shard, then report wall time and this process's peak RSS."""
    t0 = time.perf_counter()
    stats = shard_folder(images, out, workers)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    shard_bytes = sum(p.stat().st_size for p in out.glob("*/*.tar"))
    digest = hashlib.sha256()  # of every output file: equal for every --workers
    for p in sorted(q for q in out.rglob("*") if q.is_file()):
        digest.update(p.relative_to(out).as_posix().encode() + p.read_bytes())
    print(
        json.dumps(
            {
                "samples": stats["samples"],
                "shards": stats["shards"],
                "wall_s": wall,
                "peak_rss_mib": peak_kib / 1024,
                "shard_mib": shard_bytes / 2**20,
                "output_sha256": digest.hexdigest(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of images")
    parser.add_argument("--workdir", type=Path, help="keep the generated images here")
    parser.add_argument("--workers", type=int, default=1, help="decode+encode processes")
    parser.add_argument("--shard-only", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shard_only:
        _shard_only(*args.shard_only, args.workers)
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        images = work / f"images-{args.n}"
        generate_s = make_image_folder(images, args.n)
        cmd = [sys.executable, __file__, "--shard-only", str(images), str(Path(tmp) / "shards")]
        child = subprocess.run(
            [*cmd, "--workers", str(args.workers)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(child.stdout)
    print(
        json.dumps(
            {
                "images": args.n,
                "workers": args.workers,
                "wall_s": round(result["wall_s"], 2),
                "images_per_s": round(args.n / result["wall_s"], 1),
                "peak_rss_mib": round(result["peak_rss_mib"], 1),
                "shards": result["shards"],
                "shard_mib": round(result["shard_mib"], 1),
                "output_sha256": result["output_sha256"],
                "generate_s": round(generate_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
