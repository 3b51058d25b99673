"""Benchmark: seconds per training step of pix2pix and CycleGAN on one CPU thread.

    python benchmarks/translation_step.py [--resolution 64] [--batch-size 8] [--steps 5]

Times the training loop's own step objects (:meth:`ganlib.tasks.translation.Translation.
make_step`, built by :func:`ganlib.training.loop.plain_step`: one rank, no DDP): G forward,
D phase (each D forward followed by its own backward), D update, G phase with D frozen, G
update. Random images, the loop's Adam on every model. Each configuration (generator width and
blocks, identity loss on or off) gets one warm-up step and the median of ``--steps``, in
wall-clock seconds and in CPU seconds of this process (the better figure on a machine shared
with other work); prints one JSON object. Use it to size ``train.steps`` for a wall-clock
budget: a DDP worker with one thread takes about this long per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from ganlib.config import TrainConfig, TranslationConfig
from ganlib.training.loop import plain_step
from ganlib.training.step import TaskStep


def random_batches(n: int, res: int, fields: tuple[str, ...]) -> Callable[[], dict]:
    """A loader stand-in: the same random batch of ``fields`` (``image``, ``a``, ``b``) in
    [-1, 1] every call."""
    g = torch.Generator().manual_seed(0)
    batch = {name: torch.rand(n, 3, res, res, generator=g) * 2 - 1 for name in fields}
    batch["label"] = torch.zeros(n, dtype=torch.long)
    return lambda: batch


def info(res: int) -> dict:
    return {"resolution": res, "channels": 3, "classes": None}


def time_step(step: TaskStep, steps: int) -> dict[str, float]:
    """One warm-up step (allocations, oneDNN kernel selection), then the median of ``steps``."""
    step.step(1, False)
    wall, cpu = [], []
    for i in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step.step(i + 2, False)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "s_per_step": round(statistics.median(wall), 3),
        "cpu_s_per_step": round(statistics.median(cpu), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    res, n = args.resolution, args.batch_size
    batches = random_batches(n, res, ("a", "b"))
    rows = []
    for width in (16, 32):
        cfg = TrainConfig(width=width, batch_size=n, loss="nonsaturating")
        step = plain_step("translation", cfg, TranslationConfig(mode="paired"), info(res), batches)
        G = step.ctx.G
        rows.append({
            "task": "pix2pix",
            "G": f"unet width {width} depth {G.config['depth']}",
            "D": f"patchgan width {width}",
            **time_step(step, args.steps),
        })  # fmt: skip
    for width, n_blocks, identity in ((16, 3, 0.0), (16, 3, 0.5), (32, 6, 0.5)):
        cfg = TrainConfig(width=width, batch_size=n, loss="lsgan")
        task_cfg = TranslationConfig(mode="unpaired", n_blocks=n_blocks, identity_weight=identity)
        step = plain_step("translation", cfg, task_cfg, info(res), batches)
        rows.append({
            "task": "cyclegan",
            "G": f"2 x resnet width {width} blocks {n_blocks}",
            "D": f"2 x patchgan width {width}",
            "identity_weight": identity,
            **time_step(step, args.steps),
        })  # fmt: skip
    print(json.dumps({"resolution": res, "batch_size": n, "threads": 1, "steps": rows}, indent=2))


if __name__ == "__main__":
    main()
