"""The fast path of a run: precision, memory format, compilation, optimiser and kernel settings,
resolved once per worker from ``train:`` and the device, and what actually ran (the
``runtime`` record of checkpoints, ``train/summary.json`` and the MLflow run's tags).

- ``precision: bf16``: the step's forwards under ``torch.autocast`` in bf16 (CUDA and CPU);
  the weights, the optimiser state, the losses and the R1 / R2 / gradient penalties stay fp32
  (tasks take ``.float()`` logits; the penalty passes of the non-relativistic step run outside
  autocast), and no loss scaler: bf16 has fp32's range (R3GAN's recipe).
- ``channels_last``: G, D and G_ema in NHWC, and every 4-D batch the step moves to the device.
- ``compile``: :meth:`FastPath.compiled` gives the ``torch.compile`` of a module for the
  forwards that need no double backward (G, the plain D forwards); penalty passes call the
  module itself, eagerly (``torch.compile`` has no double backward, pytorch#91469). Graph
  breaks and recompiles are counted and reported (:meth:`FastPath.compile_report`).
- On CUDA: fused Adam; TF32 only with ``tf32: true`` (off by default, as R3GAN's anchors);
  ``cudnn.benchmark`` unless ``deterministic: true``, which turns deterministic algorithms on
  instead (bit-exact resume).

What is unavailable falls back with one line on stderr naming what falls back to what, or,
with ``fallback: error``, raises a one-line :class:`~ganlib.errors.GanlibError`: never a silent
slow path.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ganlib.config import TrainConfig
from ganlib.errors import GanlibError

COMPILE_BACKEND = "inductor"  # torch.compile's backend (tests use a cheaper or a failing one)
# Graphs compiled per compiled module before dynamo gives up on it and runs it eagerly: a
# module sees a few variants (training or not, D trainable or frozen); more is a storm.
RECOMPILE_LIMIT = 8


@dataclass
class FastPath:
    """What runs, for one worker; build it with :func:`resolve`."""

    device: torch.device
    precision: str  # fp32 | bf16: what runs, after any fallback
    channels_last: bool
    compile: bool  # turns False if compilation fails (fallback: warn)
    fused_adam: bool
    tf32: bool
    cudnn_benchmark: bool
    deterministic: bool
    strict: bool  # fallback: error
    notes: list[str] = field(default_factory=list)  # the fallback lines printed
    _compiled: dict[int, _Compiled] = field(default_factory=dict, repr=False)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the step's forwards run in: bf16 autocast, or nothing."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A batch tensor on the device; 4-D images in channels_last when asked for."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare_model(self, module: nn.Module) -> nn.Module:
        """``module`` in the run's memory format (before it is moved or wrapped in DDP)."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def compiled(self, module: nn.Module) -> nn.Module:
        """The compiled ``module`` (the same object each call), or ``module`` itself without
        ``compile``. Only for forwards whose graph is never differentiated twice."""
        if not self.compile:
            return module
        key = id(module)
        if key not in self._compiled:
            self._compiled[key] = _Compiled(module, self)
        return self._compiled[key]

    def compile_failed(self, exc: BaseException) -> None:
        """Compilation failed: raise with ``fallback: error``, else one line and eager."""
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        why = f"{type(exc).__name__}: {first}"
        if self.strict:
            raise GanlibError(f"train.compile: torch.compile failed ({why}); train.fallback: error")
        self.compile = False
        self._note(f"train.compile: torch.compile failed ({why}); falling back to eager")

    def compile_report(self) -> dict[str, int]:
        """Graphs, graph breaks and recompiles so far (this process), with one line the first
        time graph breaks or recompiles show up: they mean a slower, partly eager path."""
        if not self._compiled:
            return {}
        from torch._dynamo.utils import counters

        report = {
            "graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "recompiles": sum(max(c.compiles - 1, 0) for c in self._compiled.values()),
        }
        # a module sees a couple of variants (grad or no_grad, D trainable or frozen)
        storm = any(c.compiles > 3 for c in self._compiled.values())
        if (report["graph_breaks"] or storm) and not any(
            n.startswith("train.compile: graph") for n in self.notes
        ):
            reasons = "; ".join(list(counters["graph_break"])[:3]) or "none"
            self._note(
                f"train.compile: graph breaks {report['graph_breaks']}, recompiles "
                f"{report['recompiles']} over {len(self._compiled)} compiled modules (reasons: "
                f"{reasons}); those parts run eagerly"
            )
        return report

    def record(self) -> dict[str, Any]:
        """What ran, as plain data: the ``runtime`` record."""
        backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else "none"
        world = dist.get_world_size() if backend != "none" else 1
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {
            "device": str(self.device),
            "device_name": name,
            "backend": str(backend),
            "world_size": int(world),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "fused_adam": self.fused_adam,
            "tf32": self.tf32,
            "cudnn_benchmark": self.cudnn_benchmark,
            "deterministic": self.deterministic,
            "torch": str(torch.__version__),
            "fallbacks": list(self.notes),
            **{f"compile_{k}": v for k, v in self.compile_report().items()},
        }

    def _note(self, line: str) -> None:
        self.notes.append(line)
        print(f"warning: {line}", file=sys.stderr, flush=True)


