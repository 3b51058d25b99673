"""Checkpoints are data: state dicts, the config that rebuilds the models, counters, RNG states.

They are written with ``torch.save`` and read with ``torch.load(weights_only=True)``, so
loading one never runs pickled code (the StyleGAN "No module named torch_utils" trap).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ganlib.errors import GanlibError

FORMAT_VERSION = 1
FILENAME = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], directory: Path) -> Path:
    """Write ``state`` to ``directory/checkpoint.pt`` atomically (write, then rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILENAME
    tmp = path.with_suffix(".tmp")
    torch.save({"format_version": FORMAT_VERSION, **state}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint file (or a directory holding one) without running pickled code."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise GanlibError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise GanlibError(f"{path}: not a readable ganlib checkpoint ({exc})") from None
    version = state.get("format_version") if isinstance(state, dict) else None
    if version != FORMAT_VERSION:
        raise GanlibError(
            f"{path}: checkpoint format {version!r}, this ganlib reads {FORMAT_VERSION}"
        )
    return state


def rng_state() -> dict[str, Any]:
    """This process's torch RNG states (CPU and, when present, the current CUDA device)."""
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
