"""The fast path on the CPU (ganlib.training.fastpath): bf16 autocast, channels_last and
torch.compile run every task; fallbacks are one line, or an error under ``fallback: error``.
The CUDA side of the same checks is tests/cuda."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ganlib.config import TrainConfig
from ganlib.errors import ConfigError, GanlibError
from ganlib.training import fastpath
from tests.cases import STEPS, make_step, run_steps
from tests.training.test_loop import run, spec_for, states_equal


@pytest.mark.parametrize("variant", list(STEPS))
def test_a_bf16_step_of_every_task_is_finite_with_fp32_weights(variant):
    step, _ = make_step(variant, precision="bf16")
    stats = run_steps(step, 1)
    assert all(math.isfinite(v) for row in stats for v in row.values()), stats
    ctx = step.ctx
    for model in (ctx.G, *ctx.D.values()):  # master weights and optimiser state stay fp32
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    moments = [s["exp_avg"] for s in ctx.opt_G.state.values()]
    assert moments and {m.dtype for m in moments} == {torch.float32}


def test_bf16_really_autocasts_the_forwards_and_keeps_penalties_fp32():
    step, _ = make_step("dcgan", precision="bf16")
    seen: list[torch.dtype] = []
    hook = step.ctx.D["D"].register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    run_steps(step, 1)
    hook.remove()
    # D forwards: real and fake (bf16, autocast), R1 (fp32, eager), G phase (bf16)
    assert seen == [torch.bfloat16, torch.bfloat16, torch.float32, torch.bfloat16]


@pytest.mark.parametrize("variant", ["dcgan", "inpainting"])
def test_channels_last_matches_the_default_layout(variant):
    plain = run_steps(make_step(variant)[0], 2)
    step, _ = make_step(variant, channels_last=True)
    nhwc = run_steps(step, 2)
    weight = next(p for p in step.ctx.G.parameters() if p.dim() == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(plain, nhwc, strict=True):
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-4), k


@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile's graph capture (dynamo + AOTAutograd) without inductor's C++ build, which
    takes minutes on 2 cores; benchmarks/throughput.py measures inductor."""
    monkeypatch.setattr(fastpath, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_steps_match_eager_with_penalties_eager(aot_eager):
    """DCGAN with R1 every step: G and D's real and fake forwards compiled, R1's eager."""
    eager = run_steps(make_step("dcgan")[0], 2)
    step, _ = make_step("dcgan", compile=True)
    compiled = run_steps(step, 2)
    for a, b in zip(eager, compiled, strict=True):
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), k
    report = step.ctx.fast.compile_report()
    assert report["graphs"] > 0 and report["graph_breaks"] == 0
    assert step.ctx.fast.compile and step.ctx.fast.notes == []


def failing_backend(gm, example_inputs):
    raise RuntimeError("no compiler here")


def test_a_failed_compile_says_so_in_one_line_and_runs_eagerly(monkeypatch, capfd):
    monkeypatch.setattr(fastpath, "COMPILE_BACKEND", failing_backend)
    torch._dynamo.reset()
    eager = run_steps(make_step("dcgan")[0], 1)
    step, _ = make_step("dcgan", compile=True)
    assert run_steps(step, 1) == eager
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "train.compile" in line]
    assert len(lines) == 1 and "falling back to eager" in lines[0], err
    assert step.ctx.fast.record()["compile"] is False
    assert step.ctx.fast.record()["fallbacks"] == [lines[0].removeprefix("warning: ")]


def test_a_failed_compile_is_an_error_when_asked_for(monkeypatch):
    monkeypatch.setattr(fastpath, "COMPILE_BACKEND", failing_backend)
    torch._dynamo.reset()
    step, _ = make_step("dcgan", compile=True, fallback="error")
    with pytest.raises(GanlibError, match=r"train.compile: torch.compile failed .*fallback: error"):
        run_steps(step, 1)


def test_bf16_where_the_device_has_none_falls_back_or_fails(monkeypatch, capfd):
    """A CUDA device without bf16 (e.g. a T4): asked on a CPU process by faking the device's
    answers, as nothing else can reach that branch here."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(fastpath, "_set_tf32", lambda on: None)
    cuda = torch.device("cuda", 0)
    fast = fastpath.resolve(TrainConfig(precision="bf16"), cuda)
    assert fast.precision == "fp32"
    err = capfd.readouterr().err
    assert "bf16 is not supported by cuda:0 (Tesla T4); falling back to fp32" in err
    with pytest.raises(GanlibError, match="bf16 is not supported by cuda:0"):
        fastpath.resolve(TrainConfig(precision="bf16", fallback="error"), cuda)


def test_the_run_records_what_ran_and_resumes_bit_exactly_in_bf16_channels_last(
    digit_shards, tmp_path
):
    fast = {"precision": "bf16", "channels_last": True}
    straight = run(spec_for(digit_shards, steps=6, **fast), tmp_path / "a")
    run(spec_for(digit_shards, steps=3, **fast), tmp_path / "b")
    resumed = run(spec_for(digit_shards, steps=6, **fast), tmp_path / "b")
    for name in ("G", "D", "G_ema"):
        assert states_equal(straight[name].state_dict(), resumed[name].state_dict()), name
    from ganlib.artifacts import load_checkpoint

    state = load_checkpoint(sorted((tmp_path / "b").glob("checkpoint_*"))[-1])
    runtime = state["runtime"]
    assert (runtime["precision"], runtime["channels_last"], runtime["device"]) == (
        "bf16", True, "cpu"
    )  # fmt: skip
    assert runtime["backend"] == "none" and runtime["world_size"] == 1
    # stored weights are plain NCHW whatever the training layout
    assert all(t.is_contiguous() for t in state["G"].values())


def test_new_fast_path_keys_keep_old_runs_identity():
    from ganlib.config import Params

    base = Params()
    same = dataclasses.replace(base, train=dataclasses.replace(base.train, fallback="error"))
    other = dataclasses.replace(base, train=dataclasses.replace(base.train, compile=True))
    assert "compile" not in base.training_identity()["train"]
    assert same.training_identity() == base.training_identity()
    assert other.training_identity() != base.training_identity()
    with pytest.raises(ConfigError, match="train.fallback: must be one of warn, error"):
        Params.from_dict({"train": {"fallback": "maybe"}})
