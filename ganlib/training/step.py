"""What a task's training step is given, and what every step shares.

The loop (:mod:`ganlib.training.loop`) owns everything tasks share: state and resume, the
optimisers, EMA of G, logging, the finiteness check, checkpoints. A task's step
(:meth:`ganlib.tasks.base.Task.make_step`, a :class:`TaskStep`) owns the rest: it runs one G
update and the D update(s) before it, and returns its statistics (detached scalar tensors,
the same names every step; ``loss_D`` and ``loss_G`` always).

Every step keeps the DDP rule of the loop's docstring: each D forward is followed by its own
backward; in the G phase D is used unwrapped with frozen parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ganlib import losses
from ganlib.config import TrainConfig
from ganlib.training.fastpath import FastPath


@dataclass
class StepContext:
    """What a task step works with; the loop fills it once models and optimisers exist."""

    cfg: TrainConfig
    task_cfg: Any  # InpaintingConfig | TranslationConfig | None
    seed: int
    rank: int
    world: int
    device: torch.device
    next_batch: Callable[[], dict[str, Any]]
    G: nn.Module
    G_ddp: nn.Module
    D: dict[str, nn.Module]
    D_ddp: dict[str, nn.Module]
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    fast: FastPath  # precision, memory format, compilation (ganlib.training.fastpath)
    # values a schedule moves with the images seen (the loop sets them before each step):
    # gamma (R1/R2 weight) and augment_p; train:'s constants when nothing is scheduled
    knobs: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.knobs = {"gamma": self.cfg.r1_gamma, "augment_p": 1.0} | self.knobs

    @property
    def autocast(self) -> contextlib.AbstractContextManager:
        """A fresh context for the step's forwards: bf16 autocast, or nothing (fp32)."""
        return self.fast.autocast()

    def compiled(self, module: nn.Module) -> nn.Module:
        """``module`` compiled (with ``train.compile``) for a forward that is differentiated
        once; penalty passes (R1, R2, WGAN-GP: a double backward) call ``module`` itself."""
        return self.fast.compiled(module)

    def to_device(self, x: Tensor) -> Tensor:
        """A batch tensor on the device, in the run's memory format."""
        return self.fast.to_device(x)

    def d_pass(self, name: str, *, last: bool) -> contextlib.AbstractContextManager:
        """Around one D forward and its backward in a D update: DDP all-reduces D ``name``'s
        gradients only at the update's last backward. The passes before it run under
        ``no_sync`` and accumulate locally; the last one reduces the sum, whose average over
        ranks is the sum of the per-pass averages: one all-reduce per D update, not one per
        pass."""
        D_ddp = self.D_ddp[name]
        if last or not isinstance(D_ddp, DistributedDataParallel):
            return contextlib.nullcontext()
        return D_ddp.no_sync()


class TaskStep:
    """One training step of a task; see the module docstring."""

    def __init__(self, ctx: StepContext):
        self.ctx = ctx
        self.loss = losses.LOSSES.get(ctx.cfg.loss)  # None for rpgan: it pairs (generation)

    def step(self, step: int, want_log: bool) -> dict[str, Tensor]:
        raise NotImplementedError

    def images_per_step(self) -> int:
        """Images this rank consumes per step."""
        return self.ctx.cfg.batch_size

    def extra_state(self) -> dict[str, Any]:
        """Per-rank state beyond the RNGs that a resume needs (CycleGAN's image pools)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def _d_phase(
        self,
        real_loss: Callable[[nn.Module], tuple[Tensor, Tensor]],
        fake_loss: Callable[[nn.Module], tuple[Tensor, Tensor]],
        want_log: bool,
    ) -> dict[str, Tensor]:
        """The D update of a one-D task: real, then fake, each forward followed by its own
        backward. ``real_loss(D)`` and ``fake_loss(D)`` return ``(loss, logits)``."""
        ctx = self.ctx
        self._train_d()
        ctx.opt_D.zero_grad(set_to_none=True)
        D_ddp = ctx.compiled(ctx.D_ddp["D"])
        with ctx.d_pass("D", last=False):
            with ctx.autocast:
                loss_real, real_logits = real_loss(D_ddp)
            loss_D = self._d_backward(loss_real.float())
        with ctx.autocast:
            loss_fake, fake_logits = fake_loss(D_ddp)
        loss_D = loss_D + self._d_backward(loss_fake.float())
        self.grad_norm_D = grad_norm(ctx.D["D"]) if want_log else None
        ctx.opt_D.step()
        return {
            "loss_D": loss_D,
            "D_real": real_logits.detach().float().mean(),
            "D_fake": fake_logits.detach().float().mean(),
        }

    def _d_backward(self, loss: Tensor) -> Tensor:
        loss.backward()
        return loss.detach()

    def _freeze_d(self) -> None:
        for D in self.ctx.D.values():
            D.requires_grad_(False)
        self.ctx.G.requires_grad_(True)

    def _train_d(self) -> None:
        self.ctx.G.requires_grad_(False)
        for D in self.ctx.D.values():
            D.requires_grad_(True)


def grad_norm(module: nn.Module) -> float:
    grads = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return torch.stack(grads).norm().item() if grads else 0.0


def grad_norm_all(modules) -> float:
    return float(np.sqrt(sum(grad_norm(m) ** 2 for m in modules)))


def norm_stats(d: float | None, g: float | None, device: torch.device) -> dict[str, Tensor]:
    """Gradient norms as stats (logged rows only; NaN marks "not measured this step")."""
    if d is None:
        return {}
    return {
        "grad_norm_D": torch.tensor(d, device=device),
        "grad_norm_G": torch.tensor(g, device=device),
    }
