"""`ray job submit` of the train stage to a real local Ray head (started and stopped here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import copy_project, free_port
from tests.pipeline.test_pipeline import SMALL_TRAIN, set_params

BIN = Path(sys.executable).parent


def submit(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run ``ray job submit ...``, again while the head's job agent is not registered yet (a
    few seconds after `ray start`)."""
    for _ in range(30):
        job = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in job.stderr:
            break
        time.sleep(2)
    return job


@pytest.fixture()
def ray_head(tmp_path):
    """A Ray head on loopback; auth off as FIELD_NOTES describes for local test clusters."""
    import ray

    ray.shutdown()  # a driver of another test module must not hold this process
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    dash = free_port()
    start = [
        str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
        f"--port={free_port()}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
        "--num-cpus=2", "--include-dashboard=true", "--disable-usage-stats",
        f"--temp-dir={tempfile.mkdtemp(prefix='ray', dir='/tmp')}",  # short: socket paths
    ]  # fmt: skip
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        yield f"http://127.0.0.1:{dash}", env
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True)


def test_ray_job_submit_trains_and_writes_outputs(ray_head, tmp_path):
    address, env = ray_head
    project = copy_project(tmp_path / "project")
    set_params(project, "train", **SMALL_TRAIN)
    set_params(project, "tune", enabled=False)  # the job trains; the sweep is its own stage
    shard = subprocess.run(
        [sys.executable, "-m", "pipeline.shard"], cwd=project, env=env, capture_output=True
    )
    assert shard.returncode == 0, shard.stderr
    cmd = [
        str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(project),
        "--", "python", "-m", "pipeline.train", "--project", str(project),
    ]  # fmt: skip
    t0 = time.time()
    job = submit(cmd, env)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
    assert "succeeded" in job.stdout.lower(), job.stdout[-4000:]
    # outputs land in the --project directory, not in the job's uploaded copy
    summary = json.loads((project / "train/summary.json").read_text())
    assert summary["steps"] == SMALL_TRAIN["steps"]
    assert (project / "models/generator/generator.pt").stat().st_mtime > t0
    assert (project / "train/samples.png").stat().st_size > 1000
