"""Training loader: equal batch counts, exactly-once, seeded shuffles, exact resume; evaluation;
indexed reads: each sample read once, flat memory, clear errors for mismatched shards."""

import hashlib
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
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


def test_a_batch_is_fetched_in_merged_requests_that_cover_exactly_its_samples(roots):
    """Each batch's byte ranges are sorted and neighbours in a shard merged into one request;
    every sample of the batch lies in exactly one request, and far-apart ranges (or ranges of
    other shards) are never merged."""
    from ganlib.data.loader import MERGE_GAP, _read_split, _ShardReader, merge_ranges

    spans = [(0, 5000, 100), (0, 0, 100), (1, 0, 100), (0, 700, 50), (0, 5000 + 10**6, 10)]
    merged = merge_ranges(spans, gap=1024)
    assert merged == [[0, 0, 750, [1, 3]], [0, 5000, 5100, [0]], [0, 1005000, 1005010, [4]],
                      [1, 0, 100, [2]]]  # fmt: skip
    assert sorted(i for m in merged for i in m[3]) == list(range(len(spans)))
    assert len(merge_ranges(spans, gap=0)) == 5  # nothing adjacent: no merge

    root = roots(3)
    data = _read_split(root, "train")
    rows = np.arange(12)  # 12 neighbours, in 3 shards of 16 samples
    with _ShardReader(data, gap=MERGE_GAP) as reader:  # object storage's gap, on local files
        pngs = reader.read_many([(int(r), 0) for r in rows])
        assert reader.requests == len({int(data.shard_ids[r]) for r in rows}) < len(rows)
    sha = dict(
        zip(*read_manifest(root).select(["key", "sha256"]).to_pydict().values(), strict=True)
    )
    assert [hashlib.sha256(p).hexdigest() for p in pngs] == [sha[data.key(r)] for r in rows]


def tiny_samples(n: int):
    for i in range(n):
        yield Sample(f"t{i:05d}", {"png": image(i)[:4, :4]}, None, "")


def test_memory_does_not_grow_with_the_number_of_samples(tmp_path):
    def peak(root):
        loader = ShardLoader(root, batch_size=40, rank=0, world_size=1, num_workers=0, seed=0)
        tracemalloc.start()
        assert sum(len(b["key"]) for b in loader) == n
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    peaks = {}
    for n in (400, 4000):
        root = tmp_path / f"n{n}"
        write_shards(
            tiny_samples(n), root, shard_size=100, val_fraction=0, classes=None, progress=False
        )
        peak(root)  # the first epoch allocates caches once (imports, codecs)
        peaks[n] = peak(root)
    # Only the epoch's permutation (8 bytes a sample) may grow with n; buffering the encoded
    # samples (a dict of bytes each) would cost hundreds of bytes a sample.
    per_sample = (peaks[4000] - peaks[400]) / 3600
    assert per_sample < 32, peaks


def _truncate(root):
    shard = root / "train/train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:1000])


def _overwrite(root):
    shard = root / "train/train-000001.tar"
    shard.write_bytes(bytes(shard.stat().st_size))


def _drop_offsets(root):
    table = read_manifest(root)
    pq.write_table(table.drop_columns(["offset", "length"]), root / "manifest.parquet")


def _delete(root):
    (root / "train/train-000001.tar").unlink()


@pytest.mark.parametrize(
    ("corrupt", "when", "message"),
    [
        (_truncate, "open", r"train-000001.tar: 1000 bytes, but the manifest points up to"),
        (_delete, "open", "train-000001.tar: shard not found"),
        (_overwrite, "read", r"no PNG of s\d+ at bytes \d+\.\.\d+; the manifest does not match"),
        (_drop_offsets, "open", r"no length, offset column\(s\), written by an older ganlib"),
    ],
    ids=["truncated", "missing", "overwritten", "old-manifest"],
)
def test_shards_that_do_not_match_the_manifest_are_a_clear_error(tmp_path, corrupt, when, message):
    root = tmp_path / "shards"
    write_shards(samples(), root, shard_size=10, val_fraction=0, classes=None, progress=False)
    corrupt(root)
    args = {"batch_size": 70, "rank": 0, "world_size": 1, "num_workers": 0, "seed": 0}
    if when == "open":  # found from the manifest and the file sizes, before any batch
        with pytest.raises(GanlibError, match=message + ".*re-run the shard stage"):
            ShardLoader(root, **args)
    else:
        loader = ShardLoader(root, **args)
        with pytest.raises(GanlibError, match=message + ".*re-run the shard stage"):
            next(iter(loader))
    with pytest.raises(GanlibError, match=message):
        next(iter_split(root, "train", batch_size=70))


