"""Shared fixtures: tiny real shards, a real local Ray, temporary copies of the project."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """A real S3-compatible server (moto's) on loopback, as a test sees it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint  # host:port
        # What every node needs, the standard way (pyarrow's from_uri, boto3, MLflow, Ray)
        self.env = {
            "AWS_ENDPOINT_URL": f"http://{endpoint}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def url(self, path: str) -> str:
        """``s3://path`` carrying the endpoint and (test) keys: usable with no environment at
        all (Ray workers of a module-wide local Ray, started before this server). Unsigned
        requests would not do: moto keeps an unsigned streaming upload's chunk framing in
        the object."""
        query = f"endpoint_override={self.endpoint}&scheme=http&region=us-east-1"
        return f"s3://testing:testing@{path}?{query}"

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (if new); returns its name."""
        import pyarrow.fs as pafs

        fs, _ = pafs.FileSystem.from_uri(self.url(name) + "&allow_bucket_creation=true")
        fs.create_dir(name)
        return name


@contextlib.contextmanager
def moto_server(env: dict[str, str] | None = None) -> Iterator[S3Server]:
    """moto's S3 server on a free port of 127.0.0.1 while the block runs; ``env`` is added to
    the server's environment (``INITIAL_NO_AUTH_ACTION_COUNT=0``: it checks every request's
    keys against its IAM users, so unknown keys are refused as AWS refuses them)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto's S3 server did not start") from None
            time.sleep(0.1)
    try:
        yield S3Server(f"127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server on 127.0.0.1, started for the session (``moto[server]``, dev extra)."""
    with moto_server() as server:
        yield server
