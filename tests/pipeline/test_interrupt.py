"""Interrupting the train stage on a real local Ray: Ctrl-C, SIGTERM and kill -9.

One project goes through all three, as a user's day might: Ctrl-C (SIGINT to the whole
process group, as a terminal sends it) stops at a step boundary with a checkpoint Ray knows
about; a rerun resumes from it and is killed with -9; the next rerun closes the MLflow run
that kill left RUNNING and is stopped by SIGTERM (as ``kill`` or ``ray job stop`` send it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ganlib.artifacts import load_checkpoint
from tests.conftest import copy_project
from tests.pipeline.test_pipeline import ENV, SMALL_TRAIN, set_params

pytestmark = pytest.mark.slow


def start(project: Path, log: Path) -> subprocess.Popen:
    """``python -m pipeline.train`` in its own process group, stdout and stderr to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.train"],
            cwd=project, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def wait_for_step(proc: subprocess.Popen, log: Path, at_least: int, timeout: float = 120) -> int:
    """Block until the log shows a training step >= ``at_least``; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(s) for s in re.findall(r"step (\d+)/", log.read_text())]
        if steps and steps[-1] >= at_least:
            return steps[-1]
        assert proc.poll() is None, f"the stage ended early:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no step {at_least} within {timeout} s:\n{log.read_text()[-3000:]}")


def finish(proc: subprocess.Popen, log: Path) -> tuple[int, str]:
    code = proc.wait(timeout=120)
    return code, log.read_text()


def newest_checkpoint(project: Path) -> dict:
    run_dir = next((project / "runs").glob("train-*"))
    dirs = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())
    assert len(dirs) <= 2, dirs  # num_to_keep: no orphans left by the shutdown
    return load_checkpoint(dirs[-1])


def test_ctrl_c_sigterm_and_kill_9(digit_shards, tmp_path):
    project = copy_project(tmp_path / "project")
    shutil.copytree(digit_shards, project / "data" / "shards", dirs_exist_ok=True)
    set_params(project, "train", **{**SMALL_TRAIN, "steps": 100_000, "num_workers": 2})
    set_params(project, "tune", enabled=False)
    mlflow = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = yaml.safe_load((project / "params.yaml").read_text())["mlflow"]["experiment"]

    def train_runs() -> list:
        exp = mlflow.get_experiment_by_name(experiment).experiment_id
        return mlflow.search_runs([exp], "tags.`ganlib.stage` = 'train'")

    # -- Ctrl-C: the next step is checkpointed, the run is KILLED, exit 130 -------------------
    proc = start(project, tmp_path / "1.log")
    wait_for_step(proc, tmp_path / "1.log", 10)
    os.killpg(proc.pid, signal.SIGINT)
    code, log = finish(proc, tmp_path / "1.log")
    assert code == 130, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    stopped = int(re.search(r"interrupted at step (\d+); `dvc repro` resumes\n", log)[1])
    assert newest_checkpoint(project)["step"] == stopped
    (run,) = train_runs()
    assert run.info.status == "KILLED"

    # -- kill -9 of the driver and its Ray: the MLflow run stays RUNNING ----------------------
    proc = start(project, tmp_path / "2.log")
    wait_for_step(proc, tmp_path / "2.log", stopped + 10)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert mlflow.get_run(run.info.run_id).info.status == "RUNNING"

    # -- the rerun closes it, resumes, and SIGTERM stops it: exit 143 -------------------------
    proc = start(project, tmp_path / "3.log")
    wait_for_step(proc, tmp_path / "3.log", stopped + 25)
    os.kill(proc.pid, signal.SIGTERM)  # the driver only, as `kill PID` does
    code, log = finish(proc, tmp_path / "3.log")
    assert code == 143, log[-3000:]
    assert f"{run.info.run_id} left RUNNING by a killed process: FAILED" in log
    assert "Traceback" not in log, log[-3000:]
    state = newest_checkpoint(project)
    # the second run started from the Ctrl-C checkpoint: Ray's snapshot had registered it
    assert state["resumed_from"][0] == stopped
    assert state["step"] == int(re.search(r"interrupted at step (\d+);", log)[1])
    assert mlflow.get_run(run.info.run_id).info.status == "KILLED"  # the same run, reused
    assert len(train_runs()) == 1
