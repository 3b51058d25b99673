"""Shared fixtures: tiny real shards, a real local Ray, temporary copies of the project."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ganlib.config import DataConfig
from ganlib.data.shards import write_shards
from ganlib.data.sources import open_source
from tests.cases import make_digit_shards  # noqa: F401  (a fixture's helper; benchmarks use it)

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_OUTPUTS = ("data", "featurize", "tune", "train", "eval", "register", "models")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def make_photo_shards(out: Path, source: str, n: int = 96, resolution: int = 32) -> Path:
    """The first ``n`` patches of ``builtin:photos`` (or ``builtin:photos2art``, A/B pairs),
    RGB at ``resolution``, as shards under ``out``."""
    cfg = DataConfig(source=source, resolution=resolution, channels=3)
    src = open_source(cfg)
    write_shards(
        itertools.islice(src, n),
        out,
        shard_size=64,
        val_fraction=0.2,
        classes=src.classes,
        total=n,
        progress=False,
    )
    return out


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.cuda`` tests (tests/cuda) need a CUDA device; elsewhere they skip."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (benchmarks/device_check.sh runs them)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def photo_shards(tmp_path_factory) -> Path:
    """96 photo patches at 32x32 RGB: inpainting tests."""
    return make_photo_shards(tmp_path_factory.mktemp("photos") / "shards", "builtin:photos")


@pytest.fixture(scope="session")
def pair_shards(tmp_path_factory) -> Path:
    """96 (photo, cartoon) pairs at 32x32 RGB: translation tests."""
    return make_photo_shards(tmp_path_factory.mktemp("pairs") / "shards", "builtin:photos2art")


@pytest.fixture(scope="session")
def digit_shards(tmp_path_factory) -> Path:
    """256 digits as shards (about 230 train samples): small enough for training tests."""
    return make_digit_shards(tmp_path_factory.mktemp("shards") / "shards")


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray with 2 CPUs for the tests of one module."""
    import ray

    ray.init(num_cpus=2, logging_level="WARNING")
    yield ray
    ray.shutdown()


def copy_project(dst: Path) -> Path:
    """The project's tracked and unignored files, copied into a fresh git repo at ``dst``."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        if rel.split("/")[0] in PIPELINE_OUTPUTS:
            continue  # this checkout's results: a copy starts without them
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    return dst
