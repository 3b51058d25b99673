"""Tiny training steps of every task and generation family, shared by the CPU fast-path tests
and the CUDA checks (no pytest here: ``tests/cuda/check.py`` runs without it)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import torch

from ganlib.config import DataConfig, InpaintingConfig, R3ganConfig, TrainConfig, TranslationConfig
from ganlib.data.shards import write_shards
from ganlib.data.sources import open_source
from ganlib.training.loop import plain_step
from ganlib.training.step import TaskStep

# variant -> (task, train config, task config); each exercises its family's penalty
STEPS: dict[str, tuple[str, TrainConfig, Any]] = {
    "dcgan": ("generation", TrainConfig(width=8, z_dim=8, batch_size=4, r1_gamma=1.0), None),
    "resnet-wgan-gp": (
        "generation",
        TrainConfig(arch="resnet", width=8, z_dim=8, batch_size=4, loss="wgan", gp_weight=10),
        None,
    ),
    "r3gan-rpgan": (
        "generation",
        TrainConfig(arch="r3gan", z_dim=8, batch_size=4, loss="rpgan", r1_gamma=1.0, r2=True),
        R3ganConfig(widths=(16, 16, 16, 16)),
    ),
    "inpainting": ("inpainting", TrainConfig(width=4, batch_size=2), InpaintingConfig()),
    "pix2pix": ("translation", TrainConfig(width=4, batch_size=2), TranslationConfig()),
    "cyclegan": (
        "translation",
        TrainConfig(width=4, batch_size=2),
        TranslationConfig(mode="unpaired", n_blocks=1, pool_size=2),
    ),
}


def make_step(
    variant: str, device: str = "cpu", resolution: int = 32, **overrides: Any
) -> tuple[TaskStep, dict[str, torch.Tensor]]:
    """``(step, batch)``: the variant's step on fresh models (seed 0) and one fixed batch in
    [-1, 1] that ``next_batch`` returns every time. Every step penalises (``r1_every`` 1)."""
    task, cfg, task_cfg = STEPS[variant]
    cfg = dataclasses.replace(cfg, r1_every=1, **overrides)
    channels = 1 if task == "generation" else 3
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.rand(cfg.batch_size, channels, resolution, resolution, generator=g) * 2 - 1
             for k in ("image", "a", "b")}  # fmt: skip
    batch["label"] = torch.zeros(cfg.batch_size, dtype=torch.long)
    info = {"resolution": resolution, "channels": channels, "classes": None}
    step = plain_step(task, cfg, task_cfg, info, lambda: batch, device=device)
    return step, batch


def run_steps(step: TaskStep, n: int, seed: int = 0) -> list[dict[str, float]]:
    """``n`` steps from the global seed ``seed`` (z, augmentation, masks' RNG): their stats."""
    torch.manual_seed(seed)
    return [{k: float(v) for k, v in step.step(i + 1, True).items()} for i in range(n)]


def make_digit_shards(out: Path, n: int = 256, shard_size: int = 64) -> Path:
    """The first ``n`` scikit-learn digits at 32x32, 1 channel, as shards under ``out``."""
    source = open_source(DataConfig(source="builtin:digits", resolution=32, channels=1))
    write_shards(
        itertools.islice(source, n),
        out,
        shard_size=shard_size,
        val_fraction=0.1,
        classes=source.classes,
        total=n,
        progress=False,
    )
    return out
