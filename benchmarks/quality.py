"""Generator quality for the same compute budget, under one protocol card: the classic
DCGAN recipe, ganlib's default, the ResNet family and R3GAN (with its relativistic loss and
R1 + R2, and without them).

Every recipe trains in one process on the project's shards for ``--budget-s`` seconds of
compute (CPU time over the torch threads, which tracks wall-clock time on a quiet machine
and is not shortened by other work on it) and is
measured by the evaluate stage's code under one protocol card (the project's featurize
outputs and ``eval:`` params), next to the real-vs-real floor. Prints one JSON object.

- classic_dcgan: DCGAN, non-saturating loss, Adam 2e-4 / beta1 0.5, no EMA, no augmentation;
- ganlib_default: ``train:`` of ``params.yaml`` with ``tune/best.yaml`` applied when tuning is
  on, i.e. what ``dvc repro`` trains;
- resnet_hinge: the ResNet family (spectral-norm D), hinge loss, Adam 2e-4 / beta1 0 / 0.9;
- r3gan: R3GAN's ``cpu`` preset with R3GAN's objective (rpgan, gamma/2 (R1 + R2) every step)
  and Adam (2e-4, beta1 0, beta2 0.99); r3gan_plain: the same network and Adam with the
  non-saturating loss and no penalty.

All use the default run's global batch (``batch_size x num_workers``) in one process. Run
``dvc repro featurize`` (and ``tune``) in the project first::

    python benchmarks/quality.py [--budget-s 180] [--project DIR] [--recipes r3gan,...]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ganlib.artifacts import export_generator  # noqa: E402
from ganlib.config import load_params  # noqa: E402
from ganlib.evaluation import evaluate_generator  # noqa: E402
from ganlib.training.loop import RunSpec, train  # noqa: E402
from ganlib.training.session import LocalSession  # noqa: E402
from ganlib.tuning import apply_best  # noqa: E402
from pipeline._stage import FEATURIZE, SHARDS, TUNE_BEST  # noqa: E402

FIRST_CHUNK, MIN_CHUNK, MAX_CHUNK = 20, 10, 200  # steps between budget checks (each chunk
# resumes exactly from the last one's checkpoint)


def compute_seconds() -> float:
    """This process's CPU time over its torch threads: on a quiet machine it tracks wall-clock
    time, and other work on the machine does not shorten a recipe's budget."""
    return time.process_time() / torch.get_num_threads()


def train_for(cfg, family, seconds: float, seed: int, storage: Path) -> tuple[dict, dict, int]:
    """Train ``cfg`` (and its family's section) until ``seconds`` of compute have passed;
    returns the last state, the wall and compute seconds, and the steps."""
    session = LocalSession(storage, device="cpu")
    steps, t0, c0 = 0, time.perf_counter(), compute_seconds()
    chunk_steps = FIRST_CHUNK
    while (spent := compute_seconds() - c0) < seconds:
        if steps:  # size the next chunk to the budget left, at the pace measured so far
            chunk_steps = max(MIN_CHUNK, min(MAX_CHUNK, round((seconds - spent) * steps / spent)))
        steps += chunk_steps
        chunk = dataclasses.replace(cfg, steps=steps, ckpt_every=chunk_steps, sample_every=steps)
        spec = RunSpec(
            train=chunk, seed=seed, shards=str(SHARDS.resolve()), identity="quality",
            task_cfg=family,
        )  # fmt: skip
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
            train(spec, session)
    times = {"train_s": time.perf_counter() - t0, "compute_s": compute_seconds() - c0}
    return session.load_latest(), times, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--budget-s", type=float, default=180.0,
        help="training seconds per recipe, as CPU time over the torch threads",
    )  # fmt: skip
    ap.add_argument("--project", default=".", help="project dir with shards and featurize/")
    ap.add_argument("--recipes", default="", help="comma list (default: all)")
    args = ap.parse_args()
    os.chdir(args.project)
    params = load_params("params.yaml")
    default = apply_best(params, TUNE_BEST).train
    global_batch = default.batch_size * default.num_workers
    one_process = {"num_workers": 1, "batch_size": global_batch, "log_every": 50}
    # R3GAN's own Adam (the paper's lr at the end of its burn-in is lower still), not the
    # DCGAN sweep's: 2e-4 for G and D, beta1 0, beta2 0.99
    r3gan_adam = {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.0, "beta2": 0.99, **one_process}
    recipes = {
        "classic_dcgan": dataclasses.replace(
            params.train,
            arch="dcgan",
            loss="nonsaturating",
            lr_g=2e-4,
            lr_d=2e-4,
            beta1=0.5,
            beta2=0.999,
            ema_kimg=0.0,
            augment="",
            r1_gamma=0.0,
            gp_weight=0.0,
            d_steps=1,
            **one_process,
        ),
        "ganlib_default": dataclasses.replace(default, **one_process),
        "resnet_hinge": dataclasses.replace(
            default, arch="resnet", loss="hinge", beta1=0.0, beta2=0.9, **one_process
        ),
        "r3gan": dataclasses.replace(
            default, arch="r3gan", loss="rpgan", r1_gamma=0.05, r2=True, r1_every=1, **r3gan_adam,
        ),
        "r3gan_plain": dataclasses.replace(
            default, arch="r3gan", loss="nonsaturating", r1_gamma=0.0, r2=False, **r3gan_adam,
        ),
    }  # fmt: skip
    if args.recipes:
        recipes = {k: v for k, v in recipes.items() if k in args.recipes.split(",")}
    threads = os.cpu_count() or 1
    out: dict = {"budget_s": args.budget_s, "global_batch": global_batch, "threads": threads}
    tmp = Path(tempfile.mkdtemp(prefix="ganlib-quality-"))
    for name, cfg in recipes.items():
        family = params.r3gan if cfg.arch == "r3gan" else None
        state, times, steps = train_for(cfg, family, args.budget_s, params.seed, tmp / name)
        gen = export_generator(state, tmp / name / "generator")
        metrics = evaluate_generator(
            gen, SHARDS, FEATURIZE, params.eval, seed=params.seed, out=tmp / name / "eval"
        )
        out[name] = {
            "steps": steps,
            **{k: round(v, 1) for k, v in times.items()},
            "config": {
                k: getattr(cfg, k) for k in ("arch", "loss", "r1_gamma", "r2", "lr_g", "ema_kimg")
            },
            **{k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)},
        }
        out["floor"] = {k: round(v, 4) for k, v in metrics["floor"].items()}
        out["protocol"], out["protocol_hash"] = metrics["protocol"], metrics["protocol_hash"]
    ranked = sorted((out[name]["fid"], name) for name in recipes)
    out["best_by_fid"] = ranked[0][1] if ranked else None
    out["samples_dir"] = str(tmp)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
