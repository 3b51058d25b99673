"""Interrupting the train stage on a real local Ray: kill -9, then Ctrl-C.

The driver and its local Ray are killed with -9 mid-training (the MLflow run stays RUNNING);
the rerun closes that run as FAILED, resumes, and Ctrl-C (SIGINT to the whole process group,
as a terminal sends it) stops it at a step boundary with a checkpoint Ray records, exit 130.
"""

from __future__ import annotations

import json
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


def test_kill_9_then_ctrl_c(digit_shards, tmp_path):
    project = copy_project(tmp_path / "project")
    shutil.copytree(digit_shards, project / "data" / "shards", dirs_exist_ok=True)
    set_params(project, "train", **{**SMALL_TRAIN, "steps": 100_000, "num_workers": 2})
    set_params(project, "tune", enabled=False)
    mlflow = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = yaml.safe_load((project / "params.yaml").read_text())["mlflow"]["experiment"]

    def train_runs() -> list:
        exp = mlflow.get_experiment_by_name(experiment).experiment_id
        return mlflow.search_runs([exp], "tags.`ganlib.stage` = 'train'")

    # -- kill -9 of the driver and its Ray: the MLflow run stays RUNNING ----------------------
    proc = start(project, tmp_path / "1.log")
    killed_after = wait_for_step(proc, tmp_path / "1.log", 20)  # step 10's checkpoint recorded
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    (run,) = train_runs()
    assert run.info.status == "RUNNING"

    # -- the rerun closes it, resumes, and Ctrl-C stops it at a step boundary: exit 130 -------
    proc = start(project, tmp_path / "2.log")
    wait_for_step(proc, tmp_path / "2.log", killed_after + 5)
    os.killpg(proc.pid, signal.SIGINT)  # the whole group, as a terminal sends it
    code, log = finish(proc, tmp_path / "2.log")
    assert code == 130, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert f"{run.info.run_id} left RUNNING by a killed process: FAILED" in log
    stopped = int(re.search(r"interrupted at step (\d+); `dvc repro` resumes\n", log)[1])
    state = newest_checkpoint(project)  # at most num_to_keep: the kill's orphan is gone
    (resumed,) = state["resumed_from"]  # a checkpoint the killed run had Ray record
    every = SMALL_TRAIN["ckpt_every"]
    assert resumed % every == 0 and every <= resumed < stopped and killed_after < stopped
    assert state["step"] == stopped
    # Ray recorded the stop's checkpoint: its snapshot's latest is that directory, so a
    # rerun resumes from it (test_distributed covers resuming from the snapshot)
    run_dir = next((project / "runs").glob("train-*"))
    snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    latest = run_dir / snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]
    assert load_checkpoint(latest)["step"] == stopped
    assert mlflow.get_run(run.info.run_id).info.status == "KILLED"  # the same run, reused
    assert len(train_runs()) == 1


def test_sigterm_is_an_interruption_with_exit_143(tmp_path):
    """SIGTERM (kill PID, ray job stop) goes the way of Ctrl-C: raised as an exception, so
    cleanup runs and the stage says so in one line; the train stage's handler takes both
    signals alike (above)."""
    from pipeline import _stage

    script = (
        "import os, signal, time\n"
        "from pipeline import _stage\n"
        "def main():\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM); time.sleep(10)\n"
        "    finally:\n"
        "        print('cleanup ran', flush=True)\n"
        "_stage.run(main)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=Path(_stage.__file__).parents[1],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 143, result.stderr
    assert result.stdout == "cleanup ran\n"
    assert result.stderr.splitlines() == [
        "error: interrupted before the stage finished; `dvc repro` runs it again"
    ]
