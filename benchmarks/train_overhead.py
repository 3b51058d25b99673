"""Images/s of the same model and batch in a plain process and under Ray Train (1 and 2 workers).

Prints one JSON object. Throughput is the median of the loop's own per-window figures
(``images_per_s`` rows of the history, the first window dropped as warm-up), so start-up
(Ray, worker group, process group) is reported separately as ``*_wall_s``.

    python benchmarks/train_overhead.py [--steps 300] [--width 32] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ganlib.config import TrainConfig  # noqa: E402
from ganlib.training.distributed import fit  # noqa: E402
from ganlib.training.loop import RunSpec, train  # noqa: E402
from ganlib.training.session import LocalSession  # noqa: E402
from tests.conftest import make_digit_shards  # noqa: E402


def throughput(history: list[dict]) -> float:
    return statistics.median(row["images_per_s"] for row in history[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ganlib-bench-"))
    shards = make_digit_shards(tmp / "shards", n=1797, shard_size=500)
    cfg = TrainConfig(
        width=args.width,
        batch_size=args.batch_size,
        steps=args.steps,
        log_every=25,
        ckpt_every=args.steps,
        sample_every=args.steps,
        num_workers=1,
    )
    spec = RunSpec(train=cfg, seed=0, shards=str(shards), identity="bench")
    out: dict[str, float] = {"steps": args.steps, "width": args.width, "batch": args.batch_size}

    t0 = time.perf_counter()
    session = LocalSession(tmp / "plain", device="cpu")
    train(spec, session)
    out["plain_wall_s"] = round(time.perf_counter() - t0, 1)
    out["plain_images_per_s"] = round(throughput(session.load_latest()["history"]), 1)

    import ray

    ray.init(num_cpus=2, logging_level="WARNING")
    for workers in (1, 2):
        s = dataclasses.replace(spec, train=dataclasses.replace(cfg, num_workers=workers))
        t0 = time.perf_counter()
        state, _ = fit(s, storage=tmp / "ray", name=f"w{workers}")
        out[f"ray_{workers}w_wall_s"] = round(time.perf_counter() - t0, 1)
        out[f"ray_{workers}w_images_per_s"] = round(throughput(state["history"]), 1)
    ray.shutdown()
    out["ray_1w_over_plain"] = round(out["ray_1w_images_per_s"] / out["plain_images_per_s"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
