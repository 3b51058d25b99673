"""Shards published to a real S3 server (moto on 127.0.0.1) read by URL: the same batches,
bit for bit, as from the local disk, in merged ranged requests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ganlib import storage
from ganlib.data.loader import ShardLoader, _read_split, _ShardReader, iter_split
from ganlib.data.publish import check_published, publish_shards, shard_location
from ganlib.data.shards import MANIFEST, dataset_info
from ganlib.errors import GanlibError


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
