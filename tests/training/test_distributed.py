"""Training under a real local Ray: DDP consistency, exact resume, surviving a worker crash."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

import pytest
import ray.cloudpickle
import torch

from ganlib.artifacts import load_checkpoint
from ganlib.config import TrainConfig
from ganlib.errors import GanlibError
from ganlib.training.distributed import RayTrainSession, fit
from ganlib.training.loop import RunSpec, train
from ganlib.training.session import LocalSession

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests
# Ray Train registers reported checkpoints when its controller polls the workers (every 2 s by
# default); poll often so that a crash a few steps after a report finds it registered. Set
# before the module's Ray starts, so the controller inherits it.
os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.1"

TINY = TrainConfig(
    z_dim=16,
    width=8,
    batch_size=16,
    steps=6,
    ckpt_every=3,
    log_every=3,
    sample_every=6,
    num_workers=1,
    max_failures=0,
)


def spec_for(shards, **overrides) -> RunSpec:
    return RunSpec(
        train=dataclasses.replace(TINY, **overrides), seed=5, shards=str(shards), identity="t"
    )


def _save_rank_params(config: dict) -> None:
    out = train(config["spec"], RayTrainSession())
    rank = ray.train.get_context().get_world_rank()
    params = {f"{m}.{k}": v for m in ("G", "D") for k, v in out[m].named_parameters()}
    torch.save({k: v.detach().cpu() for k, v in params.items()}, f"{config['dir']}/rank{rank}.pt")


R3GAN_RECIPE = {
    "arch": "r3gan", "loss": "rpgan", "r1_gamma": 0.05, "r2": True, "r1_every": 1,
    "augment": "xflip,translation",
}  # fmt: skip


@pytest.mark.parametrize("recipe", ["dcgan-r1", "r3gan-rpgan-r1-r2"])
def test_ddp_keeps_ranks_identical(ray_local, digit_shards, tmp_path, recipe):
    """Two DDP ranks end with the same weights: every D forward is followed by its backward
    (R1 with its own forward; rpgan's pairing with R1 and R2 in one forward on [real,
    fake]), so DDP reduces the same gradients on both."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ganlib.config import R3ganConfig

    spec = spec_for(digit_shards, num_workers=2, steps=5, r1_gamma=1.0, r1_every=2)
    if recipe.startswith("r3gan"):
        spec = dataclasses.replace(
            spec_for(digit_shards, num_workers=2, steps=4, **R3GAN_RECIPE),
            task_cfg=R3ganConfig(widths=(16, 16, 8, 8), blocks=1),
        )
    TorchTrainer(
        _save_rank_params,
        train_loop_config={"spec": spec, "dir": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(storage_path=str(tmp_path / "ray"), name="ddp"),
    ).fit()
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys() and len(rank0) > 10
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    if recipe.startswith("r3gan"):  # fix-up starts biases and last convs at 0: all moved
        zero = [k for k, v in rank0.items() if k.startswith("G.") and not v.any()]
        assert not zero, zero
        return
    # and training moved them: G's first weight is no longer its initial value
    torch.manual_seed(5)
    from ganlib.models import build_gan

    G0, _ = build_gan("dcgan", z_dim=16, resolution=32, channels=1, width=8, num_classes=0)
    first = next(iter(G0.named_parameters()))
    assert not torch.equal(first[1], rank0[f"G.{first[0]}"])


def test_exact_resume_under_ray(ray_local, digit_shards, tmp_path):
    """8 steps in a plain process and 4 + 4 steps under Ray Train, stopped and resumed from its
    storage, give bit-identical weights (a Ray Train worker runs the same loop)."""
    train(spec_for(digit_shards, steps=8), LocalSession(tmp_path / "a", device="cpu"))
    straight = LocalSession(tmp_path / "a").load_latest()
    fit(spec_for(digit_shards, steps=4), storage=tmp_path / "b", name="run")
    resumed, _ = fit(spec_for(digit_shards, steps=8), storage=tmp_path / "b", name="run")
    assert resumed["resumed_from"] == [4]
    for name in ("G", "D", "G_ema"):
        a, b = straight[name], resumed[name]
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_worker_crash_resumes_from_last_checkpoint(ray_local, digit_shards, tmp_path):
    marker = tmp_path / "crashed"
    spec = dataclasses.replace(
        spec_for(digit_shards, num_workers=2, steps=12, ckpt_every=2, max_failures=1),
        fail_at_step=11,
        fail_marker=str(marker),
    )
    state, _ = fit(spec, storage=tmp_path / "ray", name="crash")
    assert marker.read_text() == "11"  # the last rank really died at step 11
    assert state["step"] == 12
    # restarted from a checkpoint (the last one the controller had registered), not step 0
    assert len(state["resumed_from"]) == 1
    assert state["resumed_from"][0] in (4, 6, 8, 10)
    steps = [row["step"] for row in state["history"]]
    assert steps == sorted(set(steps)) and steps[-1] == 12


def test_crashes_beyond_max_failures_fail_cleanly(ray_local, digit_shards, tmp_path):
    spec = dataclasses.replace(
        spec_for(digit_shards, steps=4, max_failures=0),
        fail_at_step=2,
        fail_marker=str(tmp_path / "crashed"),
    )
    with pytest.raises(GanlibError, match="training failed after 0 restarts"):
        fit(spec, storage=Path(tmp_path / "ray"), name="fail")


def test_a_truncated_latest_checkpoint_resumes_from_the_one_before(
    ray_local, digit_shards, tmp_path, capfd
):
    """Ray hands the workers the newest checkpoint of its snapshot and refuses to start when
    one it names is gone. A cut-short newest one is moved aside and the one before is used; a
    checkpoint deleted by hand is dropped from the snapshot, an unrecorded one removed; with
    none readable the run starts over."""
    fit(spec_for(digit_shards, steps=6), storage=tmp_path, name="cut")  # checkpoints at 3, 6
    run_dir = tmp_path / "cut"
    older, latest = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())
    (latest / "checkpoint.pt").write_bytes((latest / "checkpoint.pt").read_bytes()[:1000])
    state, _ = fit(spec_for(digit_shards, steps=9), storage=tmp_path, name="cut")
    assert state["step"] == 9 and state["resumed_from"] == [3]
    assert (run_dir / f"bad-{latest.name}").is_dir() and not latest.exists()
    assert f"moved to bad-{latest.name}, resuming before it" in capfd.readouterr().err
    snapshot = (run_dir / "checkpoint_manager_snapshot.json").read_text()
    assert latest.name not in snapshot

    # by hand: the newest deleted (Ray alone would refuse the run directory), the other one
    # spoilt, and an orphan (a kill -9's unrecorded checkpoint): nothing left, start over
    six, nine = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())
    shutil.rmtree(nine)
    (six / "checkpoint.pt").write_bytes(b"not a checkpoint")
    shutil.copytree(six, run_dir / "checkpoint_orphan")
    state, _ = fit(spec_for(digit_shards, steps=3), storage=tmp_path, name="cut")
    assert state["step"] == 3 and state["resumed_from"] == []
    err = capfd.readouterr().err
    assert "checkpoint gone; dropped" in err and f"moved to bad-{six.name}" in err
    assert "checkpoint_orphan: not in Ray's record of the run" in err
    assert "no checkpoint left; the run starts over" in err


