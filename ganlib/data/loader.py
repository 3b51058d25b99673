"""Loading shards for training (DDP) and evaluation.

Training (:class:`ShardLoader`) splits at the sample level, from the manifest, not at the shard
level. Each epoch ``e`` draws one permutation of the N training samples from the seed; global
step ``j`` takes permutation positions ``[j*B*W, (j+1)*B*W)`` and rank ``r`` the ``r``-th
``B`` of them (B = per-rank batch size, W = world size). So every rank gets
``N // (B*W)`` batches, each sample is seen at most once per epoch (fewer than ``B*W`` are
left out), and rank ``r``'s batch ``j`` is a fixed set of keys -- whatever the number of shards
or loader workers, which is what makes exact resumption from a batch index possible.

Loader worker ``i`` of ``K`` yields batches ``b+i, b+i+K, ...`` (``b`` = start batch); the
PyTorch DataLoader takes one batch from each worker in turn, so they come out as ``b, b+1, ...``.
A worker streams the tar shards that hold its samples with WebDataset, reads only its own
members (the rest are skipped inside the tar reader, before any PNG decode) and keeps their raw
bytes until a batch is complete. Because a batch's keys are spread over many shards, that buffer
grows to the worker's share of the epoch's encoded images (about ``1 / (W*K)`` of the split's
shard bytes) before it drains; the decoded images are never buffered.

Evaluation (:func:`iter_split`) reads one split in manifest order, every sample exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ganlib.data.images import decode_png
from ganlib.data.shards import manifest_metadata, read_manifest
from ganlib.errors import GanlibError

# Shard field -> batch entry: single images are "image", translation pairs "a" and "b".
BATCH_NAMES = {"png": "image", "a.png": "a", "b.png": "b"}


def rank_batches(
    n_samples: int, *, batch_size: int, rank: int, world_size: int, seed: int, epoch: int
) -> np.ndarray:
    """Row indices (into the split, in manifest order) of rank ``rank``'s batches in ``epoch``.

    Returns ``[n_batches, batch_size]`` with ``n_batches = n_samples // (batch_size *
    world_size)``; the same for every number of loader workers.
    """
    global_batch = batch_size * world_size
    n_batches = n_samples // global_batch
    perm = np.random.default_rng([seed, epoch]).permutation(n_samples)  # [N]
    steps = perm[: n_batches * global_batch].reshape(n_batches, world_size, batch_size)
    return steps[:, rank, :]  # [n_batches, B]


@dataclass(frozen=True)
class _Split:
    """The rows of one split, in manifest order; small enough to copy into each worker."""

    keys: list[str]  # [N]
    shard_ids: np.ndarray  # [N] int, index into urls
    urls: list[str]  # tar paths, in manifest order
    labels: np.ndarray  # [N] int64, -1 when unlabelled
    fields: tuple[str, ...]  # ("png",) or ("a.png", "b.png")
    classes: list[str] | None


def _read_split(shard_root: Path, split: str) -> _Split:
    shard_root = Path(shard_root)
    table = read_manifest(shard_root)
    root = shard_root if shard_root.is_dir() else shard_root.parent
    meta = manifest_metadata(table)
    part = table.filter(pc.equal(table["split"], split))
    # Dictionary codes follow first appearance, so shard ids keep the manifest's shard order.
    shards = pc.dictionary_encode(part["shard"]).combine_chunks()
    return _Split(
        keys=part["key"].to_pylist(),
        shard_ids=shards.indices.to_numpy(zero_copy_only=False),
        urls=[str(root / s) for s in shards.dictionary.to_pylist()],
        labels=part["label"].fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64),
        fields=tuple(meta["fields"]),
        classes=meta["classes"],
    )


def _collate(samples: list[dict[str, Any]], rows: np.ndarray, data: _Split) -> dict[str, Any]:
    """Decode one batch of raw tar samples (``rows`` [B] are their split rows)."""
    batch: dict[str, Any] = {}
    for field in data.fields:
        try:
            arrs = np.stack([decode_png(s[field]) for s in samples])  # [B, H, W, C] uint8
        except KeyError:
            key = next(s["__key__"] for s in samples if field not in s)
            raise GanlibError(
                f"{key}: no {field} member in its shard; re-run the shard stage"
            ) from None
        # numpy, not torch: torch's intra-op threads cost more than they save on a batch this
        # small, and the result is the same whatever the thread settings.
        x = np.ascontiguousarray(arrs.transpose(0, 3, 1, 2), dtype=np.float32)  # [B, C, H, W]
        x /= 127.5
        x -= 1.0
        batch[BATCH_NAMES[field]] = torch.from_numpy(x)  # [B, C, H, W] in [-1, 1]
    batch["label"] = torch.from_numpy(data.labels[rows])  # [B] int64
    batch["key"] = [data.keys[i] for i in rows]
    return batch


def _stream(urls: list[str], wanted: Callable[[str], bool]) -> wds.DataPipeline:
    """Raw samples of ``urls``; ``wanted(member_name)`` picks the tar members that are read."""
    return wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(select_files=wanted))


class _EpochBatches(IterableDataset):
    """One rank's batches of one epoch from ``start_batch`` on, split over loader workers."""

    def __init__(self, data: _Split, rows: np.ndarray, start_batch: int) -> None:
        super().__init__()
        self.data = data
        self.rows = rows  # [n_batches, B]
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        # The DataLoader (in_order=True, its default) takes one batch from each worker in turn
        # and skips a worker only once it is exhausted; the low workers hold the extra batches,
        # so the output is start_batch, start_batch + 1, ... for every number of workers.
        owned = np.arange(self.start_batch + worker, len(self.rows), n_workers)  # [J]
        return self._batches(self.rows[owned])

    def _batches(self, rows: np.ndarray) -> Iterator[dict[str, Any]]:
        """Yield the batches ``rows`` [J, B] in order, buffering raw bytes until each is whole."""
        n_owned, batch_size = rows.shape
        if n_owned == 0:
            return
        data = self.data
        slot = {data.keys[i]: (jj, t) for (jj, t), i in np.ndenumerate(rows)}
        fields = set(data.fields)

        def wanted(member: str) -> bool:
            key, _, field = member.partition(".")
            return field in fields and key in slot

        # Read shards in the order of the first batch that needs them, so early batches
        # complete early. The batches themselves do not depend on this order.
        needed, first = np.unique(data.shard_ids[rows].ravel(), return_index=True)
        urls = [data.urls[s] for s in needed[np.argsort(first)]]

        pending: list[list[dict | None] | None] = [[None] * batch_size for _ in range(n_owned)]
        missing = np.full(n_owned, batch_size)
        done = 0  # batches yielded so far
        for sample in _stream(urls, wanted):
            jj, t = slot[sample["__key__"]]
            if pending[jj][t] is not None:
                raise GanlibError(
                    f"{sample['__key__']}: found twice in the shards; re-run the shard stage"
                )
            pending[jj][t] = sample
            missing[jj] -= 1
            while done < n_owned and missing[done] == 0:
                yield _collate(pending[done], rows[done], data)
                pending[done] = None
                done += 1
        if done < n_owned:
            absent = next(
                data.keys[rows[j, t]]
                for j in range(done, n_owned)
                for t in range(batch_size)
                if pending[j][t] is None
            )
            raise GanlibError(
                f"{absent}: listed in the manifest but not in its shard; re-run the shard stage"
            )


