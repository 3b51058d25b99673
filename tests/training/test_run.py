"""The train driver's checks, all before Ray starts."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from ganlib.config import DataConfig, Params
from ganlib.data.shards import write_shards
from ganlib.data.sources import open_source
from ganlib.errors import GanlibError
from ganlib.training.run import preflight


def project_with(shards: Path, tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir(parents=True)
    (tmp_path / "data" / "shards").symlink_to(shards)
    return tmp_path


def test_preflight_accepts_the_tiny_setup(digit_shards, tmp_path):
    params = Params.from_dict({"train": {"batch_size": 16, "num_workers": 2}})
    info = preflight(params, project_with(digit_shards, tmp_path), local=True)
    assert info["resolution"] == 32 and info["classes"] == [str(i) for i in range(10)]


def test_unsupported_resolution_is_refused(tmp_path):
    source = open_source(DataConfig(source="builtin:digits", resolution=48))
    write_shards(
        itertools.islice(source, 40), tmp_path / "shards", shard_size=20, val_fraction=0.1,
        classes=source.classes, progress=False,
    )  # fmt: skip
    params = Params.from_dict({"data": {"resolution": 48}, "train": {"batch_size": 4}})
    with pytest.raises(GanlibError, match="data.resolution: 48 is not supported by train.arch"):
        preflight(params, project_with(tmp_path / "shards", tmp_path / "p"), local=True)


def test_shards_of_other_data_params_are_refused(digit_shards, tmp_path):
    """The inpainting profile's data (32 px RGB photos) against stale 1-channel digit shards."""
    profile = {"data": {"source": "builtin:photos", "channels": 3}}  # as in params.yaml
    params = Params.from_dict({"task": "inpainting", "inpainting": profile})
    stale = r"the shards hold 32 px, 1 channel images, the data params say 32 px, 3 channels"
    with pytest.raises(GanlibError, match=stale + r" .*; run `dvc repro shard`"):
        preflight(params, project_with(digit_shards, tmp_path), local=True)


def test_conditional_needs_labels(tmp_path):
    source = open_source(DataConfig(source="builtin:photos", resolution=32, channels=3))
    write_shards(
        itertools.islice(source, 40), tmp_path / "shards", shard_size=20, val_fraction=0.1,
        classes=None, progress=False,
    )  # fmt: skip
    params = Params.from_dict(
        {"data": {"channels": 3}, "train": {"batch_size": 4, "conditional": True}}
    )
    with pytest.raises(GanlibError, match="train.conditional: true needs labelled data"):
        preflight(params, project_with(tmp_path / "shards", tmp_path / "p"), local=True)


def test_the_run_identity_covers_what_changes_training_only(digit_shards, tmp_path):
    """An evaluate-only key (``inpainting.eval_images``), the step count or the logging
    intervals keep the run (a re-run resumes it); a loss weight, a learning rate or the seed
    make another."""
    from ganlib.training.run import run_identity

    base = {"task": "inpainting", "inpainting": {"eval_images": 400}}
    same = [
        {"task": "inpainting", "inpainting": {"eval_images": 24}},
        {**base, "train": {"steps": 99, "log_every": 5, "ckpt_every": 7}},
        {**base, "eval": {"num_fake": 10}, "translation": {"eval_images": 3}},
    ]
    other = [
        {**base, "inpainting": {"adv_weight": 0.5}},
        {**base, "train": {"lr_g": 1e-3}},
        {**base, "seed": 1},
        {"task": "translation"},
    ]
    identity = run_identity(Params.from_dict(base), "data")
    assert all(run_identity(Params.from_dict(raw), "data") == identity for raw in same)
    assert all(run_identity(Params.from_dict(raw), "data") != identity for raw in other)
    assert run_identity(Params.from_dict(base), "other data") != identity


def test_changing_an_eval_only_key_resumes_the_run(photo_shards, tmp_path):
    """The loop resumes the checkpoint of a run whose only change is an evaluate-only key."""
    from ganlib.artifacts import load_checkpoint
    from ganlib.training.loop import RunSpec, train
    from ganlib.training.run import run_identity
    from ganlib.training.session import LocalSession

    def spec(steps: int, eval_images: int) -> RunSpec:
        params = Params.from_dict({
            "task": "inpainting",
            "inpainting": {"eval_images": eval_images, "gated": False, "fm_weight": 0.0},
            "train": {"width": 8, "batch_size": 8, "steps": steps, "ckpt_every": 2},
        })  # fmt: skip
        return RunSpec(
            train=params.train, seed=0, shards=str(photo_shards), task="inpainting",
            task_cfg=params.inpainting, identity=run_identity(params, "data"),
        )  # fmt: skip

    session = LocalSession(tmp_path, device="cpu")
    train(spec(2, eval_images=400), session)
    train(spec(4, eval_images=24), session)
    assert load_checkpoint(sorted(tmp_path.glob("checkpoint_*"))[-1])["resumed_from"] == [2]
