"""Hostile params and stores (issue 17), through the stages a user runs: ``params.yaml`` values
of the wrong type, out of range or unbounded, tracking URIs that are no store, shards of other
data params, and evaluate/register when the training run is not in MLflow.

Params are validated before anything starts, so the rows run the tune stage (disabled: it
then only writes ``tune/best.yaml``) or the train stage up to the point of the error; none
starts Ray.
"""

# The tables keep one row per line, however long its expected message.
# ruff: noqa: E501

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.hostile.harness import expect, row, stage

OFF = "tune: {enabled: false}\n"
PARAMS = [
    row(OFF, 0, None, id="good: defaults with the sweep off"),
    row(OFF + "task: [generation]\n", 2, r"^error: params.yaml: task: must be one of generation, inpainting, translation \(got \['generation'\]\)$", id="task is a list"),
    row(OFF + "task: {a: 1}\n", 2, r"^error: params.yaml: task: must be one of .*\(got \{'a': 1\}\)$", id="task is a mapping"),
    row(OFF + "translation: foo\n", 2, r"^error: params.yaml: translation: must be a mapping", id="a section is a string"),
    row(OFF + "seed: -1\n", 2, r"^error: params.yaml: seed: must be an integer in \[0, 2\*\*31\)$", id="seed -1"),
    row(OFF + f"seed: {2**70}\n", 2, r"^error: params.yaml: seed: must be at most 2,147,483,647", id="seed 2**70"),
    row(OFF + "seed: 1.5\n", 2, r"^error: params.yaml: seed: must be an integer \(got 1.5\)$", id="seed 1.5"),
    row(OFF + "eval: {k: 5000}\n", 2, r"^error: params.yaml: eval.k: must be < eval.num_fake", id="eval.k above num_fake"),
    row(OFF + "eval: {kid_subset_size: 1}\n", 2, r"^error: params.yaml: eval.kid_subset_size: must be >= 2", id="KID subsets of one"),
    row(OFF + "train: {lr_g: .inf}\n", 2, r"^error: params.yaml: train.lr_g: must be a finite number \(got inf\)$", id="lr_g inf"),
    row(OFF + "train: {lr_d: .nan}\n", 2, r"^error: params.yaml: train.lr_d: must be a finite number", id="lr_d nan"),
    row(OFF + "train: {lr_g: 1e30}\n", 2, r"^error: params.yaml: train.lr_g: must be in \(0, 1\]$", id="lr_g 1e30"),
    row(OFF + "train: {ema_kimg: .inf}\n", 2, r"^error: params.yaml: train.ema_kimg: must be a finite number", id="ema_kimg inf"),
    row(OFF + "train: {ema_kimg: 1.0e9}\n", 2, r"^error: params.yaml: train.ema_kimg: must be <= 1e\+06$", id="ema_kimg 1e9"),
    row(OFF + "inpainting: {hole_weight: .inf}\n", 2, r"^error: params.yaml: inpainting.hole_weight: must be a finite number", id="hole_weight inf"),
    row(OFF + "translation: {l1_weight: 1.0e12}\n", 2, r"^error: params.yaml: translation.l1_weight: must be in \[0, 1e\+06\]", id="l1_weight 1e12"),
    row(OFF + "train: {steps: 1e15}\n", 2, r"^error: params.yaml: train.steps: must be an integer \(got '1e15'\)$", id="steps 1e15 (a YAML string)"),
    row(OFF + f"train: {{steps: {10**15}}}\n", 2, r"^error: params.yaml: train.steps: must be at most 2,147,483,647 \(got 1,000,000,000,000,000\)$", id="steps 10**15"),
    row(OFF + "train: {batch_size: 0}\n", 2, r"^error: params.yaml: train.batch_size: must be >= 1$", id="batch of zero"),
    row("tune: {enabled: false, num_samples: 1000000000}\n", 2, r"^error: params.yaml: tune.num_samples: must be <= 10,000$", id="num_samples 1e9"),
    row(OFF + "train: {arch: stylegan9}\n", 2, r"^error: params.yaml: train.arch: must be one of", id="unknown arch"),
    row(OFF + "trian: {steps: 10}\n", 2, r"^error: params.yaml: unknown key trian; known keys here: task, seed, data, train", id="misspelt section"),
    row(OFF + "train: [1, 2\n", 2, r"^error: .*params.yaml: not valid YAML \(line 3\)$", id="YAML syntax error names the line"),
    row("", 2, r"^error: .*params.yaml: empty; restore it \(git checkout params.yaml\)", id="empty params.yaml"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "code", "line"), PARAMS)
