"""Shards published to a real S3 server (moto on 127.0.0.1) read by URL: the same batches,
bit for bit, as from the local disk, in merged ranged requests; the featurize stage and the
evaluation over the published set give what they give over the local shards."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ganlib import storage
from ganlib.config import load_params
from ganlib.data.loader import ShardLoader, _read_split, _ShardReader, iter_split
from ganlib.data.publish import RECORD, check_published, publish_shards, shard_location
from ganlib.data.shards import MANIFEST, dataset_info
from ganlib.errors import GanlibError
from ganlib.featurize import featurize
from ganlib.tasks import get_task
from tests.evaluation.test_generation import EVAL, export_random_generator
from tests.hostile.harness import expect, stage


@pytest.fixture(scope="module")
def published(s3, digit_shards):
    root = s3.url(s3.bucket("shards-test") + "/project")
    record = publish_shards(digit_shards, root)
    return root, record


def epoch(root, rank=0, **kw):
    loader = ShardLoader(root, batch_size=16, rank=rank, world_size=2, seed=3, **kw)
    loader.set_epoch(1, start_batch=2)
    return list(loader)


def same(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x["key"] == y["key"]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])


def test_publishing_is_once_per_manifest_hash(published, digit_shards):
    root, record = published
    assert record["uploaded"] and storage.basename(record["url"]) == record["manifest_sha256"]
    again = publish_shards(digit_shards, root)
    assert not again["uploaded"] and again["url"] == record["url"]
    info = dataset_info(record["url"])
    assert info == dataset_info(digit_shards)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_over_s3_gives_the_local_batches_bit_for_bit(published, digit_shards, workers):
    url = published[1]["url"]
    for rank in (0, 1):
        same(epoch(url, rank, num_workers=workers), epoch(digit_shards, rank, num_workers=0))
    split = list(iter_split(url, "val", 7))
    same(split, list(iter_split(digit_shards, "val", 7)))


def test_a_batch_is_few_merged_requests_and_blocks_make_runs(published):
    url = published[1]["url"]
    data = _read_split(url, "train")
    batch = epoch(url, num_workers=0)[0]["key"]  # 16 samples from 4 shards
    rows = [int(np.flatnonzero(data.keys == k.encode())[0]) for k in batch]
    with _ShardReader(data) as reader:
        reader.read_many([(r, 0) for r in rows])
        assert reader.requests <= len({int(data.shard_ids[r]) for r in rows}) < len(rows)
    # loader_block: runs of 8 neighbours, each sample still once per epoch over the ranks
    keys = [
        k for rank in (0, 1) for b in epoch(url, rank, num_workers=0, block=8) for k in b["key"]
    ]
    assert len(keys) == len(set(keys))
    idx = [int(np.flatnonzero(data.keys == k.encode())[0]) for k in keys[:8]]
    assert idx == list(range(idx[0], idx[0] + 8))


def test_cache_dir_downloads_each_shard_once_and_gives_the_same_batches(published, tmp_path):
    url = published[1]["url"]
    same(epoch(url, num_workers=0, cache_dir=str(tmp_path)), epoch(url, num_workers=0))
    cached = sorted(p.name for p in tmp_path.rglob("*.tar"))
    assert cached == [
        "train-000000.tar",
        "train-000001.tar",
        "train-000002.tar",
        "train-000003.tar",
    ]


def test_a_published_set_that_does_not_match_its_hash_is_one_line(s3, digit_shards, tmp_path):
    root = s3.url(s3.bucket("shards-bad") + "/p")
    url = publish_shards(digit_shards, root)["url"]
    manifest = storage.join(url, MANIFEST)
    storage.write_bytes(manifest, storage.read_bytes(manifest) + b"x")
    with pytest.raises(
        GanlibError, match="the published manifest.s sha256 is .*altered since publishing"
    ):
        check_published(url)
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    record = {"root": root, "url": url, "manifest_sha256": storage.basename(url)}
    (project / "data/published.json").write_text(json.dumps(record))
    with pytest.raises(GanlibError, match="not 's3://other'; run `dvc repro publish`"):
        shard_location(project, "s3://other", digit_shards)
    with pytest.raises(GanlibError, match="altered since publishing"):
        shard_location(project, root, digit_shards)


# -- the featurize and evaluate stages over the published set ----------------------------------


@pytest.fixture(scope="module")
def s3_project(published, tmp_path_factory) -> Path:
    """A project holding no shards: a ``storage.root`` and the record of the published set
    (as a node of a cluster has them), and the featurize stage's outputs, made over S3. The
    evaluate test adds its inputs and outputs to it."""
    root, record = published
    project = tmp_path_factory.mktemp("s3-project")
    (project / RECORD).parent.mkdir(parents=True)
    (project / RECORD).write_text(json.dumps({k: v for k, v in record.items() if k != "uploaded"}))
    params = {
        "storage": {"root": root},
        "featurize": {"classifier_epochs": 1},
        "eval": dataclasses.asdict(EVAL),
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        expect(stage("featurize"), 0)
    assert not (project / "data/shards").exists()
    return project


def test_featurize_stage_over_s3_gives_the_local_extractor_and_reference(
    s3_project, digit_shards, tmp_path
):
    """The featurize stage in the project without shards trains the classifier and computes
    the reference over the published set: the same weights and features, bit for bit, as the
    featurize library over the local shards."""
    params = load_params(s3_project / "params.yaml")
    local = tmp_path / "extractor"
    featurize(params.featurize, digit_shards, local, seed=params.seed)
    remote = s3_project / "featurize/extractor"
    meta = [json.loads((d / "extractor.json").read_text()) for d in (remote, local)]
    for m in meta:  # the classifier's training time is all that may differ
        m["report"].pop("train_s")
    assert meta[0] == meta[1] and meta[0]["kind"] == "classifier"
    weights = [torch.load(d / "extractor.pt", weights_only=True) for d in (remote, local)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    with np.load(remote / "reference.npz") as a, np.load(local / "reference.npz") as b:
        assert a.files == b.files
        for name in a.files:  # bit for bit: the same images in the same order
            assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name])


def test_evaluate_stage_over_s3_gives_the_local_metrics(s3_project, digit_shards, monkeypatch):
    """The evaluate stage in the project without shards (it reads the published val split)
    measures what the evaluation over the local shards measures, number for number."""
    from mlflow.tracking import MlflowClient

    project = s3_project
    params = load_params(project / "params.yaml")
    mlflow = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run_id = mlflow.create_run(mlflow.create_experiment("s3")).info.run_id
    (project / "train").mkdir()
    (project / "train/summary.json").write_text(json.dumps({"mlflow_run_id": run_id}))
    generator = export_random_generator(project / "models/generator")
    featurized = project / "featurize/extractor"
    monkeypatch.chdir(project)
    expect(stage("evaluate"), 0)
    remote = json.loads((project / "eval/metrics.json").read_text())
    local = get_task(params.task).evaluate(
        generator, digit_shards, featurized, params, project / "local"
    )
    assert remote == json.loads(json.dumps(local)) and remote["protocol"]["num_fake"] > 0
