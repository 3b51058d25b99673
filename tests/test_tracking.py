"""ganlib.tracking: where the stages' MLflow client points, checked before anything is logged."""

from __future__ import annotations

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