class _Compiled:
    """``torch.compile(module)`` that, when compilation fails, tells its FastPath (one line or
    an error) and runs ``module`` eagerly from then on. Runtime errors of the model itself are
    not compilation failures: they reach the caller."""

    def __init__(self, module: nn.Module, fast: FastPath):
        self.module, self.fast = module, fast
        self.fn = torch.compile(module, backend=COMPILE_BACKEND)
        self.compiles = 0  # calls that compiled a new graph

    def __call__(self, *args, **kwargs):
        if not self.fast.compile:
            return self.module(*args, **kwargs)
        from torch._dynamo.exc import TorchDynamoException
        from torch._dynamo.utils import counters

        before = counters["stats"]["unique_graphs"]
        try:
            out = self.fn(*args, **kwargs)
        except (TorchDynamoException, *_inductor_errors()) as exc:
            self.fast.compile_failed(exc)
            return self.module(*args, **kwargs)
        self.compiles += counters["stats"]["unique_graphs"] > before
        return out

    def __getattr__(self, name: str) -> Any:  # .config, .module (DDP), parameters() ...
        return getattr(self.module, name)


def _inductor_errors() -> tuple[type[BaseException], ...]:
    try:
        from torch._inductor.exc import InductorError
    except ImportError:  # older torch: inductor errors reach here as dynamo's
        return ()
    return (InductorError,)


def resolve(cfg: TrainConfig, device: torch.device) -> FastPath:
    """The fast path of ``cfg`` on ``device``; sets the process-wide kernel options (TF32,
    cuDNN autotuning, deterministic algorithms) for CUDA. Falls back, or raises with
    ``fallback: error``, where bf16 or compilation is unavailable."""
    strict = cfg.fallback == "error"
    notes: list[str] = []

    def fall_back(what: str, line: str) -> None:
        if strict:
            raise GanlibError(f"train.{what}; train.fallback: error")
        notes.append(line)
        print(f"warning: train.{line}", file=sys.stderr, flush=True)

    precision = cfg.precision
    cuda = device.type == "cuda"
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported(including_emulation=False):
        name = torch.cuda.get_device_name(device)
        fall_back(
            f"precision: bf16 is not supported by {device} ({name})",
            f"precision: bf16 is not supported by {device} ({name}); falling back to fp32",
        )
        precision = "fp32"
    if precision == "bf16" and not cuda and not _cpu_has_bf16():
        # autocast still works (emulated); say that it is slow instead of falling back
        notes.append("precision: bf16 on a CPU without native bf16: emulated, slower than fp32")
        print(f"warning: train.{notes[-1]}", file=sys.stderr, flush=True)
    compile_ = cfg.compile
    if compile_ and not hasattr(torch, "compile"):
        fall_back("compile: this torch has no torch.compile", "compile: unavailable; eager")
        compile_ = False
    if compile_:
        from torch._dynamo import config as dynamo_config

        limit = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else None
        setattr(dynamo_config, limit or "cache_size_limit", RECOMPILE_LIMIT)
    if cuda:
        _set_tf32(cfg.tf32)
        torch.backends.cudnn.benchmark = not cfg.deterministic
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it
            torch.use_deterministic_algorithms(True, warn_only=True)  # the resume test checks
    fast = FastPath(
        device=device,
        precision=precision,
        channels_last=cfg.channels_last,
        compile=compile_,
        fused_adam=cuda,
        tf32=cuda and cfg.tf32,
        cudnn_benchmark=cuda and not cfg.deterministic,
        deterministic=cuda and cfg.deterministic,
        strict=strict,
    )
    fast.notes = [f"train.{n}" for n in notes]
    return fast


def _set_tf32(on: bool) -> None:
    """TF32 for CUDA matmuls and convolutions, on or off (cuDNN's default is on)."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        matmul.fp32_precision = "tf32" if on else "ieee"
        conv.conv.fp32_precision = "tf32" if on else "ieee"
    else:
        matmul.allow_tf32 = on
        conv.allow_tf32 = on


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
