"""The CUDA path (``pytest -m cuda``; skipped without a CUDA device): a bf16 step of every task
is finite; channels_last and compiled forwards equal eager within :data:`TOL`; a resume with
deterministic algorithms is bit-exact; the loop runs under NCCL DDP at world size 1.

Run on a bare CUDA machine by ``benchmarks/device_check.sh``; without pytest, ``python -m
tests.cuda.check OUT.json`` runs the same functions. Nothing here was run in this project's CI
(no GPU): see README.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import torch

from ganlib.config import R3ganConfig, TrainConfig
from ganlib.models import build_gan
from ganlib.training import fastpath
from ganlib.training.loop import RunSpec, train
from ganlib.training.session import LocalSession, ProcessGroupSession
from tests.cases import STEPS, make_digit_shards, make_step, run_steps

try:  # the plain-script runner (tests/cuda/check.py) works without pytest
    import pytest

    pytestmark = pytest.mark.cuda
    variants = pytest.mark.parametrize("variant", list(STEPS))
except ImportError:

    def variants(fn):
        return fn


# "cuda"; GANLIB_CHECK_DEVICE=cpu runs the same checks' logic on a CPU (gloo for NCCL)
DEVICE = os.environ.get("GANLIB_CHECK_DEVICE", "cuda")
CUDA = DEVICE == "cuda"
# Largest |difference| / largest |eager value| allowed: fp32 with TF32 off (kernels differ in
# summation order only), and bf16 compiled against bf16 eager (different fusions round
# differently at bf16's 8 bits of mantissa).
TOL = {"fp32": 1e-3, "bf16": 3e-2}
TINY = TrainConfig(z_dim=16, width=8, batch_size=16, steps=6, ckpt_every=3, log_every=2,
                   sample_every=6, num_workers=1, device=DEVICE)  # fmt: skip


@variants
def test_a_bf16_step_of_every_task_is_finite(variant):
    step, _ = make_step(variant, device=DEVICE, precision="bf16")
    stats = run_steps(step, 2)
    assert all(math.isfinite(v) for row in stats for v in row.values()), stats
    assert step.ctx.fast.precision == "bf16" and step.ctx.fast.notes == []
    for model in (step.ctx.G, *step.ctx.D.values()):
        assert {p.dtype for p in model.parameters()} == {torch.float32}


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-12)).item()


def test_channels_last_and_compiled_forwards_equal_eager():
    fastpath._set_tf32(False)
    errors = {}
    for arch, extra in (("dcgan", {"width": 16}), ("r3gan", {"widths": [32, 32, 16, 16]})):
        torch.manual_seed(0)
        G, D = build_gan(arch, z_dim=16, resolution=32, channels=3, num_classes=0, **extra)
        G, D = G.to(DEVICE).train(), D.to(DEVICE).train()
        z = torch.randn(8, 16, device=DEVICE)
        for precision in ("fp32", "bf16"):
            cast = torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=precision == "bf16")
            with torch.no_grad(), cast:
                eager = (G(z), D(G(z)))
                G_cl = G.to(memory_format=torch.channels_last)
                D_cl = D.to(memory_format=torch.channels_last)
                cl = (G_cl(z), D_cl(G_cl(z)))
                G_c, D_c = torch.compile(G_cl), torch.compile(D_cl)
                compiled = (G_c(z), D_c(G_c(z)))
                G.to(memory_format=torch.contiguous_format)
                D.to(memory_format=torch.contiguous_format)
            for name, out in (("channels_last", cl), ("compile", compiled)):
                for part, a, b in zip(("G", "D"), out, eager, strict=True):
                    errors[f"{arch}/{precision}/{name}/{part}"] = relative_error(a, b)
    bad = {k: v for k, v in errors.items() if v > TOL[k.split("/")[1]]}
    assert not bad, (bad, TOL)


def test_a_compiled_bf16_step_runs_without_graph_breaks():
    torch._dynamo.reset()
    step, _ = make_step("dcgan", device=DEVICE, precision="bf16", channels_last=True,
                        compile=True)  # fmt: skip
    stats = run_steps(step, 3)
    assert all(math.isfinite(v) for row in stats for v in row.values())
    report = step.ctx.fast.compile_report()
    assert step.ctx.fast.compile and report["graph_breaks"] == 0, (report, step.ctx.fast.notes)


def _states_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_exact_resume_on_cuda_with_deterministic_algorithms(tmp_path: Path):
    shards = make_digit_shards(tmp_path / "shards")
    for cfg in (
        dataclasses.replace(TINY, deterministic=True),
        dataclasses.replace(TINY, deterministic=True, precision="bf16", channels_last=True),
    ):
        spec = RunSpec(train=cfg, seed=3, shards=str(shards), identity="cuda")
        tag = cfg.precision
        straight = train(spec, LocalSession(tmp_path / f"a-{tag}", device=DEVICE))
        half = dataclasses.replace(spec, train=dataclasses.replace(cfg, steps=3))
        train(half, LocalSession(tmp_path / f"b-{tag}", device=DEVICE))
        resumed = train(spec, LocalSession(tmp_path / f"b-{tag}", device=DEVICE))
        for name in ("G", "D", "G_ema"):
            a, b = straight[name].state_dict(), resumed[name].state_dict()
            assert _states_equal(a, b), (tag, name)
    torch.use_deterministic_algorithms(False)


def test_nccl_ddp_at_world_size_1(tmp_path: Path):
    shards = make_digit_shards(tmp_path / "shards")
    spec = RunSpec(train=dataclasses.replace(TINY, steps=3, ckpt_every=3, arch="r3gan",
                                             loss="rpgan", r1_gamma=1.0, r2=True, r1_every=1),
                   seed=0, shards=str(shards), identity="nccl", task_cfg=R3ganConfig())  # fmt: skip
    session = ProcessGroupSession(tmp_path / "run", device=DEVICE)
    try:
        out = train(spec, session)
        runtime = session.load_latest()["runtime"]
    finally:
        session.close()
    assert out["step"] == 3 and out["diverged_at"] is None
    assert (runtime["backend"], runtime["world_size"]) == ("nccl" if CUDA else "gloo", 1), runtime
    assert runtime["fused_adam"] == CUDA and runtime["device"].startswith(DEVICE)
