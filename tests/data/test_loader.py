"""Training loader: equal batch counts, exactly-once, seeded shuffles, exact resume; evaluation."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ganlib.data.loader import ShardLoader, iter_split
from ganlib.data.records import Sample
from ganlib.data.shards import read_manifest, split_of, write_shards
from ganlib.errors import GanlibError

N_SAMPLES = 70
VAL_FRACTION = 0.2
BATCH = 4  # per rank
TRAIN_KEYS = [
    f"s{i:03d}" for i in range(N_SAMPLES) if split_of(f"s{i:03d}", VAL_FRACTION) == "train"
]


def image(i: int, channels: int = 3) -> np.ndarray:
    """The deterministic test image of sample i: [8, 8, C] uint8."""
    return np.random.default_rng(i).integers(0, 256, (8, 8, channels), dtype=np.uint8)


def samples(paired: bool = False):
    for i in range(N_SAMPLES):
        imgs = {"a.png": image(i), "b.png": image(i + 1000)} if paired else {"png": image(i)}
        yield Sample(f"s{i:03d}", imgs, None if paired else i % 4, f"src#{i}")


def shard_size_for(n_shards: int) -> int:
    """A shard size that cuts the train split into exactly n_shards files."""
    n = len(TRAIN_KEYS)
    return next(s for s in range(1, n + 1) if -(-n // s) == n_shards)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Shard roots of the same samples cut into 1..7 train shards, written on first use."""
    made = {}

    def get(n_shards: int, paired: bool = False):
        if (n_shards, paired) not in made:
            out = tmp_path_factory.mktemp("shards") / f"n{n_shards}"
            stats = write_shards(
                samples(paired),
                out,
                shard_size=shard_size_for(n_shards),
                val_fraction=VAL_FRACTION,
                classes=None,
                progress=False,
            )
            assert stats["shards"]["train"] == n_shards
            made[n_shards, paired] = out
        return made[n_shards, paired]

    return get


def run_epoch(root, *, world_size, workers, seed=0, epoch=0, start=0):
    """Keys of every batch of every rank: [rank][batch] -> list of keys."""
    out = []
    for rank in range(world_size):
        loader = ShardLoader(
            root, batch_size=BATCH, rank=rank, world_size=world_size, num_workers=workers, seed=seed
        )
        loader.set_epoch(epoch, start_batch=start)
        out.append([b["key"] for b in loader])
    return out


def check_epoch(batches, world_size):
    global_batch = BATCH * world_size
    n_batches = len(TRAIN_KEYS) // global_batch
    assert [len(rank) for rank in batches] == [n_batches] * world_size
    assert all(len(b) == BATCH for rank in batches for b in rank)
    seen = [k for rank in batches for b in rank for k in b]
    assert len(seen) == len(set(seen)), "a sample was seen twice"
    assert set(seen) <= set(TRAIN_KEYS)
    assert len(TRAIN_KEYS) - len(seen) == len(TRAIN_KEYS) % global_batch < global_batch


@pytest.mark.parametrize("n_shards", range(1, 8))
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_every_rank_same_batches_each_sample_once(roots, n_shards, world_size):
    root = roots(n_shards)
    first = run_epoch(root, world_size=world_size, workers=0, epoch=0)
    check_epoch(first, world_size)
    assert run_epoch(root, world_size=world_size, workers=0, epoch=0) == first
    second = run_epoch(root, world_size=world_size, workers=0, epoch=1)
    check_epoch(second, world_size)
    assert second != first
    assert run_epoch(root, world_size=world_size, workers=0, seed=1, epoch=0) != first


@pytest.mark.parametrize(("n_shards", "world_size"), [(1, 3), (2, 2), (7, 1), (4, 3)])
def test_loader_workers_give_the_same_batches_in_the_same_order(roots, n_shards, world_size):
    # Includes fewer shards than ranks x workers and epochs with an odd number of batches,
    # where the DataLoader must skip the exhausted worker and keep the order.
    root = roots(n_shards)
    for epoch in (0, 1):
        batches = run_epoch(root, world_size=world_size, workers=2, epoch=epoch)
        check_epoch(batches, world_size)
        assert batches == run_epoch(root, world_size=world_size, workers=0, epoch=epoch)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_a_batch_gives_the_rest_of_the_epoch(roots, workers):
    root = roots(3)
    full = run_epoch(root, world_size=2, workers=0, epoch=5)
    n_batches = len(full[0])
    assert n_batches >= 5
    for start in (1, 2, n_batches - 1, n_batches):
        resumed = run_epoch(root, world_size=2, workers=workers, epoch=5, start=start)
        assert resumed == [rank[start:] for rank in full]


def test_batches_hold_the_stored_images_and_labels(roots):
    loader = ShardLoader(roots(4), batch_size=BATCH, rank=0, world_size=1, num_workers=0, seed=3)
    assert len(loader) == len(TRAIN_KEYS) // BATCH
    for batch in loader:
        assert batch["image"].shape == (BATCH, 3, 8, 8) and batch["image"].dtype == torch.float32
        assert batch["image"].is_contiguous()
        assert batch["label"].dtype == torch.int64
        for x, label, key in zip(batch["image"], batch["label"], batch["key"], strict=True):
            i = int(key[1:])
            want = torch.from_numpy(image(i)).permute(2, 0, 1).float() / 127.5 - 1
            torch.testing.assert_close(x, want)
            assert label.item() == i % 4


def test_paired_batches_and_unlabelled_samples(roots):
    loader = ShardLoader(
        roots(2, paired=True), batch_size=BATCH, rank=0, world_size=1, num_workers=0, seed=0
    )
    batch = next(iter(loader))
    assert sorted(batch) == ["a", "b", "key", "label"]
    i = int(batch["key"][0][1:])
    want_b = torch.from_numpy(image(i + 1000)).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(batch["b"][0], want_b)
    assert batch["label"].tolist() == [-1] * BATCH


def test_fewer_samples_than_one_global_batch_is_a_clear_error(roots):
    with pytest.raises(GanlibError, match=r"fewer than one global batch B×W=20×3=60"):
        ShardLoader(roots(1), batch_size=20, rank=0, world_size=3, num_workers=0, seed=0)


def test_iter_split_reads_every_sample_once_in_manifest_order(roots):
    root = roots(3)
    manifest = read_manifest(root).to_pydict()
    for split in ("train", "val"):
        keys = [k for k, s in zip(manifest["key"], manifest["split"], strict=True) if s == split]
        batches = list(iter_split(root, split, batch_size=5))
        assert [len(b["key"]) for b in batches[:-1]] == [5] * (len(batches) - 1)
        assert 1 <= len(batches[-1]["key"]) <= 5
        assert [k for b in batches for k in b["key"]] == keys
        last = batches[-1]
        i = int(last["key"][-1][1:])
        assert last["label"][-1].item() == i % 4
        want = torch.from_numpy(image(i)).permute(2, 0, 1).float() / 127.5 - 1
        torch.testing.assert_close(last["image"][-1], want)


class _Uneven(IterableDataset):
    """Worker w of 2 yields w, w+2, ... below 7: worker 0 holds 4 items, worker 1 holds 3."""

    def __iter__(self):
        info = get_worker_info()
        return iter(range(info.id, 7, info.num_workers))


def test_dataloader_takes_worker_outputs_round_robin():
    # ShardLoader's batch order rests on this PyTorch behaviour; check it on its own.
    assert list(DataLoader(_Uneven(), batch_size=None, num_workers=2)) == list(range(7))