def _init_worker(worker_id: int) -> None:
    # K workers share the machine's cores; PNG decoding is single-threaded anyway.
    torch.set_num_threads(1)


class ShardLoader:
    """The training loader of one DDP rank: equal batch counts, exactly-once, seeded shuffle.

    Build one per rank; call :meth:`set_epoch` before each epoch, then iterate. Each batch is
    a dict: ``"image"`` float32 ``[B, C, H, W]`` in [-1, 1] (``"a"`` and ``"b"`` for paired
    shards), ``"label"`` int64 ``[B]`` (-1 when unlabelled), ``"key"`` list of B strings.
    The batches of an epoch depend on (seed, epoch, rank, world_size, batch_size) only, not
    on ``num_workers``; ``set_epoch(e, start_batch=b)`` yields exactly batches ``b, b+1, ...``
    of the uninterrupted epoch.
    """

    def __init__(
        self,
        shard_root: Path,
        *,
        batch_size: int,
        rank: int,
        world_size: int,
        num_workers: int,
        seed: int,
        split: str = "train",
        pin_memory: bool = False,
    ) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or num_workers < 0:
            raise ValueError(
                f"bad loader arguments: batch_size={batch_size}, rank={rank}, "
                f"world_size={world_size}, num_workers={num_workers}"
            )
        self.data = _read_split(shard_root, split)
        n = len(self.data.keys)
        if n < batch_size * world_size:
            raise GanlibError(
                f"{split} split has {n} samples, fewer than one global batch "
                f"B×W={batch_size}×{world_size}={batch_size * world_size}; "
                "lower train.batch_size"
            )
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.epoch = 0
        self.start_batch = 0

    @property
    def classes(self) -> list[str] | None:
        """Class names from the manifest (None when the shards carry no names)."""
        return self.data.classes

    def __len__(self) -> int:
        """Batches per epoch, the same on every rank."""
        return len(self.data.keys) // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (the shuffle) and the batch the next iteration starts at.

        The next iteration yields batches ``start_batch .. len(self) - 1`` of that epoch.
        """
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} not in 0..{len(self)}")
        self.epoch = epoch
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rows = rank_batches(
            len(self.data.keys),
            batch_size=self.batch_size,
            rank=self.rank,
            world_size=self.world_size,
            seed=self.seed,
            epoch=self.epoch,
        )
        loader = DataLoader(
            _EpochBatches(self.data, rows, self.start_batch),
            batch_size=None,  # the dataset yields whole batches
            num_workers=self.num_workers,
            persistent_workers=False,
            pin_memory=self.pin_memory,
            worker_init_fn=_init_worker if self.num_workers else None,
            # its own generator: the default one draws from the global RNG, which would make
            # the training RNG stream depend on where epochs start (breaking exact resume)
            generator=torch.Generator().manual_seed(self.seed),
        )
        return iter(loader)


def iter_split(shard_root: Path, split: str, batch_size: int) -> Iterator[dict[str, Any]]:
    """Every sample of ``split`` exactly once, in manifest order, in one process.

    Batches as in :class:`ShardLoader`; the last one holds the remainder. For evaluation.
    """
    data = _read_split(shard_root, split)
    n = len(data.keys)
    if n == 0:
        return
    fields = set(data.fields)
    stream = _stream(data.urls, lambda member: member.partition(".")[2] in fields)
    batch: list[dict[str, Any]] = []
    start = 0  # split row of batch[0]
    for sample in stream:
        row = start + len(batch)
        if row >= n or sample["__key__"] != data.keys[row]:
            raise GanlibError(
                f"{sample['__url__']}: {sample['__key__']} does not match the manifest at "
                f"{split} row {row}; re-run the shard stage"
            )
        batch.append(sample)
        if len(batch) == batch_size:
            yield _collate(batch, np.arange(start, start + batch_size), data)
            start += batch_size
            batch = []
    if start + len(batch) != n:
        raise GanlibError(
            f"{split} shards hold {start + len(batch)} of the {n} samples in the manifest; "
            "re-run the shard stage"
        )
    if batch:
        yield _collate(batch, np.arange(start, start + len(batch)), data)
