"""MLflow tracking: the URI from params, one experiment per pipeline, runs that survive resumes.

Only drivers and rank 0 write (SQLite does not like many writers). With a database store,
artifacts go to ``<project>/mlartifacts`` as an absolute location, because Ray workers run in
another cwd; an ``http(s)://`` server's experiments get no artifact location from here, so the
server's own artifact store (``mlflow server --artifacts-destination s3://...``) holds them.
A rank 0 on another node than the driver reaches the store the same way: an SQLite file it
cannot see is one error (:func:`worker_client`), never a new empty database.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ganlib.config import MlflowConfig
from ganlib.errors import GanlibError, mask_secrets


def resolve_uri(uri: str, project: Path) -> str:
    """Make a relative ``sqlite:///file.db`` absolute against the project directory."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(project / uri[len('sqlite:///') :]).resolve()}"
    return uri


def check_reachable(uri: str) -> None:
    """An ``http(s)://`` tracking server must answer before anything starts."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        raise GanlibError(
            f"mlflow.tracking_uri: {uri} is unreachable ({type(exc).__name__}); "
            "start the server or fix the URI"
        ) from None


def client(cfg: MlflowConfig, project: Path, *, existing: bool = False):
    """An ``MlflowClient`` for the configured (resolved, checked) tracking URI. With
    ``existing`` (stages that read what training logged), an SQLite store must be there
    already: MLflow would create an empty one on the spot."""
    from mlflow.tracking import MlflowClient

    uri = resolve_uri(cfg.tracking_uri, project)
    scheme = urlparse(uri).scheme.split("+")[0]  # postgresql+psycopg2://...
    if scheme not in STORE_SCHEMES:
        raise GanlibError(
            f"mlflow.tracking_uri: {uri}: {scheme or 'a bare path'} is not a tracking store; "
            f"use sqlite:///mlflow.db, an http(s):// server or a database URI "
            f"({', '.join(STORE_SCHEMES)})"
        )
    check_reachable(uri)
    if uri.startswith("sqlite:///"):  # MLflow would create the directory and a new database
        db = Path(uri[len("sqlite:///") :])
        if not db.parent.is_dir():
            raise GanlibError(
                f"mlflow.tracking_uri: {uri}: the directory {db.parent} does not exist; fix the "
                "path (a new database is created only in an existing directory)"
            )
        if existing and not db.is_file():
            raise GanlibError(
                f"mlflow.tracking_uri: {uri}: no such database, so no training run to read; "
                "point the URI at the store training logged to, or train (dvc repro train)"
            )
        if db.is_file() and db.stat().st_size and not _is_sqlite(db):
            raise GanlibError(
                f"mlflow.tracking_uri: {uri}: {db} is not an SQLite database; point the URI "
                "at mlflow.db (or at a new file name)"
            )
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# Stores with a model registry (MLflow's own list, less Databricks and Unity Catalog).
STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https")


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def require_run(mlflow_client, run_id: str, source: str) -> None:
    """The run named in ``source`` (e.g. train/summary.json) must be in the tracking store."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_run(run_id)
    except MlflowException:
        raise GanlibError(
            f"{source}: MLflow run {run_id} is not in {mlflow_client.tracking_uri}; point "
            "mlflow.tracking_uri at the store it was logged to, or train again (dvc repro train)"
        ) from None


def experiment_id(mlflow_client, name: str, project: Path) -> str:
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    if urlparse(mlflow_client.tracking_uri).scheme in ("http", "https"):
        return mlflow_client.create_experiment(name)  # the server's artifact store
    root = (project / "mlartifacts").resolve().as_uri()
    return mlflow_client.create_experiment(name, artifact_location=root)


