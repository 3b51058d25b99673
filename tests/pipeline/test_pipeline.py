"""End to end: real `dvc repro` of every stage on a temporary copy of the project."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from tests.conftest import copy_project

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
SMALL_TRAIN = {
    "steps": 20,
    "width": 8,
    "z_dim": 16,
    "batch_size": 16,
    "ckpt_every": 10,
    "log_every": 5,
    "sample_every": 10,
}


def sh(project: Path, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=project, env=ENV, capture_output=True, text=True, timeout=900)


def set_params(project: Path, section: str, **values) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


SMALL_REST = {
    "featurize": {"classifier_epochs": 3},
    "tune": {"num_samples": 2, "steps": 20, "report_every": 10, "grace_period": 10,
             "probe_fakes": 100},
    "eval": {"num_fake": 200, "kid_subsets": 20, "kid_subset_size": 100},
}  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    p = copy_project(tmp_path_factory.mktemp("project"))
    set_params(p, "train", **SMALL_TRAIN)
    for section, values in SMALL_REST.items():
        set_params(p, section, **values)
    result = sh(p, str(BIN / "dvc"), "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return p


def test_repro_writes_shards_manifest_and_stats(project):
    stats = json.loads((project / "data/shards/stats.json").read_text())
    assert stats["samples"] == 1797 and stats["train"] + stats["val"] == 1797
    assert stats["skipped"] == 0 and len(stats["classes"]) == 10
    assert 0.15 < stats["val"] / stats["samples"] < 0.25  # val_fraction 0.2
    manifest = pq.read_table(project / "data/shards/manifest.parquet")
    assert manifest.num_rows == 1797
    assert len(set(manifest["key"].to_pylist())) == 1797
    tars = sorted((project / "data/shards/train").glob("*.tar"))
    assert len(tars) == -(-stats["train"] // 500)  # shard_size 500 in params.yaml


def test_repro_trains_and_tracks(project):
    summary = json.loads((project / "train/summary.json").read_text())
    assert summary["steps"] == 20 and summary["images_seen"] == 20 * 16 * 2
    assert summary["images_per_s"] > 0
    runtime = summary["runtime"]  # what ran, chosen automatically: 2 CPU ranks under gloo
    assert (runtime["device"], runtime["backend"], runtime["world_size"]) == ("cpu", "gloo", 2)
    assert (runtime["precision"], runtime["compile"], runtime["fallbacks"]) == ("fp32", False, [])
    with open(project / "train/history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    assert all(float(r["loss_D"]) > 0 for r in rows)
    grid = Image.open(project / "train/samples.png")
    assert grid.size == ((8 * (32 + 2) + 2) * 4,) * 2  # 8x8 tiles of 32 px + 2 px gaps, x4
    config = json.loads((project / "models/generator/config.json").read_text())
    assert config["model_config"]["resolution"] == 32 and config["step"] == 20

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.params["train.steps"] == "20" and run.info.status == "FINISHED"
    assert run.data.tags["ganlib.runtime.backend"] == "gloo"
    assert run.data.tags["ganlib.runtime.precision"] == "fp32"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_D")] == [5, 10, 15, 20]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert artifacts == ["samples/samples_step0000010.png", "samples/samples_step0000020.png"]


def mlflow_client(project: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{project / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_repro_featurizes_with_the_digit_classifier(project):
    report = json.loads((project / "featurize/report.json").read_text())
    assert report["kind"] == "classifier" and report["reference_samples"] == 1797 - 369
    assert 0.5 < report["val_accuracy"] <= 1  # 3 epochs; the default 8 reach ~0.95


def test_repro_tunes_and_trains_with_the_best_trial(project):
    best = yaml.safe_load((project / "tune/best.yaml").read_text())
    assert best["enabled"] is True and set(best["train"]) == {"lr_g", "lr_d", "loss"}
    trials = pq.read_table(project / "tune/trials.parquet").to_pylist()
    assert len(trials) == 2 and best["fid"] == min(t["fid"] for t in trials)
    assert {t["status"] for t in trials} <= {"completed", "stopped"}
    client = mlflow_client(project)
    children = client.search_runs(
        [best_run(client, best).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{best['mlflow_run_id']}'",
    )
    assert len(children) == 2 and all("fid" in r.data.metrics for r in children)
    summary = json.loads((project / "train/summary.json").read_text())
    params = client.get_run(summary["mlflow_run_id"]).data.params
    assert float(params["train.lr_g"]) == pytest.approx(best["train"]["lr_g"])
    assert params["train.loss"] == best["train"]["loss"]


def best_run(client, best):
    return client.get_run(best["mlflow_run_id"])


def test_repro_evaluates_under_a_protocol_card(project):
    metrics = json.loads((project / "eval/metrics.json").read_text())
    card = metrics["protocol"]
    assert card["extractor"] == "classifier" and card["num_fake"] == 200
    assert card["num_real"] == 1797 - 369 and card["reference_split"] == "train"
    assert metrics["fid"] > metrics["floor"]["fid"] > 0  # 20 steps are far from real digits
    assert 0 < metrics["class_coverage"] <= 1 and metrics["floor"]["class_coverage"] == 1
    assert Image.open(project / "eval/sheets/classes.png").size[1] > 0


def test_repro_registers_a_champion(project):
    record = json.loads((project / "register/model.json").read_text())
    assert (record["name"], record["version"], record["alias"]) == ("ganlib-digits", 1, "champion")
    client = mlflow_client(project)
    mv = client.get_model_version_by_alias("ganlib-digits", "champion")
    assert int(mv.version) == 1 and mv.run_id == record["run_id"]
    metrics = json.loads((project / "eval/metrics.json").read_text())
    assert mv.tags["protocol_hash"] == metrics["protocol_hash"]
    assert float(mv.tags["metric.fid"]) == metrics["fid"]
    assert json.loads(mv.tags["protocol_card"]) == metrics["protocol"]
    assert len(mv.tags["data_hash"]) == 64 and mv.tags["git_commit"]


def test_second_repro_runs_nothing(project):
    before = (project / "train/summary.json").stat().st_mtime_ns
    result = sh(project, str(BIN / "dvc"), "repro")
    assert result.returncode == 0, result.stderr
    assert "didn't change, skipping" in result.stdout
    assert "Running stage" not in result.stdout
    assert (project / "train/summary.json").stat().st_mtime_ns == before


def test_a_failing_evaluate_leaves_its_outputs_whole(project):
    """Too many neighbours for the val split (known only once the images are counted), then a
    training run missing from MLflow: one line each, and eval/ as it was."""
    files = [p for p in (project / "eval").rglob("*") if p.is_file()]
    before = {p: p.read_bytes() for p in files}
    params, summary = (project / "params.yaml").read_text(), project / "train/summary.json"
    run = summary.read_text()
    try:
        set_params(project, "eval", k=1000, num_fake=2000)  # the val split holds 369
        result = sh(project, sys.executable, "-m", "pipeline.evaluate")
        assert result.returncode == 2 and "eval.k: 1000 neighbours need more than the 369" in (
            result.stderr
        )
        (project / "params.yaml").write_text(params)
        summary.write_text(json.dumps({**json.loads(run), "mlflow_run_id": "f" * 32}))
        result = sh(project, sys.executable, "-m", "pipeline.evaluate")
        assert result.returncode == 2 and f"MLflow run {'f' * 32} is not in" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        (project / "params.yaml").write_text(params)
        summary.write_text(run)
    assert {p: p.read_bytes() for p in files} == before
    assert not (project / ".eval.tmp").exists()


def test_two_fresh_copies_give_byte_identical_shards(project, tmp_path):
    other = copy_project(tmp_path)
    result = sh(other, str(BIN / "dvc"), "repro", "shard")
    assert result.returncode == 0, result.stderr
    shards = (project / "data/shards").rglob("*")
    files = sorted(p.relative_to(project) for p in shards if p.is_file())
    assert len(files) > 3
    for rel in files:
        assert (project / rel).read_bytes() == (other / rel).read_bytes(), rel


@pytest.fixture()
def bare(tmp_path) -> Path:
    return copy_project(tmp_path)


def test_bad_params_fail_in_one_line_before_anything(bare):
    set_params(bare, "train", lr_g=-1.0)
    result = sh(bare, sys.executable, "-m", "pipeline.shard")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: params.yaml: train.lr_g: must be in (0, 1]"
    assert not (bare / "data").exists()


def test_missing_source_path_leaves_no_partial_shards(bare):
    set_params(bare, "data", source=f"imagefolder:{bare / 'nope'}")
    result = sh(bare, sys.executable, "-m", "pipeline.shard")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "does not exist" in result.stderr
    assert not (bare / "data").exists()


@pytest.mark.parametrize(
    "train, message",
    [
        ({"num_workers": 64}, "train.num_workers: 64 workers x 1 CPU need 64 CPUs"),
        ({"batch_size": 4096}, "train.batch_size"),
        ({"unknown": 1}, "unknown key train.unknown"),
    ],
)
def test_train_refuses_bad_setups_before_ray(project, tmp_path, train, message):
    p = copy_project(tmp_path)
    (p / "data").symlink_to(project / "data")
    set_params(p, "train", **train)
    set_params(p, "tune", enabled=False)  # no tune/best.yaml in this copy
    elsewhere = tmp_path / "elsewhere"  # `--project` (as `ray job submit` runs it) names p
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.train", "--project", str(p)], cwd=elsewhere,
        env={**ENV, "PYTHONPATH": str(p)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (p / "runs").exists() and not (p / "train").exists()
    assert not any(elsewhere.iterdir())


def test_featurize_stage_takes_the_packaged_inception_with_no_file_given(bare):
    """`kind: inception` from a fresh copy: NVIDIA's weights from the installed extra, checked,
    converted, stored as a state dict; the report and the extractor say so."""
    from ganlib.metrics.inception import PACKAGED_SHA256

    folder = bare / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    set_params(bare, "data", source=f"imagefolder:{folder}", resolution=16, channels=3)
    set_params(bare, "featurize", kind="inception")
    result = sh(bare, str(BIN / "dvc"), "repro", "featurize")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((bare / "featurize/report.json").read_text())
    assert (report["kind"], report["feature_dim"]) == ("inception", 2048)
    meta = json.loads((bare / "featurize/extractor/extractor.json").read_text())
    assert meta["weights_sha256"] == PACKAGED_SHA256 and meta["config"] == {"protocol": "nvidia"}
    state = torch.load(bare / "featurize/extractor/extractor.pt", weights_only=True)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)


def test_train_without_shards_says_what_to_run(bare):
    result = sh(bare, sys.executable, "-m", "pipeline.train")
    assert result.returncode == 2
    assert "run `dvc repro shard` first" in result.stderr


def test_exp_run_of_r3gan_registers_it_beside_the_champion(project):
    """Runs last: `dvc exp run` changes the project's outputs and registry. `-S
    train.arch=r3gan` (its cpu preset) re-runs the sweep over the family, trains, evaluates
    and registers it as version 2, champion or challenger as its FID says; `ganlib sample`
    draws from it (the task pipelines below register their first champion)."""
    assert sh(project, "git", "add", "-A").returncode == 0
    who = ("-c", "user.name=ganlib", "-c", "user.email=ganlib@example.com")
    commit = sh(project, "git", *who, "commit", "-qm", "base")
    assert commit.returncode == 0, commit.stderr
    client = mlflow_client(project)
    first = json.loads((project / "train/summary.json").read_text())["mlflow_run_id"]
    # Steps and logging are not the sweep's: changing them re-runs train, not tune.
    set_params(project, "train", steps=3)
    dry = sh(project, str(BIN / "dvc"), "repro", "--dry")
    assert "Running stage 'train'" in dry.stdout and "Running stage 'tune'" not in dry.stdout
    assert sh(project, "git", "checkout", "params.yaml").returncode == 0

    r3 = sh(project, str(BIN / "dvc"), "exp", "run", "-S", "train.arch=r3gan", "-S",
               "train.steps=2")  # fmt: skip
    assert r3.returncode == 0, r3.stdout[-3000:] + r3.stderr[-3000:]
    assert "Running stage 'tune'" in r3.stdout  # the sweep trains the family it tunes
    best = yaml.safe_load((project / "tune/best.yaml").read_text())
    assert best_run(client, best).data.params["train.arch"] == "r3gan"
    trials = pq.read_table(project / "tune/trials.parquet").to_pylist()
    assert len(trials) == 2 and {t["status"] for t in trials} <= {"completed", "stopped"}
    config = json.loads((project / "models/generator/config.json").read_text())
    assert config["model_config"]["arch"] == "r3gan" and config["step"] == 2
    record = json.loads((project / "register/model.json").read_text())
    # The promotion follows the card's FIDs (a 2-step R3GAN can beat the 20-step width-8
    # DCGAN: it starts as identity blocks on a learned basis); that a worse one takes only
    # `challenger` under any interleaving is tests/test_registry.py's on a real registry.
    fids = [float(client.get_model_version("ganlib-digits", v).tags["metric.fid"]) for v in "12"]
    assert fids[1] == json.loads((project / "eval/metrics.json").read_text())["fid"]
    better = fids[1] < fids[0]
    assert (record["version"], record["alias"]) == (2, "champion" if better else "challenger")
    champion = client.get_model_version_by_alias("ganlib-digits", "champion")
    assert int(champion.version) == (2 if better else 1)
    run = client.get_run(json.loads((project / "train/summary.json").read_text())["mlflow_run_id"])
    assert run.info.run_id != first and run.data.params["train.arch"] == "r3gan"
    roles = [client.get_model_version("ganlib-digits", v).tags["role"] for v in "12"]
    dethroned = ["former champion (v2 beat it)", "champion"]
    assert roles == (dethroned if better else ["champion", "challenger"])
    out = sh(project, str(BIN / "ganlib"), "sample", "--model", "models:/ganlib-digits/2",
             "-n", "3", "--out", "r3gan.npy")  # fmt: skip
    assert out.returncode == 0, out.stderr
    images = np.load(project / "r3gan.npy")
    assert images.shape == (3, 32, 32, 1) and images.dtype == np.uint8
