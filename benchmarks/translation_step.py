"""Benchmark: seconds per training step of pix2pix and CycleGAN on one CPU thread.

    python benchmarks/translation_step.py [--resolution 64] [--batch-size 8] [--steps 5]

One step as the training loop runs it (see :mod:`ganlib.tasks.translation`): G forward, D
phase (each D forward followed by its own backward), D update, G phase with D frozen, G
update. Random images, Adam on every model. Each configuration (generator width and blocks,
discriminator width, identity loss on or off) gets one warm-up step and the median of
``--steps``, in wall-clock seconds and in CPU seconds of this process (the better figure on a
machine shared with other work); prints one JSON object. Use it to size ``train.steps`` for a
wall-clock budget: a DDP worker with one thread takes about this long per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ganlib.losses import LOSSES
from ganlib.models.cyclegan import CycleGenerators
from ganlib.models.patchgan import PatchDiscriminator
from ganlib.models.unet import UNetGenerator
from ganlib.tasks.translation import CycleGANLoss, ImagePool, Pix2PixLoss


def _adam(module: torch.nn.Module) -> torch.optim.Adam:
    return torch.optim.Adam(module.parameters(), lr=2e-4, betas=(0.5, 0.999))


def pix2pix_step(g_width: int, d_width: int, res: int, n: int):
    G = UNetGenerator(3, 3, width=g_width, resolution=res)
    D = PatchDiscriminator(6, width=d_width)
    opt_G, opt_D = _adam(G), _adam(D)
    loss = Pix2PixLoss(LOSSES["nonsaturating"], l1_weight=100.0, adv_weight=1.0)
    a, b = torch.randn(n, 3, res, res), torch.randn(n, 3, res, res)

    def step() -> None:
        fake_b = G(a)
        D.requires_grad_(True)
        opt_D.zero_grad(set_to_none=True)
        loss.d_real(D, a, b)[0].backward()  # each D forward followed by its own backward
        loss.d_fake(D, a, fake_b)[0].backward()
        opt_D.step()
        D.requires_grad_(False)
        opt_G.zero_grad(set_to_none=True)
        loss.g(D, a, b, fake_b)[0].backward()
        opt_G.step()

    return step, G


def cyclegan_step(g_width: int, n_blocks: int, d_width: int, identity: float, res: int, n: int):
    G = CycleGenerators(3, width=g_width, n_blocks=n_blocks)
    D_A, D_B = PatchDiscriminator(3, width=d_width), PatchDiscriminator(3, width=d_width)
    opt_G, opt_D = _adam(G), torch.optim.Adam([*D_A.parameters(), *D_B.parameters()])
    loss = CycleGANLoss(LOSSES["lsgan"], 10.0, identity_weight=identity, adv_weight=1.0)
    pools = ImagePool(50, seed=0), ImagePool(50, seed=1)
    a, b = torch.randn(n, 3, res, res), torch.randn(n, 3, res, res)

    def step() -> None:
        out = G(a, b, identity=loss.identity)
        for D in (D_A, D_B):
            D.requires_grad_(True)
        opt_D.zero_grad(set_to_none=True)
        for D, real, fake, pool in ((D_A, a, out.fake_a, pools[0]), (D_B, b, out.fake_b, pools[1])):
            loss.d_real(D, real)[0].backward()  # each D forward followed by its own backward
            loss.d_fake(D, pool.query(fake))[0].backward()
        opt_D.step()
        for D in (D_A, D_B):
            D.requires_grad_(False)
        opt_G.zero_grad(set_to_none=True)
        loss.g(D_A, D_B, a, b, out)[0].backward()
        opt_G.step()

    return step, G


def time_step(step, steps: int) -> dict[str, float]:
    step()  # warm-up: allocations, oneDNN kernel selection
    wall, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"s_per_step": statistics.median(wall), "cpu_s_per_step": statistics.median(cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    res, n = args.resolution, args.batch_size
    rows = []
    for g_width, d_width in ((16, 32), (32, 32), (32, 64)):
        step, G = pix2pix_step(g_width, d_width, res, n)
        rows.append(
            {
                "task": "pix2pix",
                "G": f"unet width {g_width} depth {G.config['depth']}",
                "D": f"patchgan width {d_width}",
                **time_step(step, args.steps),
            }
        )
    cyclegans = ((16, 3, 32, 0.5), (16, 3, 32, 0.0), (32, 3, 32, 0.5), (32, 6, 64, 0.5))
    for g_width, n_blocks, d_width, identity in cyclegans:
        step, _ = cyclegan_step(g_width, n_blocks, d_width, identity, res, n)
        rows.append(
            {
                "task": "cyclegan",
                "G": f"2 x resnet width {g_width} blocks {n_blocks}",
                "D": f"2 x patchgan width {d_width}",
                "identity_weight": identity,
                **time_step(step, args.steps),
            }
        )
    for row in rows:
        row.update({k: round(row[k], 3) for k in ("s_per_step", "cpu_s_per_step")})
    print(json.dumps({"resolution": res, "batch_size": n, "threads": 1, "steps": rows}, indent=2))


if __name__ == "__main__":
    main()
