"""Benchmark: seconds per inpainting training step on one CPU thread, and what the U-Net's
fused upsampling convolution saves.

    python benchmarks/inpainting_step.py [--resolution 64] [--batch-size 16] [--width 16]

One step as the training loop runs it (see :class:`ganlib.training.tasks.InpaintingStep`):
training masks, pull-push fill, gated U-Net forward, D phase (real, then composite, each D
forward followed by its own backward), D update, G phase with D frozen (with feature matching,
one more D forward on the real image), G update. Random
images, Adam on both models. Runs twice: with :class:`ganlib.models.layers.UpsampleConv2d` as
shipped, and with its forward replaced by the plain ``conv3x3(upsample(x))`` it computes. Each
gets one warm-up step and the median of ``--steps`` (wall-clock and this process's CPU
seconds); prints one JSON object. A DDP worker with one thread takes about this long per step,
so ``train.steps`` x this is the training time of a run.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F
from translation_step import time_step  # this folder: python benchmarks/inpainting_step.py

from ganlib.data.masks import random_masks
from ganlib.losses import LOSSES
from ganlib.models.layers import UpsampleConv2d
from ganlib.models.patchgan import PatchDiscriminator
from ganlib.models.unet import UNetGenerator
from ganlib.tasks import inpainting as inp


def _adam(module: torch.nn.Module) -> torch.optim.Adam:
    return torch.optim.Adam(module.parameters(), lr=2e-4, betas=(0.5, 0.999))


def inpainting_step(width: int, res: int, n: int, fm_weight: float):
    torch.manual_seed(0)
    G = UNetGenerator(4, 3, width, resolution=res, gated=True)
    D = PatchDiscriminator(4, width=width)
    opt_G, opt_D = _adam(G), _adam(D)
    loss = inp.InpaintingLoss(
        LOSSES["hinge"], hole_weight=6.0, valid_weight=1.0, adv_weight=0.125, fm_weight=fm_weight
    )
    real = torch.rand(n, 3, res, res) * 2 - 1
    rng = np.random.default_rng(0)

    def step() -> None:
        mask = random_masks(rng, n, (res, res), kind="mix", area_range=(0.05, 0.6))
        out, fake = inp.generate(G, real, mask)
        D.requires_grad_(True)
        opt_D.zero_grad(set_to_none=True)
        loss.d_real(D, real, mask)[0].backward()  # each D forward followed by its own backward
        loss.d_fake(D, fake.detach(), mask)[0].backward()
        opt_D.step()
        D.requires_grad_(False)
        opt_G.zero_grad(set_to_none=True)
        loss.g(D, real, mask, out, fake)[0].backward()
        opt_G.step()

    return step


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
    shape = (args.width, args.resolution, args.batch_size, args.fm_weight)
    fused = time_step(inpainting_step(*shape), args.steps)
    fast_forward = UpsampleConv2d.forward
    UpsampleConv2d.forward = _plain_forward
    try:
        plain = time_step(inpainting_step(*shape), args.steps)
    finally:
        UpsampleConv2d.forward = fast_forward
    result = {
        "resolution": args.resolution,
        "batch_size": args.batch_size,
        "width": args.width,
        "fm_weight": args.fm_weight,
        "fused_upsample_conv": fused,
        "plain_upsample_conv": plain,
        "speedup_cpu": round(plain["cpu_s_per_step"] / fused["cpu_s_per_step"], 2),
        "images_per_s_per_worker": round(args.batch_size / fused["s_per_step"], 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