def _corrupt_first_png(root) -> dict:
    """Overwrite 8 bytes inside one train sample's pixel data: same size, same tar."""
    r = next(r for r in read_manifest(root).to_pylist() if r["split"] == "train")
    shard = root / r["shard"]
    data = bytearray(shard.read_bytes())
    at = r["offset"] + r["length"] - 24  # inside IDAT, before its CRC and the IEND chunk
    data[at : at + 8] = bytes(8)
    shard.write_bytes(bytes(data))
    return r | {
        "corrupt": hashlib.sha256(data[r["offset"] : r["offset"] + r["length"]]).hexdigest()
    }


@pytest.mark.parametrize("workers", [0, 1])
def test_a_png_corrupted_since_sharding_is_one_line_naming_key_and_shard(tmp_path, workers):
    root = tmp_path / "shards"
    write_shards(samples(), root, shard_size=10, val_fraction=0, classes=None, progress=False)
    r = _corrupt_first_png(root)
    message = (
        rf"{root / r['shard']}: {r['key']}.png does not decode \([^)]+\); its bytes differ "
        r"from the manifest's sha256: corrupted since sharding; run `dvc repro shard`"
    )
    args = {"batch_size": 70, "rank": 0, "world_size": 1, "seed": 0}
    # A loader worker's error arrives as the same one line, not wrapped in its traceback.
    with pytest.raises(GanlibError, match=message) as info:
        next(iter(ShardLoader(root, num_workers=workers, **args)))
    assert "\n" not in str(info.value)
    with pytest.raises(GanlibError, match=message):
        list(iter_split(root, "train", batch_size=7))


def test_a_png_that_never_decoded_says_its_bytes_are_those_sharded(tmp_path):
    root = tmp_path / "shards"
    write_shards(samples(), root, shard_size=10, val_fraction=0, classes=None, progress=False)
    r = _corrupt_first_png(root)
    table = read_manifest(root)
    sha = [
        r["corrupt"] if k == r["key"] else v
        for k, v in zip(table["key"].to_pylist(), table["sha256"].to_pylist(), strict=True)
    ]
    table = table.set_column(table.schema.get_field_index("sha256"), "sha256", pa.array(sha))
    pq.write_table(table, root / "manifest.parquet")
    with pytest.raises(GanlibError, match=r"its bytes are those sharded .*re-run the shard stage"):
        list(iter_split(root, "train", batch_size=7))


class _Uneven(IterableDataset):
    """Worker w of 2 yields w, w+2, ... below 7: worker 0 holds 4 items, worker 1 holds 3."""

    def __iter__(self):
        info = get_worker_info()
        return iter(range(info.id, 7, info.num_workers))


def test_dataloader_takes_worker_outputs_round_robin():
    # ShardLoader's batch order rests on this PyTorch behaviour; check it on its own.
    assert list(DataLoader(_Uneven(), batch_size=None, num_workers=2)) == list(range(7))


# -- unpaired translation: A and B drawn independently ---------------------------------------

N_A, N_B = 37, 23  # any counts


@pytest.fixture(scope="module")
def unpaired_root(tmp_path_factory):
    """Translation shards of two independent domains: A-only and B-only samples."""

    def items():
        for i in range(N_A):
            yield Sample(f"A-{i:03d}", {"a.png": image(i)}, None, "")
        for i in range(N_B):
            yield Sample(f"B-{i:03d}", {"b.png": image(i + 1000)}, None, "")

    root = tmp_path_factory.mktemp("unpaired") / "shards"
    write_shards(items(), root, shard_size=9, val_fraction=0, classes=None, progress=False)
    return root


