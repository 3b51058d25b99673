"""The training loop in a plain process: phases, exact resume, divergence, exports."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ganlib.artifacts import export_generator, load_checkpoint, load_generator
from ganlib.config import R3ganConfig, ScheduleConfig, TrainConfig
from ganlib.errors import GanlibError
from ganlib.training.loop import RunSpec, train
from ganlib.training.schedule import cosine
from ganlib.training.session import LocalSession

TINY = TrainConfig(
    z_dim=16, width=8, batch_size=16, steps=6, ckpt_every=3, log_every=2, sample_every=6
)


def spec_for(shards, **train_overrides) -> RunSpec:
    cfg = dataclasses.replace(TINY, **train_overrides)
    return RunSpec(train=cfg, seed=3, shards=str(shards), identity="test")


def run(spec: RunSpec, storage) -> dict:
    return train(spec, LocalSession(storage, device="cpu"))


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trains_logs_and_checkpoints(digit_shards, tmp_path):
    out = run(spec_for(digit_shards), tmp_path)
    assert out["step"] == 6 and out["diverged_at"] is None
    state = load_checkpoint(sorted(tmp_path.glob("checkpoint_*"))[-1])
    assert state["step"] == 6
    assert [row["step"] for row in state["history"]] == [2, 4, 6]
    for row in state["history"]:
        assert all(torch.isfinite(torch.tensor(row[k])) for k in ("loss_D", "loss_G"))
    # the checkpoint holds everything needed to continue, as data
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "rng", "epoch", "batch", "model_config"):
        assert key in state
    assert len(list(tmp_path.glob("checkpoint_*"))) == 2  # the last two are kept


@pytest.mark.parametrize("loader_workers", [0, 2])
def test_exact_resume_is_bit_identical(digit_shards, tmp_path, loader_workers):
    # 14 steps of 16 from ~230 samples cross an epoch boundary (14 batches per epoch).
    straight = run(spec_for(digit_shards, steps=17, loader_workers=loader_workers), tmp_path / "a")
    run(spec_for(digit_shards, steps=9, loader_workers=loader_workers), tmp_path / "b")
    resumed = run(spec_for(digit_shards, steps=17, loader_workers=loader_workers), tmp_path / "b")
    for name in ("G", "D", "G_ema"):
        assert states_equal(straight[name].state_dict(), resumed[name].state_dict()), name
    a = load_checkpoint(sorted((tmp_path / "a").glob("checkpoint_*"))[-1])
    b = load_checkpoint(sorted((tmp_path / "b").glob("checkpoint_*"))[-1])
    assert b["resumed_from"] == [9] and a["resumed_from"] == []
    # the same numbers at every logged step (b also logged its stop at step 9)
    by_step = {r["step"]: r["loss_D"] for r in b["history"]}
    assert all(by_step[r["step"]] == r["loss_D"] for r in a["history"])


def test_other_identity_starts_over(digit_shards, tmp_path):
    run(spec_for(digit_shards, steps=3), tmp_path)
    other = dataclasses.replace(spec_for(digit_shards, steps=3), identity="another")
    run(other, tmp_path)
    state = load_checkpoint(sorted(tmp_path.glob("checkpoint_*"))[-1])
    assert state["identity"] == "another" and state["resumed_from"] == []


def test_ema_half_life_ramps_up_from_the_first_step(digit_shards, tmp_path):
    # Step 1 has seen no images yet: G_ema is G; later steps average (G_ema lags G).
    one = run(spec_for(digit_shards, steps=1, ema_kimg=10.0), tmp_path / "one")
    assert states_equal(one["G"].state_dict(), one["G_ema"].state_dict())
    three = run(spec_for(digit_shards, steps=3, ema_kimg=10.0), tmp_path / "three")
    assert not states_equal(three["G"].state_dict(), three["G_ema"].state_dict())


def test_fewer_steps_than_trained_start_over(digit_shards, tmp_path):
    run(spec_for(digit_shards, steps=6), tmp_path / "long")
    shorter = run(spec_for(digit_shards, steps=3), tmp_path / "long")
    fresh = run(spec_for(digit_shards, steps=3), tmp_path / "fresh")
    assert shorter["step"] == 3
    assert states_equal(shorter["G_ema"].state_dict(), fresh["G_ema"].state_dict())
    state = load_checkpoint(sorted((tmp_path / "long").glob("checkpoint_*"))[-1])
    assert state["step"] == 3 and state["resumed_from"] == []


def test_divergence_stops_without_checkpointing_garbage(digit_shards, tmp_path):
    # G turns NaN in step 5's update (not a logged step: its weights are not checked), so
    # step 6's losses are NaN; the checkpoints (step 3) hold finite weights.
    out = run(dataclasses.replace(spec_for(digit_shards, steps=40), poison_at_step=5), tmp_path)
    assert out["diverged_at"] == 6 and out["step"] == 6
    for ckpt in tmp_path.glob("checkpoint_*"):
        state = load_checkpoint(ckpt)
        assert state["step"] < out["diverged_at"]
        assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())


def test_a_truncated_latest_checkpoint_resumes_from_the_one_before(digit_shards, tmp_path, capfd):
    run(spec_for(digit_shards, steps=6), tmp_path)  # checkpoints at 3 and 6
    latest = sorted(tmp_path.glob("checkpoint_*"))[-1] / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    out = run(spec_for(digit_shards, steps=9), tmp_path)
    assert out["step"] == 9
    state = load_checkpoint(sorted(tmp_path.glob("checkpoint_*"))[-1])
    assert state["step"] == 9 and state["resumed_from"] == [3]
    assert "skipping an unreadable checkpoint" in capfd.readouterr().err


def test_weights_that_turn_nan_stop_training_at_that_step(digit_shards, tmp_path, monkeypatch):
    """The losses of step 2 are finite (computed before its update) and the update leaves G
    NaN: the loop stops at step 2 and no checkpoint holds the NaN weights."""
    from ganlib.training import loop

    def poisoned(cfg, G, D):
        opt_G, opt_D = loop_optimizers(cfg, G, D)
        real_step, calls = opt_G.step, []

        def step(*args, **kwargs):
            real_step(*args, **kwargs)
            calls.append(1)
            if len(calls) == 2:
                with torch.no_grad():
                    next(G.parameters()).fill_(float("nan"))

        opt_G.step = step
        return opt_G, opt_D

    loop_optimizers = loop.optimizers
    monkeypatch.setattr(loop, "optimizers", poisoned)
    out = run(spec_for(digit_shards, steps=4, ckpt_every=1), tmp_path)
    assert (out["diverged_at"], out["step"], out["last_good_step"]) == (2, 2, 1)
    assert [load_checkpoint(c)["step"] for c in tmp_path.glob("checkpoint_*")] == [1]


def test_non_finite_weights_are_never_exported_or_loaded(digit_shards, tmp_path):
    run(spec_for(digit_shards, steps=3), tmp_path / "run")
    state = load_checkpoint(sorted((tmp_path / "run").glob("checkpoint_*"))[-1])
    export_generator(state, tmp_path / "good")
    bad = {**state, "G_ema": {k: v.clone() for k, v in state["G_ema"].items()}}
    name = next(k for k, v in bad["G_ema"].items() if v.is_floating_point())
    bad["G_ema"][name][...] = float("inf")
    with pytest.raises(
        GanlibError, match=f"step-3 checkpoint's G_ema: 1 tensors hold NaN/inf .*{name}"
    ):
        export_generator(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    torch.save(bad["G_ema"], tmp_path / "good" / "generator.pt")  # weights swapped after export
    with pytest.raises(GanlibError, match="generator.pt: 1 tensors hold NaN/inf"):
        load_generator(tmp_path / "good")


@pytest.mark.parametrize(
    "overrides",
    [
        {"arch": "resnet", "loss": "hinge", "conditional": True},
        {"loss": "lsgan", "augment": "color,translation,cutout", "ema_kimg": 1.0},
        {"r1_gamma": 1.0, "r1_every": 2},
        {"arch": "resnet", "loss": "wgan", "gp_weight": 10.0, "d_steps": 2},
    ],
)
def test_variants_train(digit_shards, tmp_path, overrides):
    out = run(spec_for(digit_shards, steps=4, **overrides), tmp_path)
    assert out["step"] == 4 and out["diverged_at"] is None
    state = load_checkpoint(sorted(tmp_path.glob("checkpoint_*"))[-1])
    if overrides.get("r1_gamma"):
        assert state["history"][-1]["r1"] > 0
    if overrides.get("gp_weight"):
        assert state["history"][-1]["gp"] > 0
    if overrides.get("conditional"):
        assert state["model_config"]["num_classes"] == 10


def test_exported_generator_round_trips(digit_shards, tmp_path):
    run(spec_for(digit_shards, steps=3, conditional=True), tmp_path / "run")
    state = load_checkpoint(sorted((tmp_path / "run").glob("checkpoint_*"))[-1])
    export_generator(state, tmp_path / "gen")
    G, meta = load_generator(tmp_path / "gen")
    assert meta["classes"] == [str(i) for i in range(10)]
    assert states_equal(G.state_dict(), state["G_ema"])
    z = torch.randn(5, 16)
    images = G(z, torch.arange(5))
    assert images.shape == (5, 1, 32, 32) and images.abs().max() <= 1


class StopAfter(LocalSession):
    """A session whose stop request is seen at step ``n`` (as a signal would set it)."""

    def __init__(self, storage, n: int):
        super().__init__(storage, device="cpu")
        self.calls, self.n = 0, n

    def stop_requested(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


def test_a_stop_request_checkpoints_the_next_step_and_resumes_exactly(digit_shards, tmp_path):
    straight = run(spec_for(digit_shards, steps=9), tmp_path / "a")
    out = train(spec_for(digit_shards, steps=9), StopAfter(tmp_path / "b", 4))
    assert out["interrupted_at"] == 5 and out["diverged_at"] is None
    newest = load_checkpoint(sorted((tmp_path / "b").glob("checkpoint_*"))[-1])
    assert newest["step"] == 5  # not a multiple of ckpt_every: the stop's own checkpoint
    resumed = run(spec_for(digit_shards, steps=9), tmp_path / "b")
    assert resumed["interrupted_at"] is None
    for name in ("G", "D", "G_ema"):
        assert states_equal(straight[name].state_dict(), resumed[name].state_dict()), name


R3 = {
    "arch": "r3gan", "loss": "rpgan", "r1_gamma": 0.05, "r2": True, "r1_every": 1,
    "beta1": 0.0, "augment": "xflip,translation,cutout,color",
    "schedule": ScheduleConfig(
        burn_in_kimg=0.2, lr=(2e-4, 5e-5), beta2=(0.9, 0.99), gamma=(0.05, 0.005),
        ema_kimg=(0.0, 0.1), augment_p=(0.0, 0.5),
    ),
}  # fmt: skip


def test_r3gan_with_rpgan_r1_r2_and_schedules_resumes_bit_exactly(digit_shards, tmp_path):
    """R3GAN's recipe on a tiny plan: the scheduled values follow the images seen (history
    rows), and N + M steps equal N, stop, resume, M, bit for bit."""
    family = R3ganConfig(widths=(16, 16, 8, 8), blocks=1)

    def spec(steps: int) -> RunSpec:
        return dataclasses.replace(spec_for(digit_shards, steps=steps, **R3), task_cfg=family)

    straight = run(spec(8), tmp_path / "a")
    run(spec(4), tmp_path / "b")
    resumed = run(spec(8), tmp_path / "b")
    for name in ("G", "D", "G_ema"):
        assert states_equal(straight[name].state_dict(), resumed[name].state_dict()), name
    history = load_checkpoint(sorted((tmp_path / "a").glob("checkpoint_*"))[-1])["history"]
    # 32 real images per step (16 for D, 16 fresh for G): step s starts at 0.032 (s - 1) kimg
    for row in history:
        kimg = 0.032 * (row["step"] - 1)
        assert row["lr"] == pytest.approx(cosine(kimg, 2e-4, 5e-5, 0.2))
        assert row["gamma"] == pytest.approx(cosine(kimg, 0.05, 0.005, 0.2))
        assert row["r1"] > 0 and row["r2"] > 0
    assert history[-1]["augment_p"] == 0.5 and history[-1]["beta2"] == 0.99  # past burn-in


def test_schedule_cosine():
    assert cosine(0, 2.0, 1.0, 10) == 2.0 and cosine(10, 2.0, 1.0, 10) == 1.0
    assert cosine(5, 2.0, 1.0, 10) == pytest.approx(1.5)  # half way: the mean
    assert cosine(50, 2.0, 1.0, 10) == 1.0  # held after the burn-in
