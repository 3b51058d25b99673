"""What the training loop needs from where it runs, and the plain in-process implementation.

The loop is plain PyTorch; the few calls at its edges (which rank am I, wrap a model for DDP,
load the last checkpoint, report metrics with a checkpoint) go through a ``Session``. The Ray
Train and Ray Tune sessions live in :mod:`ganlib.training.distributed`.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from ganlib.artifacts import load_newest_checkpoint, save_checkpoint


class Session(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def prepare(self, module: torch.nn.Module, *, sync_buffers: bool) -> torch.nn.Module:
        """Move ``module`` to the device and, with several ranks, wrap it in DDP."""

    def load_latest(self) -> dict[str, Any] | None:
        """The last reported checkpoint's state, or None for a fresh run."""

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        """Report metrics (every rank, same number of times); rank 0 passes the state."""

    def stop_requested(self) -> bool:
        """Whether the run was asked to stop (SIGINT/SIGTERM at the driver); cheap, called
        every step. The loop agrees on it across ranks and stops after the next step."""


def pick_device(kind: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU."""
    if kind == "cuda" or (kind == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return torch.device("cpu")


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks in place (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, indexed by rank (``[obj]`` in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


class LocalSession:
    """One process, no Ray: checkpoints go to ``storage/checkpoint_<step>/``; the last two kept."""

    rank = 0
    world_size = 1

    def __init__(self, storage: Path, device: str = "auto", keep: int = 2):
        self.storage = Path(storage)
        self.device = pick_device(device)
        self.keep = keep
        self.stop = threading.Event()  # set it (e.g. from a signal handler) to stop the run

    def stop_requested(self) -> bool:
        return self.stop.is_set()

    def prepare(self, module: torch.nn.Module, *, sync_buffers: bool) -> torch.nn.Module:
        return module.to(self.device)

    def _checkpoints(self) -> list[Path]:
        return sorted(self.storage.glob("checkpoint_*"))

    def load_latest(self) -> dict[str, Any] | None:
        return load_newest_checkpoint(self._checkpoints())

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        if state is None:
            return
        for later in self._checkpoints():  # a restarted, shorter run replaces them
            if int(later.name.split("_")[1]) >= state["step"]:
                shutil.rmtree(later)
        save_checkpoint(state, self.storage / f"checkpoint_{state['step']:09d}")
        for old in self._checkpoints()[: -self.keep]:
            shutil.rmtree(old)


class ProcessGroupSession(LocalSession):
    """A plain process (no Ray) that is one rank of ``torch.distributed``: NCCL on CUDA, gloo
    on the CPU; G and D in DDP. The ranks come from torchrun's environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT``); without it, one rank
    on a free local port, which still runs every DDP wrapper and collective. Checkpoints as
    :class:`LocalSession`'s (rank 0 writes them; every rank reads the newest at start, so the
    storage must be shared). Call :meth:`close` at the end."""

    def __init__(self, storage: Path, device: str = "auto", keep: int = 2):
        super().__init__(storage, device, keep)
        env = os.environ
        self.rank, self.world_size = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
        if self.device.type == "cuda":
            self.device = torch.device("cuda", int(env.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)
        if not dist.is_initialized():
            if "MASTER_ADDR" in env:
                init = "env://"
            else:  # a single rank of its own
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    init = f"tcp://127.0.0.1:{s.getsockname()[1]}"
            dist.init_process_group(
                "nccl" if self.device.type == "cuda" else "gloo",
                init_method=init, rank=self.rank, world_size=self.world_size,
            )  # fmt: skip

    def prepare(self, module: torch.nn.Module, *, sync_buffers: bool) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel as DDP

        module = module.to(self.device)
        ids = [self.device.index] if self.device.type == "cuda" else None
        # what Ray's prepare_model passes; older torch has only broadcast_buffers
        sync = "forward_sync_buffers"
        if sync not in _ddp_args():
            sync = "broadcast_buffers"
        return DDP(module, device_ids=ids, **{sync: sync_buffers})

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def _ddp_args() -> set[str]:
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    return set(inspect.signature(DDP.__init__).parameters)
