"""Generator quality for the same wall-clock budget: the classic DCGAN recipe vs ganlib's default.

Both train in one process on the project's shards for ``--budget-s`` seconds each and are
measured by the evaluate stage's code under one protocol card (the project's featurize
outputs and ``eval:`` params), next to the real-vs-real floor. Prints one JSON object.

- classic: DCGAN, non-saturating loss, Adam 2e-4 / beta1 0.5, no EMA, no augmentation;
- ganlib: ``train:`` of ``params.yaml`` with ``tune/best.yaml`` applied when tuning is on,
  i.e. what ``dvc repro`` trains.

Both use the default run's global batch (``batch_size x num_workers``) in one process.
Run ``dvc repro featurize`` (and ``tune``) first::

    python benchmarks/quality.py [--budget-s 180]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ganlib.artifacts import export_generator  # noqa: E402
from ganlib.config import load_params  # noqa: E402
from ganlib.evaluation import evaluate_generator  # noqa: E402
from ganlib.training.loop import RunSpec, train  # noqa: E402
from ganlib.training.session import LocalSession  # noqa: E402
from ganlib.tuning import apply_best  # noqa: E402
from pipeline._stage import FEATURIZE, SHARDS, TUNE_BEST  # noqa: E402

CHUNK = 100  # steps between wall-clock checks (each chunk resumes exactly from the last)


def train_for(cfg, seconds: float, seed: int, storage: Path) -> tuple[dict, float, int]:
    """Train ``cfg`` until ``seconds`` of training have passed; returns the last state."""
    session = LocalSession(storage, device="cpu")
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        steps += CHUNK
        chunk = dataclasses.replace(cfg, steps=steps, ckpt_every=CHUNK, sample_every=steps)
        spec = RunSpec(train=chunk, seed=seed, shards=str(SHARDS.resolve()), identity="quality")
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
            train(spec, session)
    return session.load_latest(), time.perf_counter() - t0, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=180.0, help="training seconds per recipe")
    args = ap.parse_args()
    params = load_params("params.yaml")
    default = apply_best(params, TUNE_BEST).train
    global_batch = default.batch_size * default.num_workers
    one_process = {"num_workers": 1, "batch_size": global_batch, "log_every": 50}
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
    }
    threads = os.cpu_count() or 1
    out: dict = {"budget_s": args.budget_s, "global_batch": global_batch, "threads": threads}
    tmp = Path(tempfile.mkdtemp(prefix="ganlib-quality-"))
    for name, cfg in recipes.items():
        state, wall, steps = train_for(cfg, args.budget_s, params.seed, tmp / name)
        gen = export_generator(state, tmp / name / "generator")
        metrics = evaluate_generator(
            gen, SHARDS, FEATURIZE, params.eval, seed=params.seed, out=tmp / name / "eval"
        )
        out[name] = {
            "steps": steps,
            "train_s": round(wall, 1),
            "config": {k: getattr(cfg, k) for k in ("loss", "lr_g", "lr_d", "ema_kimg")},
            **{k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)},
        }
        out["floor"] = {k: round(v, 4) for k, v in metrics["floor"].items()}
        out["protocol"], out["protocol_hash"] = metrics["protocol"], metrics["protocol_hash"]
    out["ganlib_wins"] = out["ganlib_default"]["fid"] < out["classic_dcgan"]["fid"]
    out["samples_dir"] = str(tmp)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
