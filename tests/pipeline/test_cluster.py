"""A two-node Ray cluster on this machine whose second node cannot see the project directory
(its own mount namespace, an empty tmpfs over the project path), training through `ray job
submit` with `storage.root` on a real S3 server (moto) and MLflow behind a real `mlflow
server` whose artifact store is that S3; its generator is then registered from the outputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

import pipeline.publish
import pipeline.shard
from tests.conftest import ROOT, copy_project, free_port
from tests.pipeline.test_pipeline import set_params

BIN = Path(sys.executable).parent
TINY = {"steps": 2, "width": 8, "z_dim": 16, "batch_size": 8, "ckpt_every": 2, "log_every": 2,
        "sample_every": 2, "max_failures": 0}  # fmt: skip


def submit(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run ``ray job submit ...``, again while the head's job agent is not registered yet (a
    few seconds after `ray start`)."""
    for _ in range(30):
        job = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in job.stderr:
            break
        time.sleep(2)
    return job


def wait_for(url: str, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


@pytest.fixture()
def cluster(s3, tmp_path):
    """An MLflow server (artifacts on S3), a Ray head with 1 CPU, and a second Ray node with
    1 CPU in its own mount namespace where the project path and this checkout are empty."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) for the second node's mount namespace")
    import ray

    ray.shutdown()  # a driver of another test module must not hold this process
    project = copy_project(tmp_path / "project")
    bucket = s3.bucket("cluster")
    env = {
        **os.environ, **s3.env,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
        # a node registers within 30 s by default, which a busy 2-core machine can miss
        "RAY_raylet_start_wait_time_s": "120",
    }  # fmt: skip
    mlflow_port = free_port()
    mlflow = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
         "--artifacts-destination", f"s3://{bucket}/mlartifacts"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: socket paths
    port, dash = free_port(), free_port()
    head = [
        str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
        f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--num-cpus=1",
        "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={temp}",
    ]  # fmt: skip
    hidden = " ".join(f"'{p}'" for p in (project, ROOT))
    # A node has the Python environment, not the project: when the environment lies inside
    # this checkout (.ci/run's .venv), it is bound aside and back over the emptied checkout.
    venv, keep = Path(sys.prefix), Path(temp, "env")
    inside = ROOT in venv.parents
    aside = f"mkdir -p '{keep}' && mount --bind '{venv}' '{keep}' || exit 5; " if inside else ""
    back = f"mkdir -p '{venv}' && mount --bind '{keep}' '{venv}' || exit 6; " if inside else ""
    # an empty tmpfs over each path, checked empty, then the node (its processes keep the view)
    second = (
        f'{aside}for p in {hidden}; do mount -t tmpfs none "$p" || exit 3; '
        '[ -z "$(ls -A "$p")" ] || exit 4; done; '
        f"{back}exec '{BIN / 'ray'}' start --address=127.0.0.1:{port} "
        "--node-ip-address=127.0.0.1 --num-cpus=1 --disable-usage-stats"
    )
    try:
        subprocess.run(head, env=env, check=True, capture_output=True, timeout=300)
        node_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        started = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", second],
            env=node_env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        wait_for(f"http://127.0.0.1:{mlflow_port}/health")
        yield {
            "project": project, "env": env, "address": f"http://127.0.0.1:{dash}",
            "root": f"s3://{bucket}/root", "mlflow": f"http://127.0.0.1:{mlflow_port}",
        }  # fmt: skip
    finally:
        _stop_cluster(temp)  # not `ray stop`: it would stop other sessions' Ray too
        os.killpg(mlflow.pid, signal.SIGKILL)  # the server's uvicorn and job runners too
        mlflow.wait(timeout=20)


def _stop_cluster(temp: str) -> None:
    """Kill the processes of this test's Ray cluster only: those whose command line names
    its temp dir or its session (other sessions may run a Ray of their own)."""
    import psutil

    session = Path(temp, "session_latest").resolve().name
    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or ())
        if temp in line or (session.startswith("session_") and session in line):
            mine.append(proc)
    for proc in mine:  # disposable: no graceful shutdown to wait for
        proc.kill()
    psutil.wait_procs(mine, timeout=10)


@pytest.mark.slow
def test_two_node_training_through_ray_job_submit_on_s3_and_register(cluster, s3, monkeypatch):
    from mlflow.tracking import MlflowClient

    from ganlib import storage
    from ganlib.registry import register_generator

    project, env = cluster["project"], cluster["env"]
    set_params(project, "train", **TINY, num_workers=2)  # 1 CPU per node: one rank on each
    set_params(project, "tune", enabled=False)
    set_params(project, "storage", root=cluster["root"])
    set_params(project, "mlflow", tracking_uri=cluster["mlflow"])
    for key, value in s3.env.items():  # the driver machine's environment, as on the nodes
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(project)
    pipeline.shard.main([])  # in this process: it has imported everything already
    pipeline.publish.main([])
    record = json.loads((project / "data/published.json").read_text())
    assert record["url"].startswith(cluster["root"] + "/shards/")

    cmd = [
        str(BIN / "ray"), "job", "submit", "--address", cluster["address"],
        "--working-dir", str(project), "--", "python", "-m", "pipeline.train",
    ]  # fmt: skip
    job = submit(cmd, env)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
    assert "succeeded" in job.stdout.lower(), job.stdout[-4000:]

    # The outputs are in the run's storage on S3, from any machine (with the same environment)
    runs = storage.join(cluster["root"], "runs")
    fs, path = storage.open_location(runs)
    names = [i.base_name for i in fs.get_file_info(storage.pafs.FileSelector(path))]
    (name,) = [n for n in names if n.startswith("train-")]
    outputs = storage.join(runs, name, "outputs")
    summary = json.loads(storage.read_bytes(storage.join(outputs, "train/summary.json")))
    assert summary["steps"] == TINY["steps"]
    local = project / "fetched"
    storage.copy_tree(storage.join(outputs, "models/generator"), local)
    client = MlflowClient(cluster["mlflow"], registry_uri=cluster["mlflow"])
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.metrics["loss_D"] == pytest.approx(run.data.metrics["loss_D"])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "generator")}
    assert "generator/generator.pt" in logged  # through the server, into its S3 store
    record = register_generator(
        client, run.info.run_id, local, model_name="ganlib-cluster", score=1.0,
        protocol_hash="test",
    )  # fmt: skip
    assert str(record["version"]) == "1" and record["alias"] == "champion"
    assert yaml.safe_load((project / "params.yaml").read_text())["storage"]["root"]