def worker_client(uri: str):
    """The ``MlflowClient`` of a training worker (rank 0): the driver resolved and checked
    ``uri``; an SQLite file missing here means this node does not see the driver's disk, and
    MLflow would create an empty database and fail the first log ("Run ... not found")."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise GanlibError(
            f"mlflow.tracking_uri: {uri}: no such database on {socket.gethostname()} (this node "
            "does not see the driver's disk); use an MLflow server (http://...) for multi-node "
            "training"
        )
    return MlflowClient(tracking_uri=uri)


def start_run(
    mlflow_client,
    exp_id: str,
    *,
    run_name: str,
    params: dict[str, Any],
    tags: dict[str, str],
    resume_file: str | Path | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Create a run (params logged once), or reopen the one recorded in ``resume_file`` when
    it did not finish (an interrupted stage continues its run; a finished one that is trained
    further, e.g. with more steps, gets a new run).

    First, runs of the same stage that a killed process left RUNNING are closed as FAILED
    (:func:`close_abandoned_runs`); the run records which process owns it. ``resume_file`` is
    a path or a URL (the run's storage, :mod:`ganlib.storage`)."""
    if "ganlib.stage" in tags:
        close_abandoned_runs(mlflow_client, exp_id, tags["ganlib.stage"])
    owner = _owner()
    from ganlib import storage

    if resume_file is not None and storage.file_type(resume_file).name == "File":
        run_id = storage.read_bytes(resume_file).decode().strip()
        try:
            if mlflow_client.get_run(run_id).info.status != "FINISHED":
                mlflow_client.update_run(run_id, status="RUNNING")
                for key, value in owner.items():
                    mlflow_client.set_tag(run_id, key, value)
                if "ganlib.ended" in mlflow_client.get_run(run_id).data.tags:
                    mlflow_client.delete_tag(run_id, "ganlib.ended")  # it runs again
                return run_id
        except Exception:  # the run was deleted, or another tracking server: start anew
            pass
    from mlflow.entities import Param

    all_tags = dict(tags) | owner
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = mlflow_client.create_run(exp_id, run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    # storage.root may carry keys (s3://KEY:SECRET@bucket): the secret is not logged
    items = [Param(k, mask_secrets(v)[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):  # log_batch takes at most 100 params per call
        mlflow_client.log_batch(run_id, params=items[i : i + 100])
    if resume_file is not None:
        storage.write_bytes(resume_file, run_id.encode())
    return run_id


def _owner(pid: int | None = None) -> dict[str, str]:
    """Tags naming the process that keeps a run RUNNING: host, pid and the pid's start time
    (a pid is reused once its process is gone)."""
    import psutil

    proc = psutil.Process(pid)
    return {
        "ganlib.host": socket.gethostname(),
        "ganlib.pid": str(proc.pid),
        "ganlib.pid_started": f"{proc.create_time():.2f}",
    }


def _owner_gone(tags: dict[str, str]) -> bool:
    """Whether the process named by a run's owner tags has ended (only knowable on its host)."""
    import psutil

    if tags.get("ganlib.host") != socket.gethostname() or "ganlib.pid" not in tags:
        return False
    try:
        return _owner(int(tags["ganlib.pid"]))["ganlib.pid_started"] != tags["ganlib.pid_started"]
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
        return True


def close_abandoned_runs(mlflow_client, exp_id: str, stage: str) -> list[str]:
    """End as FAILED the runs of ``stage`` (and their child runs) that are RUNNING although
    the process that ran them is gone (kill -9, OOM killer, a closed terminal), so that the
    MLflow UI does not show them running forever. Runs of live processes, and of other
    hosts (their processes cannot be checked from here), are left alone. Returns the ids."""
    query = f"tags.`ganlib.stage` = '{stage}' and attributes.status = 'RUNNING'"
    gone = [
        r.info.run_id
        for r in mlflow_client.search_runs([exp_id], filter_string=query, max_results=1000)
        if _owner_gone(r.data.tags)
    ]
    closed = list(gone)
    for run_id in gone:
        children = f"tags.`mlflow.parentRunId` = '{run_id}' and attributes.status = 'RUNNING'"
        closed += [r.info.run_id for r in mlflow_client.search_runs([exp_id], children)]
    for run_id in closed:
        mlflow_client.set_tag(run_id, "ganlib.ended", "its process was gone (killed)")
        mlflow_client.set_terminated(run_id, status="FAILED")
    if gone:
        print(f"{stage}: MLflow run(s) {', '.join(gone)} left RUNNING by a killed process: FAILED")
    return closed


def log_metrics(mlflow_client, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    items = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):
        mlflow_client.log_batch(run_id, metrics=items[i : i + 1000])
