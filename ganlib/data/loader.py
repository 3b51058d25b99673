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
Batches fixed at the sample level gather their samples from all over the split; assembling
them by streaming the tars would make every worker read the whole split and buffer its share
of it. So the loader reads by random access: the manifest is a byte index into the tars
(``offset``/``length`` of each image, see :mod:`ganlib.data.shards`), like WebDataset's own
indexed ``wids`` datasets. A worker fetches the byte ranges of a batch together -- sorted,
neighbouring ranges of a shard merged into one request -- and decodes them; each sample's bytes
are read once per epoch over all ranks and workers, nothing is held beyond the batch being
built, and the first batch costs just its own reads. The shard root is a local path or a URL
(``s3://...``, see :mod:`ganlib.storage`): a range is a ``pread`` on a local disk and a ranged
GET on object storage, where a batch's requests run concurrently. The tars stay plain
WebDataset shards that any WebDataset reader can stream.

Unpaired translation (``unpaired=True``) draws domain A and domain B independently: the
``a.png`` of the rows that have one and the ``b.png`` of the rows that have one, each in its own
seeded permutation (stream 0 for A, stream 1 for B), ``min(N_A, N_B) // (B*W)`` batches an
epoch. Batch ``j`` is still a fixed set of (A key, B key) per rank, so the properties above hold
per domain; stored (A, B) pairs are never kept together (except by chance, 1 in N per position),
so the same shards train pix2pix (paired) and CycleGAN (unpaired).

Evaluation (:func:`iter_split`) reads one split in manifest order, every sample exactly once,
the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ganlib import storage
from ganlib.data.images import PNG_SIGNATURE, decode_png
from ganlib.data.pixels import from_uint8
from ganlib.data.shards import (
    CORRUPTED,
    SPAN_COLUMNS,
    manifest_metadata,
    manifest_path,
    read_manifest,
    shard_root,
    stored_sha256,
)
from ganlib.errors import GanlibError

# Shard field -> batch entry: single images are "image", translation pairs "a" and "b".
BATCH_NAMES = {"png": "image", "a.png": "a", "b.png": "b"}
# Open shard files per reader: enough for every shard of most roots, far below the usual
# 1024-descriptor limit for roots with thousands of shards.
_MAX_OPEN_SHARDS = 128


def rank_batches(
    n_samples: int,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    epoch: int,
    stream: int = 0,
    block: int = 1,
) -> np.ndarray:
    """Indices (into ``range(n_samples)``) of rank ``rank``'s batches in ``epoch``.

    Returns ``[n_batches, batch_size]`` with ``n_batches = n_samples // (batch_size *
    world_size)``; the same for every number of loader workers. ``stream`` draws an
    independent permutation from the same (seed, epoch): unpaired translation shuffles domain
    B with stream 1. ``block`` > 1 permutes runs of ``block`` consecutive samples instead of
    single samples (each sample still once per epoch): neighbours in a shard travel together,
    so one ranged request fetches a run (``train.loader_block``, for object storage).
    """
    global_batch = batch_size * world_size
    n_batches = n_samples // global_batch
    key = [seed, epoch] if stream == 0 else [seed, epoch, stream]
    if block == 1:
        perm = np.random.default_rng(key).permutation(n_samples)  # [N]
    else:
        runs = np.random.default_rng(key).permutation(-(-n_samples // block))  # [ceil(N/k)]
        perm = (runs[:, None] * block + np.arange(block)).ravel()
        perm = perm[perm < n_samples]  # the last run may be short  # [N]
    steps = perm[: n_batches * global_batch].reshape(n_batches, world_size, batch_size)
    return steps[:, rank, :]  # [n_batches, B]


@dataclass(frozen=True)
class _Split:
    """The rows of one split, in manifest order; small enough to copy into each worker.

    Arrays only (no Python objects per row): forked loader workers share them page for page,
    and 10 M rows stay a few hundred MiB per rank.
    """

    keys: np.ndarray  # [N] fixed-width bytes (the keys are ASCII)
    shard_ids: np.ndarray  # [N] int32, index into shards
    shards: list[str]  # shard files relative to the root, in manifest order
    # [N, F, 2] int64: (offset, length) of each image field in its shard; (-1, -1) where a
    # translation sample holds only the other domain
    spans: np.ndarray
    labels: np.ndarray  # [N] int32, -1 when unlabelled
    fields: tuple[str, ...]  # ("png",) or ("a.png", "b.png")
    classes: list[str] | None
    root: str  # the shard root: a path or a URL (ganlib.storage)
    manifest: str  # for the sha256 of a sample that fails to decode

    def key(self, row: int) -> str:
        return self.keys[row].decode("ascii")

    def location(self, shard: int) -> str:
        return storage.join(self.root, self.shards[shard])


def _fixed_width(keys: pa.ChunkedArray) -> np.ndarray:
    """String keys as a ``[N]`` numpy array of fixed-width bytes, without a Python object per
    key on the way (the keys are ASCII: letters, digits, '_' and '-')."""
    if len(keys) == 0:
        return np.zeros(0, "S1")
    width = max(1, pc.max(pc.binary_length(keys)).as_py())
    padded = pc.utf8_rpad(keys, width, "\x00").cast(pa.binary()).combine_chunks()
    fixed = padded.cast(pa.binary(width))
    buf = fixed.buffers()[1]
    return np.frombuffer(buf, f"S{width}", len(fixed), fixed.offset * width).copy()


def _read_split(root: str | Path, split: str) -> _Split:
    """The manifest rows of ``split``, checked against the sizes of their shard files."""
    root = shard_root(root)
    # Only the columns used here: the others (sha256, origin) would double the memory.
    span_columns = [c for pair in SPAN_COLUMNS for c in pair]
    part = read_manifest(root, columns=["key", "shard", "label", *span_columns], split=split)
    meta = manifest_metadata(part)
    fields = tuple(meta["fields"])
    spans = SPAN_COLUMNS[: len(fields)]  # [(offset column, length column)] per field
    span_array = np.stack(
        [
            np.stack([part[c].fill_null(-1).to_numpy(zero_copy_only=False) for c in pair], -1)
            for pair in spans
        ],
        axis=1,
    ).astype(np.int64, copy=False)  # [N, F, 2]
    # Single images need their one span; translation samples at least one of the two.
    has = span_array[:, :, 1] >= 0  # [N, F]
    if not (has.all() if len(fields) == 1 else has.any(axis=1).all()):
        raise GanlibError(f"{root}: {split} rows without byte offsets; re-run the shard stage")
    # Dictionary codes follow first appearance, so shard ids keep the manifest's shard order.
    shards = pc.dictionary_encode(part["shard"]).combine_chunks()
    data = _Split(
        keys=_fixed_width(part["key"]),
        shard_ids=shards.indices.to_numpy(zero_copy_only=False).astype(np.int32),
        shards=shards.dictionary.to_pylist(),
        spans=span_array,
        labels=part["label"].fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32),
        fields=fields,
        classes=meta["classes"],
        root=root,
        manifest=manifest_path(root),
    )
    del part, shards
    pa.default_memory_pool().release_unused()  # the table's buffers, back to the system
    _check_shard_sizes(data)
    return data


def _check_shard_sizes(data: _Split) -> None:
    """Fail early, in the main process, when a shard is missing or the manifest points past
    its end. One listing per shard directory (one request per 1,000 objects on S3)."""
    ends = (data.spans[:, :, 0] + data.spans[:, :, 1]).max(axis=1)  # [N] end of each sample
    # (an absent field's (-1, -1) ends at -2, below any present one)
    needed = np.zeros(len(data.shards), np.int64)  # [S] bytes each shard must hold
    np.maximum.at(needed, data.shard_ids, ends)
    fs, base = storage.open_location(data.root)
    sizes: dict[str, int] = {}
    for folder in sorted({s.rpartition("/")[0] for s in data.shards}):
        try:
            infos = fs.get_file_info(pafs.FileSelector(storage.join(base, folder)))
        except FileNotFoundError:
            continue
        except (pa.ArrowException, OSError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise GanlibError(f"{storage.join(data.root, folder)}: cannot list ({why})") from None
        sizes |= {storage.join(folder, i.base_name): i.size for i in infos}
    for i, (shard, n) in enumerate(zip(data.shards, needed.tolist(), strict=True)):
        size = sizes.get(shard)
        if size is None:
            raise GanlibError(f"{data.location(i)}: shard not found; re-run the shard stage")
        if size < n:
            raise GanlibError(
                f"{data.location(i)}: {size} bytes, but the manifest points up to byte {n}; "
                "re-run the shard stage"
            )


# Byte ranges of one batch closer than this are fetched as one request: a few tar headers
# between neighbouring samples cost far less than another round trip (~5-50 ms on S3).
MERGE_GAP = 64 * 1024
_REMOTE_THREADS = 16  # requests of one batch in flight at once on object storage


def merge_ranges(spans: list[tuple[int, int, int]], gap: int = MERGE_GAP) -> list[list]:
    """``[(shard, offset, length)]`` -> requests ``[shard, start, end, [indices]]``: sorted by
    shard and offset, ranges of one shard at most ``gap`` bytes apart merged into one."""
    out: list[list] = []
    for i in sorted(range(len(spans)), key=lambda i: spans[i][:2]):
        shard, offset, length = spans[i]
        last = out[-1] if out else None
        if last is not None and last[0] == shard and offset - last[2] <= gap:
            last[2] = max(last[2], offset + length)
            last[3].append(i)
        else:
            out.append([shard, offset, offset + length, [i]])
    return out


class _ShardReader:
    """Reads samples' encoded images by their manifest byte ranges, keeping shard files open.

    One open file per shard (at most ``_MAX_OPEN_SHARDS``), local or remote alike (a
    ``pyarrow.fs`` random-access file: ``pread`` on a local disk, ranged GETs on S3/GCS).
    :meth:`read_many` fetches a batch's ranges together, neighbouring ranges merged into one
    request, concurrently on object storage (locally each sample is one ``pread``). With
    ``cache_dir`` a remote shard is downloaded whole on first touch (under a file lock, so
    ranks and loader workers of a node share one copy) and read locally from then on. A
    context manager: files are closed on exit (also when a consumer stops early and its
    generator is closed).
    """

    def __init__(self, data: _Split, cache_dir: str | None = None, gap: int | None = None) -> None:
        self.data = data
        self.fs, self.base = storage.open_location(data.root)
        self.cache = None
        remote = not isinstance(self.fs, pafs.LocalFileSystem)
        if cache_dir and remote:  # one directory per shard root
            tag = hashlib.sha256(data.root.encode()).hexdigest()[:16]
            self.cache = Path(cache_dir).expanduser().absolute() / tag
        # Requests over the network are what costs: merge them, and keep several in flight.
        # A local pread costs microseconds: read exactly the samples, nothing in between.
        self.concurrent = remote and self.cache is None
        self.gap = (MERGE_GAP if self.concurrent else 0) if gap is None else gap
        self.files: dict[int, Any] = {}  # shard id -> open file, oldest first
        self.requests = 0  # ranged reads issued (after merging): what a GET costs is per request
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> _ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _open(self, shard: int):
        f = self.files.get(shard)
        if f is not None:
            return f
        if len(self.files) >= _MAX_OPEN_SHARDS:
            self.files.pop(next(iter(self.files))).close()
        rel = self.data.shards[shard]
        try:
            if self.cache is not None:
                f = pafs.LocalFileSystem().open_input_file(str(self._cached(rel)))
            else:
                f = self.fs.open_input_file(storage.join(self.base, rel))
        except FileNotFoundError:
            raise GanlibError(
                f"{self.data.location(shard)}: shard not found; re-run the shard stage"
            ) from None
        except (pa.ArrowException, OSError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise GanlibError(f"{self.data.location(shard)}: cannot open ({why})") from None
        self.files[shard] = f
        return f

    def _cached(self, rel: str) -> Path:
        """The local copy of shard ``rel``, downloaded whole by whoever gets the lock first."""
        import fcntl

        dst = self.cache / rel
        if dst.is_file():
            return dst
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst.with_name(dst.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not dst.is_file():  # another process may have finished it while we waited
                tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}")
                remote = storage.join(self.base, rel)
                with self.fs.open_input_stream(remote) as src, open(tmp, "wb") as out:
                    while block := src.read(8 << 20):
                        out.write(block)
                os.replace(tmp, dst)
        return dst

    def read_many(self, items: list[tuple[int, int]]) -> list[bytes]:
        """The PNG bytes of ``(row, field)`` pairs (a field is an index into the fields)."""
        spans = []  # (shard, offset, length) of each item
        for row, field in items:
            offset, length = self.data.spans[row, field].tolist()
            spans.append((int(self.data.shard_ids[row]), offset, length))
        requests = merge_ranges(spans, self.gap)
        files = [self._open(shard) for shard, *_ in requests]  # opened here, not in threads

        def fetch(k: int) -> bytes:
            _, start, end, _ = requests[k]
            return files[k].read_at(end - start, start)

        if self.concurrent and len(requests) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_REMOTE_THREADS)
            blobs = list(self._pool.map(fetch, range(len(requests))))
        else:
            blobs = [fetch(k) for k in range(len(requests))]
        self.requests += len(requests)
        out: list[bytes] = [b""] * len(items)
        for (_, start, _, members), blob in zip(requests, blobs, strict=True):
            for i in members:
                _, offset, length = spans[i]
                png = blob[offset - start : offset - start + length]
                if len(png) != length or not png.startswith(PNG_SIGNATURE):
                    row = items[i][0]
                    raise GanlibError(
                        f"{self.data.location(spans[i][0])}: no PNG of {self.data.key(row)} at "
                        f"bytes {offset}..{offset + length}; the manifest does not match the "
                        "shards, re-run the shard stage"
                    )
                out[i] = png
        return out

    def decode(self, row: int, field: int, png: bytes) -> np.ndarray:
        """``decode_png`` of what :meth:`read_many` returned; a PNG that does not decode is a
        one-line error saying whether its bytes still are those the manifest recorded."""
        try:
            return decode_png(png)
        # Pillow raises many types for damaged data (OSError, SyntaxError, ValueError, ...).
        except Exception as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            why = re.sub(r" <[^>]*>", "", why)  # "cannot identify image file <_io.BytesIO ...>"
        key, name = self.data.key(row), self.data.fields[field]
        shard = self.data.location(int(self.data.shard_ids[row]))
        sha = stored_sha256(self.data.manifest, key, name)
        if sha is None:
            hint = "the manifest holds no sha256 of it (an older ganlib); re-run the shard stage"
        elif hashlib.sha256(png).hexdigest() != sha:
            hint = f"its bytes differ from the manifest's sha256: {CORRUPTED}"
        else:
            hint = "its bytes are those sharded (the manifest's sha256); re-run the shard stage"
        raise GanlibError(f"{shard}: {key}.{name} does not decode ({why}); {hint}")


def _load_batch(
    reader: _ShardReader, rows: np.ndarray, fields: tuple[int, ...], unpaired: bool = False
) -> dict[str, Any]:
    """Read and decode one batch: image field ``fields[k]`` of the split rows ``rows[:, k]``.

    ``rows`` is ``[B, len(fields)]``: the same row repeated, or for unpaired translation an A
    row and a B row. Labels and ``"key"`` come from the first field's rows; unpaired batches
    also get ``"key_b"``, the keys of the B images.
    """
    data = reader.data
    F = len(fields)
    # [B * F] PNG bytes, the batch's ranges fetched together
    flat = reader.read_many([(int(r), f) for row in rows for r, f in zip(row, fields, strict=True)])
    batch: dict[str, Any] = {}
    for k, f in enumerate(fields):
        field = data.fields[f]
        # [B, H, W, C] uint8
        arrs = np.stack(
            [reader.decode(int(r), f, flat[j * F + k]) for j, r in enumerate(rows[:, k])]
        )
        batch[BATCH_NAMES[field]] = from_uint8(arrs)  # [B, C, H, W] in [-1, 1]
    batch["label"] = torch.from_numpy(data.labels[rows[:, 0]].astype(np.int64))  # [B] int64
    batch["key"] = [data.key(i) for i in rows[:, 0]]
    if unpaired:
        batch["key_b"] = [data.key(i) for i in rows[:, 1]]
    return batch


class _EpochBatches(IterableDataset):
    """One rank's batches of one epoch from ``start_batch`` on, split over loader workers."""

    def __init__(
        self,
        data: _Split,
        rows: np.ndarray,
        start_batch: int,
        unpaired: bool,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        self.cache_dir = cache_dir
        self.rows = rows  # [n_batches, B, F]: the split row of each batch item's field
        self.fields = tuple(range(len(data.fields)))  # every image field, in order
        self.start_batch = start_batch
        self.unpaired = unpaired

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        # The DataLoader (in_order=True, its default) takes one batch from each worker in turn
        # and skips a worker only once it is exhausted; the low workers hold the extra batches,
        # so the output is start_batch, start_batch + 1, ... for every number of workers.
        return self._batches(self.rows[self.start_batch + worker :: n_workers])  # [J, B, F]

    def _batches(self, rows: np.ndarray) -> Iterator[dict[str, Any]]:
        """Yield the batches ``rows`` [J, B, F] in order, each read and decoded on its own.

        A :class:`GanlibError` is yielded as ``{"error": message}`` and ends the stream: a
        worker process's exception reaches the main process with its traceback in the
        message, which would not be one line any more. :class:`ShardLoader` raises it again.
        """
        with _ShardReader(self.data, self.cache_dir) as reader:
            for batch_rows in rows:  # [B, F]
                try:
                    batch = _load_batch(reader, batch_rows, self.fields, self.unpaired)
                except GanlibError as exc:
                    yield {"error": str(exc)}
                    return
                yield batch


def _init_worker(worker_id: int) -> None:
    # K workers share the machine's cores; PNG decoding is single-threaded anyway.
    torch.set_num_threads(1)


class ShardLoader:
    """The training loader of one DDP rank: equal batch counts, exactly-once, seeded shuffle.

    Build one per rank; call :meth:`set_epoch` before each epoch, then iterate. Each batch is
    a dict: ``"image"`` float32 ``[B, C, H, W]`` in [-1, 1] (``"a"`` and ``"b"`` for
    translation shards), ``"label"`` int64 ``[B]`` (-1 when unlabelled), ``"key"`` list of B
    strings (plus ``"key_b"``, the keys of the ``"b"`` images, when unpaired).
    The batches of an epoch depend on (seed, epoch, rank, world_size, batch_size) only, not
    on ``num_workers``; ``set_epoch(e, start_batch=b)`` yields exactly batches ``b, b+1, ...``
    of the uninterrupted epoch.

    ``unpaired=True`` (translation shards only) draws A and B images independently, see the
    module docstring; otherwise translation shards must hold (A, B) pairs in every sample.
    ``shard_root`` is a path or a URL (:mod:`ganlib.storage`); ``block`` permutes runs of
    that many neighbouring samples (see :func:`rank_batches`); ``cache_dir`` keeps a local
    copy of each remote shard once it is first read.
    """

    def __init__(
        self,
        shard_root: str | Path,
        *,
        batch_size: int,
        rank: int,
        world_size: int,
        num_workers: int,
        seed: int,
        split: str = "train",
        pin_memory: bool = False,
        unpaired: bool = False,
        block: int = 1,
        cache_dir: str | None = None,
    ) -> None:
        bad = batch_size < 1 or world_size < 1 or not 0 <= rank < world_size
        if bad or num_workers < 0 or block < 1:
            raise ValueError(
                f"bad loader arguments: batch_size={batch_size}, rank={rank}, "
                f"world_size={world_size}, num_workers={num_workers}, block={block}"
            )
        self.data = _read_split(shard_root, split)
        self.unpaired = unpaired
        has = self.data.spans[:, :, 1] >= 0  # [N, F]
        if unpaired:
            if len(self.data.fields) != 2:
                raise GanlibError(
                    f"{shard_root}: unpaired loading needs translation shards (a.png, b.png); "
                    f"these hold {', '.join(self.data.fields)}"
                )
            # The split rows holding each domain's image, in manifest order: [N_A], [N_B]
            self.domain_rows = [np.flatnonzero(has[:, 0]), np.flatnonzero(has[:, 1])]
        else:
            if not has.all():
                raise GanlibError(
                    f"{shard_root}: {split} split holds {int((~has.all(axis=1)).sum())} samples "
                    "of a single domain (A and B were not paired); train them unpaired "
                    "(translation.mode: unpaired)"
                )
            self.domain_rows = [np.arange(len(self.data.keys))]
        n = min(len(rows) for rows in self.domain_rows)
        if n < batch_size * world_size:
            what = "images in a domain" if unpaired else "samples"
            raise GanlibError(
                f"{split} split has {n} {what}, fewer than one global batch "
                f"B×W={batch_size}×{world_size}={batch_size * world_size}; "
                "lower train.batch_size"
            )
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.block = block
        self.cache_dir = cache_dir
        self.epoch = 0
        self.start_batch = 0

    @property
    def classes(self) -> list[str] | None:
        """Class names from the manifest (None when the shards carry no names)."""
        return self.data.classes

    def __len__(self) -> int:
        """Batches per epoch, the same on every rank."""
        n = min(len(rows) for rows in self.domain_rows)
        return n // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (the shuffle) and the batch the next iteration starts at.

        The next iteration yields batches ``start_batch .. len(self) - 1`` of that epoch.
        """
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} not in 0..{len(self)}")
        self.epoch = epoch
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # One index stream per domain: [n_batches, B] split rows each.
        streams = [
            domain[
                rank_batches(
                    len(domain),
                    batch_size=self.batch_size,
                    rank=self.rank,
                    world_size=self.world_size,
                    seed=self.seed,
                    epoch=self.epoch,
                    stream=stream,
                    block=self.block,
                )[: len(self)]
            ]
            for stream, domain in enumerate(self.domain_rows)
        ]
        if self.unpaired:
            rows = np.stack(streams, axis=-1)  # [n_batches, B, 2]: A rows, B rows
        else:  # every field from the same row, as a view: [n_batches, B, F]
            shape = (*streams[0].shape, len(self.data.fields))
            rows = np.broadcast_to(streams[0][:, :, None], shape)
        loader = DataLoader(
            _EpochBatches(self.data, rows, self.start_batch, self.unpaired, self.cache_dir),
            batch_size=None,  # the dataset yields whole batches
            num_workers=self.num_workers,
            persistent_workers=False,
            pin_memory=self.pin_memory,
            worker_init_fn=_init_worker if self.num_workers else None,
            # its own generator: the default one draws from the global RNG, which would make
            # the training RNG stream depend on where epochs start (breaking exact resume)
            generator=torch.Generator().manual_seed(self.seed),
        )
        return _raise_errors(loader)


def _raise_errors(batches: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The batches, raising the error a loader worker yielded instead of a batch."""
    for batch in batches:
        if "error" in batch:
            raise GanlibError(batch["error"])
        yield batch


def iter_split(
    shard_root: str | Path,
    split: str,
    batch_size: int,
    fields: tuple[str, ...] | None = None,
    rows: np.ndarray | None = None,
) -> Iterator[dict[str, Any]]:
    """Every sample of ``split`` exactly once, in manifest order, in one process.

    Batches as in :class:`ShardLoader`; the last one holds the remainder. For evaluation.
    ``fields`` (e.g. ``("a.png",)``) loads only those image fields, from the samples that
    hold them: the way to read one domain of unpaired translation shards. ``rows`` (sorted
    positions among those samples) reads only them: featurize's seeded reference subset.
    ``shard_root`` is a path or a URL.
    """
    data = _read_split(shard_root, split)
    names = data.fields if fields is None else fields
    if not names or not set(names) <= set(data.fields):
        raise ValueError(f"fields {names} not among the shards' {data.fields}")
    ids = tuple(data.fields.index(name) for name in names)
    has = data.spans[:, ids, 1] >= 0  # [N, F]
    if fields is None and not has.all():
        raise GanlibError(
            f"{shard_root}: {split} split holds samples of a single domain; read each domain "
            "on its own (fields=('a.png',) or ('b.png',))"
        )
    held = np.flatnonzero(has.all(axis=1))  # [N'] in manifest order
    rows = held if rows is None else held[rows]
    with _ShardReader(data) as reader:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size, None]  # [B, 1]
            yield _load_batch(reader, np.repeat(chunk, len(ids), axis=1), ids)