def unpaired_epoch(root, *, world_size, workers=0, epoch=0, start=0):
    """(A keys, B keys) of every batch of every rank: [rank][batch]."""
    out = []
    for rank in range(world_size):
        loader = ShardLoader(
            root,
            batch_size=BATCH,
            rank=rank,
            world_size=world_size,
            num_workers=workers,
            seed=0,
            unpaired=True,
        )
        loader.set_epoch(epoch, start_batch=start)
        out.append([(b["key"], b["key_b"]) for b in loader])
    return out


@pytest.mark.parametrize("world_size", [1, 2])
def test_unpaired_batches_draw_each_domain_once_per_epoch(unpaired_root, world_size):
    batches = unpaired_epoch(unpaired_root, world_size=world_size)
    n_batches = min(N_A, N_B) // (BATCH * world_size)
    assert [len(rank) for rank in batches] == [n_batches] * world_size
    for side, prefix in ((0, "A-"), (1, "B-")):
        seen = [k for rank in batches for batch in rank for k in batch[side]]
        assert len(seen) == len(set(seen)) == n_batches * BATCH * world_size
        assert all(k.startswith(prefix) for k in seen)
    assert unpaired_epoch(unpaired_root, world_size=world_size, workers=2) == batches
    assert unpaired_epoch(unpaired_root, world_size=world_size, epoch=1) != batches
    resumed = unpaired_epoch(unpaired_root, world_size=world_size, start=2)
    assert resumed == [rank[2:] for rank in batches]


def test_unpaired_batches_hold_the_stored_images_of_both_domains(unpaired_root):
    loader = ShardLoader(
        unpaired_root, batch_size=BATCH, rank=0, world_size=1, num_workers=0, seed=0, unpaired=True
    )
    batch = next(iter(loader))
    assert sorted(batch) == ["a", "b", "key", "key_b", "label"]
    for x, key in ((batch["a"], batch["key"]), (batch["b"], batch["key_b"])):
        for img, k in zip(x, key, strict=True):
            i = int(k[2:]) + (1000 if k.startswith("B") else 0)
            want = torch.from_numpy(image(i)).permute(2, 0, 1).float() / 127.5 - 1
            torch.testing.assert_close(img, want)


def test_unpaired_loading_of_pairs_never_keeps_the_stored_pairs(roots):
    # The same paired shards train pix2pix and CycleGAN: unpaired, A and B are shuffled apart.
    root = roots(2, paired=True)
    args = {"batch_size": BATCH, "rank": 0, "world_size": 1, "num_workers": 0, "seed": 0}
    paired = [b["key"] for b in ShardLoader(root, **args)]
    unpaired = list(ShardLoader(root, **args, unpaired=True))
    assert [b["key"] for b in unpaired] == paired  # A in the order it has when paired
    pairs = [zip(batch["key"], batch["key_b"], strict=True) for batch in unpaired]
    matches = sum(a == b for batch in pairs for a, b in batch)
    assert matches <= 2  # by chance only: about one in an epoch of this size


def test_single_domain_samples_need_unpaired_loading(unpaired_root, roots):
    args = {"batch_size": BATCH, "rank": 0, "world_size": 1, "num_workers": 0, "seed": 0}
    with pytest.raises(GanlibError, match="60 samples of a single domain.*translation.mode"):
        ShardLoader(unpaired_root, **args)
    with pytest.raises(GanlibError, match="unpaired loading needs translation shards"):
        ShardLoader(roots(2), **args, unpaired=True)
    with pytest.raises(GanlibError, match=r"has 23 images in a domain, fewer than one global"):
        ShardLoader(unpaired_root, **(args | {"batch_size": 24}), unpaired=True)


def test_iter_split_reads_one_domain_at_a_time(unpaired_root):
    with pytest.raises(GanlibError, match="samples of a single domain; read each domain"):
        next(iter_split(unpaired_root, "train", batch_size=8))
    for field, name, n in (("a.png", "a", N_A), ("b.png", "b", N_B)):
        batches = list(iter_split(unpaired_root, "train", batch_size=8, fields=(field,)))
        assert all(sorted(b) == [name, "key", "label"] for b in batches)
        assert sum(len(b["key"]) for b in batches) == n
    with pytest.raises(ValueError, match="not among the shards'"):
        next(iter_split(unpaired_root, "train", batch_size=8, fields=("png",)))
