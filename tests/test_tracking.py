"""ganlib.tracking: where the stages' MLflow client points, checked before anything is logged."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ganlib import tracking
from ganlib.config import MlflowConfig
from ganlib.errors import GanlibError


def test_a_sqlite_store_in_a_missing_directory_is_refused_and_nothing_is_created(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(GanlibError, match=f"the directory {missing} does not exist"):
        tracking.client(MlflowConfig(tracking_uri=f"sqlite:///{missing}/x.db"), tmp_path)
    assert not (tmp_path / "no").exists()


def test_a_relative_sqlite_store_is_the_projects_and_is_created_on_first_use(tmp_path):
    client = tracking.client(MlflowConfig(), tmp_path)  # sqlite:///mlflow.db
    assert client.tracking_uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    exp = tracking.experiment_id(client, "ganlib", tmp_path)
    run_id = tracking.start_run(client, exp, run_name="r", params={"a": 1}, tags={})
    tracking.require_run(client, run_id, "train/summary.json")
    with pytest.raises(GanlibError, match=f"train/summary.json: MLflow run {'0' * 32} is not in"):
        tracking.require_run(client, "0" * 32, "train/summary.json")


def test_runs_left_running_by_a_killed_process_are_closed_and_live_ones_kept(tmp_path):
    client = tracking.client(MlflowConfig(), tmp_path)
    exp = tracking.experiment_id(client, "ganlib", tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner = tracking._owner(dead.pid)  # while it lives: its pid and start time
    dead.wait()

    def running(owner: dict[str, str], stage: str = "train", **more) -> str:
        run = client.create_run(exp, tags={"ganlib.stage": stage, **owner, **more})
        return run.info.run_id

    killed = running(dead_owner)
    child = running({}, stage="tune-trial", **{"mlflow.parentRunId": killed})
    alive = running(tracking._owner())  # this process
    elsewhere = running(dead_owner | {"ganlib.host": "another-host"})
    other_stage = running(dead_owner, stage="tune")
    reused_pid = running(dead_owner | {"ganlib.pid": str(os.getpid())})  # pid of another start
    closed = tracking.close_abandoned_runs(client, exp, "train")
    assert sorted(closed) == sorted([killed, child, reused_pid])
    status = {r: client.get_run(r).info.status for r in (killed, child, alive, elsewhere)}
    assert status == {killed: "FAILED", child: "FAILED", alive: "RUNNING", elsewhere: "RUNNING"}
    assert client.get_run(other_stage).info.status == "RUNNING"
    # a stage that starts closes them itself, and its own run names its process
    mine = tracking.start_run(client, exp, run_name="r", params={}, tags={"ganlib.stage": "tune"})
    assert client.get_run(other_stage).info.status == "FAILED"
    assert client.get_run(mine).data.tags["ganlib.pid"] == str(os.getpid())


def test_a_worker_that_does_not_see_the_sqlite_store_fails_in_one_line_creating_nothing(tmp_path):
    """Rank 0 on a node without the driver's disk: one error saying what to use, never a new
    empty database (MLflow would create one and fail the first log with "Run not found")."""
    from ganlib.tracking import worker_client

    db = tmp_path / "mlflow.db"
    with pytest.raises(GanlibError, match="no such database on .*use an MLflow server"):
        worker_client(f"sqlite:///{db}")
    assert not db.exists()
