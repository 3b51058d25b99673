"""Benchmark: seconds per inpainting training step on one CPU thread, and what the U-Net's
fused upsampling convolution saves.

    python benchmarks/inpainting_step.py [--resolution 64] [--batch-size 16] [--width 16]

Times the training loop's own step object (:class:`ganlib.tasks.inpainting.InpaintingStep`,
built by :func:`ganlib.training.loop.plain_step`: one rank, no DDP): training masks, pull-push
fill, gated U-Net forward, D phase (real, then composite, each D forward followed by its own
backward), D update, G phase with D frozen (with feature matching, one more D forward on the
real image), G update. Random images. Runs twice: with
:class:`ganlib.models.layers.UpsampleConv2d` as shipped, and with its forward replaced by the
plain ``conv3x3(upsample(x))`` it computes. Each gets one warm-up step and the median of
``--steps`` (wall-clock and this process's CPU seconds); prints one JSON object. A DDP worker
with one thread takes about this long per step, so ``train.steps`` x this is the training time
of a run.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from translation_step import info, random_batches, time_step  # this folder

from ganlib.config import InpaintingConfig, TrainConfig
from ganlib.models.layers import UpsampleConv2d
from ganlib.training.loop import plain_step


def _plain_forward(self: UpsampleConv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), self.weight, self.bias, 1, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16, help="per DDP worker")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--fm-weight", type=float, default=3.0, help="0: no feature matching")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    # The shipped inpainting profile's model and losses (params.yaml), at these sizes.
    cfg = TrainConfig(width=args.width, batch_size=args.batch_size, loss="hinge")
    task_cfg = InpaintingConfig(fm_weight=args.fm_weight)

    def step():
        batches = random_batches(args.batch_size, args.resolution, ("image",))
        return plain_step("inpainting", cfg, task_cfg, info(args.resolution), batches)

    fused = time_step(step(), args.steps)
    fast_forward = UpsampleConv2d.forward
    UpsampleConv2d.forward = _plain_forward
    try:
        plain = time_step(step(), args.steps)
    finally:
        UpsampleConv2d.forward = fast_forward
    result = {
        "resolution": args.resolution,
        "batch_size": args.batch_size,
        "width": args.width,
        "gated": task_cfg.gated,
        "fm_weight": args.fm_weight,
        "fused_upsample_conv": fused,
        "plain_upsample_conv": plain,
        "speedup_cpu": round(plain["cpu_s_per_step"] / fused["cpu_s_per_step"], 2),
        "images_per_s_per_worker": round(args.batch_size / fused["s_per_step"], 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
