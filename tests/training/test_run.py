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
    params = Params.from_dict({"train": {"batch_size": 4}})
    with pytest.raises(GanlibError, match="data.resolution: 48 is not supported by train.arch"):
        preflight(params, project_with(tmp_path / "shards", tmp_path / "p"), local=True)


def test_conditional_needs_labels(tmp_path):
    source = open_source(DataConfig(source="builtin:photos", resolution=32, channels=3))
    write_shards(
        itertools.islice(source, 40), tmp_path / "shards", shard_size=20, val_fraction=0.1,
        classes=None, progress=False,
    )  # fmt: skip
    params = Params.from_dict({"train": {"batch_size": 4, "conditional": True}})
    with pytest.raises(GanlibError, match="train.conditional: true needs labelled data"):
        preflight(params, project_with(tmp_path / "shards", tmp_path / "p"), local=True)