def test_params(tmp_path, monkeypatch, text, code, line):
    (tmp_path / "params.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    expect(stage("tune"), code, line)
    assert (tmp_path / "tune" / "best.yaml").is_file() == (code == 0)  # nothing on failure


NOT_A_DB = "not a database\n"
INPAINTING_PROFILE = "inpainting: {data: {source: 'builtin:photos', channels: 3}}\n"
TRAIN = [
    # The train stage up to its first MLflow call, on real (digit) shards; a good URI would
    # start Ray, so the good rows are the tune table's and the pipeline tests'.
    row("mlflow: {tracking_uri: 'bogus://x'}\n", r"^error: mlflow.tracking_uri: bogus://x: bogus is not a tracking store; use sqlite:///mlflow.db", id="bogus:// store"),
    row("mlflow: {tracking_uri: 'sqlite:////no/such/dir/x.db'}\n", r"^error: mlflow.tracking_uri: sqlite:////no/such/dir/x.db: the directory /no/such/dir does not exist", id="sqlite in a missing directory"),
    row("mlflow: {tracking_uri: 'sqlite:///notes.txt'}\n", r"^error: mlflow.tracking_uri: sqlite:///.*notes.txt is not an SQLite database", id="sqlite on a text file"),
    row("mlflow: {tracking_uri: 'http://127.0.0.1:9'}\n", r"^error: mlflow.tracking_uri: http://127.0.0.1:9 is unreachable", id="server that is down"),
    row("task: inpainting\n" + INPAINTING_PROFILE, r"^error: .*data/shards: the shards hold 32 px, 1 channel images, the data params say 32 px, 3 channels \(sharded under other params", id="stale shards of another task"),
    row("data: {resolution: 64}\n", r"the shards hold 32 px, 1 channel images, the data params say 64 px", id="stale shards of another resolution"),
    row("train: {num_workers: 64}\n", r"^error: train.num_workers: 64 workers x 1 CPU need 64 CPUs, this machine has", id="more workers than CPUs"),
    row("train: {batch_size: 4096}\n", r"^error: train.batch_size: 2 workers x 4096 = 8192 exceeds the \d+ train samples", id="batch above the data"),
]  # fmt: skip


@pytest.fixture()
def shard_project(tmp_path, monkeypatch, digit_shards) -> Path:
    shutil.copytree(digit_shards, tmp_path / "data" / "shards")
    (tmp_path / "notes.txt").write_text(NOT_A_DB)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("text", "line"), TRAIN)
def test_train_stage(shard_project, text, line):
    (shard_project / "params.yaml").write_text(OFF + text)
    expect(stage("train"), 2, line)
    assert not (shard_project / "models").exists() and not (shard_project / "train").exists()
    assert (shard_project / "notes.txt").read_text() == NOT_A_DB
    assert not (shard_project / "mlflow.db").exists()  # no store created by a refused run


MISSING_RUN = "0" * 32


@pytest.mark.parametrize("module", ["evaluate", "register"])
def test_evaluate_and_register_need_the_training_run_in_mlflow(shard_project, module):
    """train/summary.json names a run the store does not hold (another store, a deleted
    mlflow.db): one line before anything is measured or registered; eval/ is untouched."""
    (shard_project / "params.yaml").write_text(OFF)
    (shard_project / "train").mkdir()
    (shard_project / "train" / "summary.json").write_text(
        json.dumps({"mlflow_run_id": MISSING_RUN})
    )
    (shard_project / "eval").mkdir()
    (shard_project / "eval" / "metrics.json").write_text("{}\n")
    no_store = r"^error: mlflow.tracking_uri: sqlite:///.*mlflow.db: no such database, so no"
    expect(stage(module), 2, no_store)
    assert not (shard_project / "mlflow.db").exists()  # not created by asking
    MlflowClient(f"sqlite:///{shard_project / 'mlflow.db'}").search_experiments()  # a new store
    expect(
        stage(module),
        2,
        rf"^error: train/summary.json: MLflow run {MISSING_RUN} is not in sqlite:///",
    )
    assert (shard_project / "eval" / "metrics.json").read_text() == "{}\n"
    assert not (shard_project / "register").exists()