def test_checkpoints_and_shards_on_s3_resume_by_name(ray_local, digit_shards, s3, tmp_path):
    """Ray Train's storage on a real S3 server (moto) and the shards read from there: a run
    resumes by name from its S3 checkpoints; a rank that cannot read the shards says so."""
    from ganlib import storage
    from ganlib.data.publish import publish_shards
    from ganlib.training.distributed import RAY_SNAPSHOT

    root = s3.url(s3.bucket("ray-train") + "/project")
    url = publish_shards(digit_shards, root)["url"]
    runs = storage.join(root, "runs")
    fit(spec_for(url, steps=3), storage=runs, name="s3run")
    state, _ = fit(spec_for(url, steps=6), storage=runs, name="s3run")
    assert state["step"] == 6 and state["resumed_from"] == [3]
    assert storage.file_type(storage.join(runs, "s3run", RAY_SNAPSHOT)).name == "File"
    # A rank that cannot read them raises this in its process, which the driver's line
    # carries as "rank R: <message>" (test_a_workers_own_error_is_the_stages_line); checked
    # here in one process, without another Ray run.
    gone = storage.join(root, "shards", "0" * 64)
    with pytest.raises(GanlibError, match=r"cannot read the shards the driver checked: .*000/"):
        train(spec_for(gone), LocalSession(tmp_path, device="cpu"))


def test_a_workers_own_error_is_the_stages_line(ray_local, digit_shards, tmp_path):
    spec = dataclasses.replace(spec_for(digit_shards), probe_dir=str(tmp_path / "no-extractor"))
    with pytest.raises(GanlibError, match=r"after 0 restarts: rank 0: .*no-extractor") as err:
        fit(spec, storage=tmp_path, name="probe")
    assert "Training failed due to worker errors" not in str(err.value)


def test_divergence_after_a_checkpoint_names_its_step_and_the_last_good_one(
    ray_local, digit_shards, tmp_path
):
    """A checkpoint every step, G's weights NaN in step 3's update: the run stops at step 3
    with the divergence line (not "produced no checkpoint", not a restart loop), and the
    newest checkpoint is step 2's, finite."""
    spec = spec_for(digit_shards, ckpt_every=1, max_failures=2)
    spec = dataclasses.replace(spec, poison_at_step=3)
    diverged = r"training diverged: .* at step 3; last good checkpoint: "
    with pytest.raises(GanlibError, match=diverged) as err:
        fit(spec, storage=tmp_path, name="nan")
    newest = Path(str(err.value).split("last good checkpoint: ")[1].split(";")[0])
    state = load_checkpoint(newest)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())
