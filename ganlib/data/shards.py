"""The shard writer: samples -> WebDataset tar shards, ``manifest.parquet`` and ``stats.json``.

Layout of a shard root::

    train/train-000000.tar ...   val/val-000000.tar ...   manifest.parquet   stats.json

Each tar sample is ``KEY.png`` (or ``KEY.a.png`` + ``KEY.b.png`` for translation pairs, or
just one of them for the images of two independent domains) plus ``KEY.cls`` (the label as
ASCII digits) when the sample has a label. The tars are plain, uncompressed
WebDataset shards: portable, and streamable by any WebDataset reader (e.g. from object storage).
The manifest is also their byte index: ``offset``/``length`` locate each sample's image data
inside its tar (``offset_b``/``length_b`` the ``b.png``), so the training loader reads
exactly the samples it needs with one ``pread`` each, like WebDataset's own indexed ``wids``
datasets (see :mod:`ganlib.data.loader`). Each image's ``sha256`` (``sha256_b`` of a ``b.png``)
lets :func:`verify` (``ganlib shards verify``) and the loader tell bytes changed since sharding.

The output is byte-identical for the same input, written in one streaming pass (memory does not
grow with the number of images), and replaces ``out_dir`` atomically: a failed or interrupted
run leaves the old ``out_dir`` as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from tqdm import tqdm

from ganlib import storage
from ganlib.data.images import encode_png
from ganlib.data.records import MAX_CLASSES, Sample, Skipped
from ganlib.errors import GanlibError

if TYPE_CHECKING:
    from ganlib.config import DataConfig

MANIFEST = "manifest.parquet"
STATS = "stats.json"
SPLITS = ("train", "val")

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),  # relative to the shard root, e.g. "train/train-000003.tar"
        ("index", pa.int32()),  # position of the sample within its shard
        # The PNG of "png" or "a.png" is bytes [offset, offset + length) of the shard file;
        # offset_b/length_b locate "b.png". A column pair is null when the sample lacks that
        # field: offset_b for single images and A-only samples, offset for B-only samples.
        ("offset", pa.int64()),
        ("length", pa.int64()),
        ("offset_b", pa.int64()),
        ("length_b", pa.int64()),
        ("label", pa.int64()),  # null when the source has no labels
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),  # of the stored bytes of the sample's first image field
        ("sha256_b", pa.string()),  # of the stored b.png; null when the sample has none
        ("origin", pa.string()),
    ]
)

_KEY = re.compile(r"[A-Za-z0-9_-]+")  # WebDataset splits member names at the first dot
# The image layouts a shard root can hold. A sample holds every field of its layout, except
# that a translation sample may hold a single domain ("a.png" or "b.png" alone).
_FIELDS = (("png",), ("a.png", "b.png"))
# The manifest columns (offset, length) of the i-th image field of the manifest's "fields".
SPAN_COLUMNS = (("offset", "length"), ("offset_b", "length_b"))
# The manifest column holding the sha256 of each image field's stored bytes ("sha256" is of
# the first field a sample holds: a.png, or b.png for a B-only sample, whose sha256_b is equal).
SHA256_COLUMNS = {"png": "sha256", "a.png": "sha256", "b.png": "sha256_b"}
_ROWS_PER_FLUSH = 4096  # manifest rows held in memory before they go to a parquet row group
# The fewest train images (of each image field) the pipeline works with: featurize's
# reference statistics, a mean and a covariance, need two. The shard stage refuses fewer.
MIN_TRAIN_SAMPLES = 2
# What a sample whose bytes no longer match the manifest needs.
CORRUPTED = "corrupted since sharding; run `dvc repro shard` (or `dvc checkout`)"


def split_of(key: str, val_fraction: float) -> str:
    """``"val"`` or ``"train"`` from a hash of the key alone: adding images never moves old ones."""
    h = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:16], 16)
    return "val" if h / 2**64 < val_fraction else "train"


def write_shards(
    samples: Iterable[Sample | Skipped],
    out_dir: Path,
    *,
    shard_size: int,
    val_fraction: float,
    classes: list[str] | None,
    total: int | None = None,
    progress: bool = True,
    source: str = "the source",
    min_train: int = 0,
    workers: int = 1,
) -> dict[str, Any]:
    """Write ``samples`` as train/val shards under ``out_dir`` and return the stats.

    ``workers`` > 1 decodes (when ``samples`` holds a source's lazy tasks,
    :meth:`ganlib.data.sources.Source.lazy`) and PNG-encodes the samples in an ordered
    process pool; the main process writes them in input order, so the output is
    byte-identical to ``workers=1``.

    ``classes`` names the label indices, or is None for unnamed or no labels: unnamed labels
    are named ``"0"`` .. ``"K-1"`` (K = the largest label + 1) in the manifest, so that they
    serve every stage that needs classes. ``total`` is the number of inputs when known, for
    the progress bar; ``source`` names the input in errors. Everything is written into a
    temporary sibling directory that replaces ``out_dir`` only when complete; on any exception
    (KeyboardInterrupt included) it is removed and ``out_dir`` is left untouched. Raises
    :class:`GanlibError` when no input is usable, or when the train split holds fewer than
    ``min_train`` images of an image field (the shard stage asks for
    :data:`MIN_TRAIN_SAMPLES`).
    """
    if shard_size < 1 or workers < 1:
        raise ValueError(f"shard_size and workers must be >= 1, got {shard_size}, {workers}")
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():  # left by a killed run that had the same pid
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        pool = None
        if workers > 1:
            pool = _pool_context().Pool(workers)
            prepared = _in_order(pool, samples, window=4 * workers)
        else:
            prepared = map(_prepare, samples)
        with tqdm(
            prepared,
            total=total,
            desc="shard",
            unit="img",
            file=sys.stderr,
            mininterval=1.0,
            disable=None if progress else True,  # None: off when stderr is not a terminal
        ) as inputs:
            stats = _write_all(inputs, tmp, shard_size, val_fraction, classes, source, min_train)
        if pool is not None:
            pool.close()
            pool.join()
        kept = out_dir / ".gitignore"  # DVC's, tracked by git: the new shards keep it
        if kept.is_file():
            shutil.copy2(kept, tmp / kept.name)
        _replace_dir(tmp, out_dir)
    except BaseException:
        if pool is not None:
            pool.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stats


class _Prepared:
    """A sample with its images PNG-encoded: what the writer needs, small to send between
    processes (the arrays' dtype and shape stay for the checks)."""

    def __init__(self, item: Sample) -> None:
        self.key, self.label, self.origin = item.key, item.label, item.origin
        self.layout = {name: (arr.dtype.name, arr.shape) for name, arr in item.images.items()}
        # (a non-uint8 array is a source's bug, which _check_sample names; it is not encoded)
        self.png = {
            name: encode_png(arr) if arr.dtype.name == "uint8" else b""
            for name, arr in item.images.items()
        }


def _pool_context() -> Any:
    """fork when this process has no other thread (the children start at once, with what is
    imported), else forkserver: forking while another thread (pyarrow's, torch's, OpenMP's)
    holds a lock leaves the child waiting for it forever."""
    import multiprocessing

    try:
        alone = len(os.listdir("/proc/self/task")) == 1
    except OSError:  # not Linux
        alone = False
    return multiprocessing.get_context("fork" if alone else "forkserver")


def _in_order(
    pool: Any, samples: Iterable[Any], window: int, chunk: int = 16
) -> Iterable[_Prepared | Skipped]:
    """``_prepare`` of each input in ``pool`` (``chunk`` inputs per task), yielded in input
    order with at most ``window`` tasks in flight. The source is iterated here, in the
    caller's thread (``Pool.imap`` would run it in a pool thread), so its errors surface where
    the serial writer raises them."""
    from collections import deque
    from itertools import islice

    pending: deque = deque()
    it = iter(samples)
    while batch := list(islice(it, chunk)):
        pending.append(pool.apply_async(_prepare_all, (batch,)))
        if len(pending) >= window:
            yield from pending.popleft().get()
    while pending:
        yield from pending.popleft().get()


def _prepare_all(items: list[Any]) -> list[_Prepared | Skipped]:
    return [_prepare(item) for item in items]


def _prepare(item: Any) -> _Prepared | Skipped:
    """Decode (a source task) and encode one input; in a pool worker or in this process."""
    if callable(item):
        item = item()
    return item if isinstance(item, Skipped) else _Prepared(item)


def read_manifest(
    path: str | Path, columns: list[str] | None = None, split: str | None = None
) -> pa.Table:
    """The manifest table of a shard root (``path`` is the root or the parquet file itself; a
    local path or a URL, see :mod:`ganlib.storage`).

    ``columns`` selects columns (all by default; fewer save memory on large manifests) and
    ``split`` the rows of one split (filtered while reading: the other split's rows are never
    held). Raises a one-line :class:`GanlibError` when ``path`` is not a manifest written by
    the shard stage (not parquet, no ganlib metadata, missing columns).
    """
    path = manifest_path(path)
    fs, inner = storage.open_location(path)
    try:
        schema = pq.read_schema(inner, filesystem=fs)
    except (pa.ArrowException, OSError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GanlibError(
            f"{path}: not a parquet file ({why}); give a shard directory or its {MANIFEST}"
        ) from None
    _check_metadata(schema, path)
    missing = sorted(set(columns or ()) - set(schema.names))
    if missing:
        raise GanlibError(
            f"{path}: no {', '.join(missing)} column(s), written by an older ganlib; "
            "re-run the shard stage"
        )
    filters = [("split", "==", split)] if split is not None else None
    try:
        table = pq.read_table(inner, columns=columns, filesystem=fs, filters=filters)
    except (pa.ArrowException, OSError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GanlibError(f"{path}: unreadable manifest ({why}); re-run the shard stage") from None
    return table.replace_schema_metadata(schema.metadata)  # filters may drop it


def manifest_path(path: str | Path) -> str:
    """The manifest file of a shard root, or ``path`` itself when it names a file."""
    path = str(path)
    kind = storage.file_type(path)
    if kind == pafs.FileType.Directory:
        path = storage.join(path, MANIFEST)
        kind = storage.file_type(path)
    if kind != pafs.FileType.File:
        raise GanlibError(f"{path}: manifest not found; run the shard stage first")
    return path


def shard_root(path: str | Path) -> str:
    """The shard root of ``path`` (the root itself, or the directory of its manifest file)."""
    path = str(path)
    if storage.file_type(path) == pafs.FileType.File:
        return path.rstrip("/").rsplit("/", 1)[0] if "/" in path else "."
    return path


def _check_metadata(schema: pa.Schema, path: Path) -> None:
    """The manifest metadata ganlib writes: ``classes`` (null or names) and ``fields``."""
    meta = schema.metadata or {}
    try:
        classes = json.loads(meta[b"classes"])
        fields = tuple(json.loads(meta[b"fields"]))
        names = classes is None or (
            isinstance(classes, list) and all(isinstance(c, str) for c in classes)
        )
        ok = fields in _FIELDS and names
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise GanlibError(
            f"{path}: a parquet file without ganlib's shard metadata (classes, fields): not a "
            "manifest written by the shard stage"
        )


def manifest_metadata(table: pa.Table) -> dict[str, Any]:
    """``{"classes": [names] or None, "fields": ["png"] or ["a.png", "b.png"]}`` of a manifest."""
    meta = table.schema.metadata
    return {
        "classes": json.loads(meta[b"classes"]),
        "fields": json.loads(meta[b"fields"]),
    }


def count_images(path: str | Path, split: str, field: str) -> int:
    """How many samples of ``split`` hold image field ``field`` (e.g. the B images of
    unpaired translation shards)."""
    lengths = [pair[1] for pair in SPAN_COLUMNS]
    table = read_manifest(path, columns=["split", *lengths], split=split)
    length = lengths[manifest_metadata(table)["fields"].index(field)]
    return int(pc.sum(pc.is_valid(table[length]).cast(pa.int64())).as_py() or 0)


def summarize(path: Path, n_keys: int = 5) -> dict[str, Any]:
    """What ``ganlib shards info PATH`` shows: counts per split, shards, classes, first keys.

    ``path`` is a shard root or its manifest file.
    """
    table = read_manifest(path, columns=["key", "split", "shard", "label"])
    meta = manifest_metadata(table)
    splits = {}
    for split in SPLITS:
        part = table.filter(pc.equal(table["split"], split))
        splits[split] = {
            "samples": part.num_rows,
            "shards": len(pc.unique(part["shard"])),
            "first_keys": part["key"].slice(0, n_keys).to_pylist(),
        }
    labels = table["label"]
    classes = None
    if labels.null_count < table.num_rows:
        counts = Counter(labels.drop_null().to_pylist())
        if meta["classes"]:
            classes = {name: counts.get(i, 0) for i, name in enumerate(meta["classes"])}
        else:  # written before unnamed labels were named: only the labels that occur
            classes = {str(i): counts[i] for i in sorted(counts)}
    return {
        "samples": table.num_rows,
        "splits": splits,
        "classes": classes,
        "fields": meta["fields"],
    }


# -- verifying -------------------------------------------------------------------------------

_HASH_BLOCK = 1 << 20  # bytes hashed at a time: a member is never held whole


def stored_sha256(path: Path, key: str, field: str) -> str | None:
    """The manifest's sha256 of image field ``field`` of sample ``key`` (None if it has none).

    For error messages: it reads two columns of the rows of that one key.
    """
    path = manifest_path(path)
    fs, inner = storage.open_location(path)
    column = SHA256_COLUMNS[field]
    if column not in pq.read_schema(inner, filesystem=fs).names:  # before sha256_b existed
        return None
    table = pq.read_table(inner, columns=[column], filters=[("key", "==", key)], filesystem=fs)
    return table[column][0].as_py() if table.num_rows else None


def verify(path: Path) -> dict[str, Any]:
    """What ``ganlib shards verify PATH`` checks: every member of every tar of a shard root
    against its manifest, streaming (a block of one member at a time, one shard's manifest
    rows at a time).

    Each image member must have the manifest's sha256 and data offset, each ``.cls`` the
    manifest's label. Returns ``{"samples", "shards", "members", "missing", "extra",
    "mismatched"}``; each problem class is ``{"count": n, "first": ["SHARD: MEMBER: why",
    ...]}`` (a few examples), with count 0 when the shards are as the shard stage wrote them.
    """
    manifest = manifest_path(path)
    if storage.is_url(manifest):
        raise GanlibError(f"{manifest}: verify reads local shard roots only; download them first")
    path = Path(manifest)
    root = path.parent
    span_columns = [c for pair in SPAN_COLUMNS for c in pair]
    columns = ["key", "shard", "label", *span_columns, "sha256", "sha256_b"]
    table = read_manifest(path, columns=columns)
    fields = manifest_metadata(table)["fields"]
    shards = pc.dictionary_encode(table["shard"]).combine_chunks()
    ids = shards.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(ids, kind="stable")  # the rows of each shard together, in manifest order
    ends = np.cumsum(np.bincount(ids, minlength=len(shards.dictionary))).tolist()
    problems = _Problems()
    members = start = 0
    for shard, end in zip(shards.dictionary.to_pylist(), ends, strict=True):
        expected = {}  # member name -> ("sha256", hex, data offset) or ("cls", bytes, None)
        for r in table.take(order[start:end]).to_pylist():
            for (off_col, len_col), field in zip(SPAN_COLUMNS, fields, strict=False):
                if r[len_col] is not None:
                    sha = r[SHA256_COLUMNS[field]]
                    expected[f"{r['key']}.{field}"] = ("sha256", sha, r[off_col])
            if r["label"] is not None:
                expected[f"{r['key']}.cls"] = ("cls", str(r["label"]).encode("ascii"), None)
        start = end
        members += len(expected)
        _verify_tar(root / shard, shard, expected, problems)
    listed = set(shards.dictionary.to_pylist())
    for split in SPLITS:
        for tar in sorted((root / split).glob("*.tar")):
            if f"{split}/{tar.name}" not in listed:
                problems.add("extra", f"{split}/{tar.name}: a tar the manifest does not list")
    return {"samples": table.num_rows, "shards": len(listed), "members": members, **problems.found}


class _Problems:
    """Counts of missing, extra and mismatched members, with the first few of each."""

    EXAMPLES = 3

    def __init__(self) -> None:
        self.found = {k: {"count": 0, "first": []} for k in ("missing", "extra", "mismatched")}

    def add(self, kind: str, line: str, n: int = 1) -> None:
        entry = self.found[kind]
        entry["count"] += n
        if len(entry["first"]) < self.EXAMPLES:
            entry["first"].append(line)


def _verify_tar(path: Path, shard: str, expected: dict[str, tuple], problems: _Problems) -> None:
    """Stream one tar, checking its members against ``expected`` (emptied as they are seen)."""
    try:
        with tarfile.open(path, mode="r|") as tar:
            for info in tar:
                want = expected.pop(info.name, None)
                if want is None:
                    problems.add("extra", f"{shard}: {info.name}: not in the manifest")
                    continue
                if not info.isfile():
                    problems.add("mismatched", f"{shard}: {info.name}: not a regular file")
                    continue
                kind, value, offset = want
                fp = tar.extractfile(info)
                if kind == "cls":
                    data = fp.read(64)
                    if data != value:
                        why = f"label {data[:20]!r}, the manifest says {value.decode()}"
                        problems.add("mismatched", f"{shard}: {info.name}: {why}")
                    continue
                digest = hashlib.sha256()
                while block := fp.read(_HASH_BLOCK):
                    digest.update(block)
                if value is not None and digest.hexdigest() != value:
                    why = "sha256 differs from the manifest"
                    problems.add("mismatched", f"{shard}: {info.name}: {why}")
                elif info.offset_data != offset:
                    why = f"at byte {info.offset_data}, the manifest says {offset}"
                    problems.add("mismatched", f"{shard}: {info.name}: {why}")
    except FileNotFoundError:
        n = len(expected)
        problems.add("missing", f"{shard}: the tar file is missing ({n} members)", n)
        return
    except (tarfile.TarError, OSError) as exc:
        problems.add("mismatched", f"{shard}: unreadable tar ({exc})")
    for name in expected:
        problems.add("missing", f"{shard}: {name}: not in the tar")


# -- writing ---------------------------------------------------------------------------------


class _SplitWriter:
    """Rolls ``shard_size`` samples per tar file for one split; deterministic tar headers."""

    def __init__(self, root: Path, split: str, shard_size: int) -> None:
        self.root = root
        self.split = split
        self.shard_size = shard_size
        self.count = 0
        self.shard = ""
        self.file: io.BufferedWriter | None = None
        self.tar: tarfile.TarFile | None = None
        (root / split).mkdir()

    @property
    def n_shards(self) -> int:
        return -(-self.count // self.shard_size)

    def write(self, key: str, members: dict[str, bytes]) -> tuple[str, int, dict[str, int]]:
        """Append one sample as ``KEY.NAME`` tar members.

        Returns (shard path relative to the root, index in the shard, ``{name: data offset}``):
        member ``name``'s bytes are ``[offset, offset + len(members[name]))`` of the shard file.
        """
        index = self.count % self.shard_size
        if index == 0:
            self.close()
            self.shard = f"{self.split}/{self.split}-{self.count // self.shard_size:06d}.tar"
            # Our own file object, whose position locates each member's data.
            self.file = open(self.root / self.shard, "wb")  # noqa: SIM115 (closed by close())
            # PAX headers (written only when needed) allow keys longer than USTAR's 100 bytes.
            self.tar = tarfile.TarFile(fileobj=self.file, mode="w", format=tarfile.PAX_FORMAT)
        offsets = {}
        # Sorted, as WebDataset's TarWriter does; readers only need a sample's members together.
        for name in sorted(members):
            data = members[name]
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size = len(data)
            # Fixed mtime, owner and mode make the bytes depend on the samples only.
            info.mtime, info.mode, info.uname, info.gname = 0, 0o444, "ganlib", "ganlib"
            self.tar.addfile(info, io.BytesIO(data))
            # addfile writes the header(s), then the data zero-padded to whole 512-byte blocks,
            # so the data starts that padded size before the file's new end.
            padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            offsets[name] = self.file.tell() - padded
        self.count += 1
        return self.shard, index, offsets

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()  # the end-of-archive blocks; it leaves our file open
            self.file.close()
            self.tar = self.file = None


class _ManifestWriter:
    """Buffers manifest rows and flushes them as parquet row groups, so memory stays flat."""

    def __init__(self, path: Path, classes: list[str] | None) -> None:
        self.path = path
        self.classes = classes
        self.rows: dict[str, list] = {name: [] for name in MANIFEST_SCHEMA.names}
        self.writer: pq.ParquetWriter | None = None

    def add(self, **row: Any) -> None:
        for name, value in row.items():
            self.rows[name].append(value)
        if len(self.rows["key"]) >= _ROWS_PER_FLUSH:
            self.flush()

    def open(self, fields: tuple[str, ...]) -> None:
        """Start the file; the image fields are known only from the first sample."""
        meta = {"classes": json.dumps(self.classes), "fields": json.dumps(list(fields))}
        schema = MANIFEST_SCHEMA.with_metadata(meta)
        self.writer = pq.ParquetWriter(self.path, schema)

    def flush(self) -> None:
        if self.rows["key"]:
            self.writer.write_table(pa.table(self.rows, schema=self.writer.schema))
            self.rows = {name: [] for name in MANIFEST_SCHEMA.names}

    def close(self) -> None:
        if self.writer is not None:
            self.flush()
            self.writer.close()
            self.writer = None


def _write_all(
    inputs: Iterable[_Prepared | Skipped],
    root: Path,
    shard_size: int,
    val_fraction: float,
    classes: list[str] | None,
    source: str,
    min_train: int,
) -> dict[str, Any]:
    skipped: list[dict[str, str]] = []
    labels: Counter[int] = Counter()
    domains: Counter[str] = Counter()  # samples holding each image field, and both a and b
    train_images: Counter[str] = Counter()  # train samples holding each image field
    fields: tuple[str, ...] | None = None
    shape: tuple[int, ...] | None = None  # (H, W, C) of every image
    with ExitStack() as stack:
        writers = {s: _SplitWriter(root, s, shard_size) for s in SPLITS}
        for w in writers.values():
            stack.callback(w.close)
        manifest = _ManifestWriter(root / MANIFEST, classes)
        stack.callback(manifest.close)

        for item in inputs:
            if isinstance(item, Skipped):
                skipped.append({"path": item.path, "reason": item.reason})
                continue
            if fields is None:
                fields = next((f for f in _FIELDS if set(item.layout) <= set(f)), None)
                if fields is None:
                    raise ValueError(
                        f"sample {item.key}: image fields {sorted(item.layout)} not in {_FIELDS}"
                    )
                shape = next(iter(item.layout.values()))[1]
                manifest.open(fields)
            _check_sample(item, fields, shape, classes)

            present = [name for name in fields if name in item.layout]
            members = {name: item.png[name] for name in present}
            for name in present:
                domains[name] += 1
            domains["pairs"] += len(present) == 2
            if item.label is not None:
                members["cls"] = str(item.label).encode("ascii")
                labels[item.label] += 1
            split = split_of(item.key, val_fraction)
            if split == "train":
                train_images.update(present)
            shard, index, offsets = writers[split].write(item.key, members)
            spans = dict.fromkeys(col for cols in SPAN_COLUMNS for col in cols)  # null: absent
            for (off_col, len_col), name in zip(SPAN_COLUMNS, fields, strict=False):
                if name in members:
                    spans[off_col], spans[len_col] = offsets[name], len(members[name])
            primary, b_png = members[present[0]], members.get("b.png")
            manifest.add(
                key=item.key,
                split=split,
                shard=shard,
                index=index,
                **spans,
                label=item.label,
                width=shape[1],
                height=shape[0],
                sha256=hashlib.sha256(primary).hexdigest(),
                sha256_b=hashlib.sha256(b_png).hexdigest() if b_png is not None else None,
                origin=item.origin,
            )

    n = {s: writers[s].count for s in SPLITS}
    if n["train"] + n["val"] == 0:
        if not skipped:
            raise GanlibError(f"no usable images in {source}: it holds no inputs")
        first = skipped[0]
        raise GanlibError(
            f"no usable images in {source}: {len(skipped)} inputs skipped, "
            f"e.g. {first['path']}: {first['reason']}"
        )

    if labels and classes is None:
        # Unnamed labels (an npz y, a parquet column without Hugging Face names) are named by
        # their index; the manifest's metadata was written before the largest one was known.
        classes = [str(i) for i in range(max(labels) + 1)]
        _set_manifest_classes(root / MANIFEST, classes)
    class_counts = {name: labels.get(i, 0) for i, name in enumerate(classes)} if labels else None
    stats = {
        "samples": n["train"] + n["val"],
        "train": n["train"],
        "val": n["val"],
        "shards": {s: writers[s].n_shards for s in SPLITS},
        "classes": class_counts,
        "skipped": len(skipped),
        "skipped_files": skipped,
        "resolution": shape[0],
        "channels": shape[2],
    }
    if fields == ("a.png", "b.png"):
        # Translation: images per domain, and how many samples are true (A, B) pairs.
        for name, field in (("A", "a.png"), ("B", "b.png")):
            if domains[field] == 0:  # the other one has some: skipped is not empty
                first = skipped[0]
                raise GanlibError(
                    f"no usable images of domain {name} in {source}: {len(skipped)} inputs "
                    f"skipped, e.g. {first['path']}: {first['reason']}"
                )
        stats["domains"] = {
            "A": domains["a.png"],
            "B": domains["b.png"],
            "pairs": domains["pairs"],
        }
    for name in fields:
        if train_images[name] < min_train:
            what = {"png": "images", "a.png": "A images", "b.png": "B images"}[name]
            raise GanlibError(
                f"too few samples in {source}: {what} in the train split: {train_images[name]}, "
                f"at least {min_train} are needed (featurize's reference statistics); "
                f"{n['train']} train + {n['val']} val samples with data.val_fraction "
                f"{val_fraction}: add images or lower data.val_fraction"
            )
    (root / STATS).write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats


def _set_manifest_classes(path: Path, classes: list[str]) -> None:
    """Rewrite the manifest at ``path`` with ``classes`` in its metadata, row group by row
    group (parquet keeps the schema's metadata in the footer, fixed when the writer opens)."""
    tmp = path.with_name(path.name + ".tmp")
    with pq.ParquetFile(path) as pf:
        schema = pf.schema_arrow
        schema = schema.with_metadata(schema.metadata | {b"classes": json.dumps(classes).encode()})
        with pq.ParquetWriter(tmp, schema) as writer:
            for i in range(pf.num_row_groups):
                writer.write_table(pf.read_row_group(i).replace_schema_metadata(schema.metadata))
    os.replace(tmp, path)


def _check_sample(
    item: _Prepared, fields: tuple[str, ...], shape: tuple[int, ...], classes: list[str] | None
) -> None:
    """Sources promise these; a violation is a bug there, caught before it corrupts shards."""
    if not _KEY.fullmatch(item.key):
        raise ValueError(f"sample key {item.key!r}: only letters, digits, '_' and '-' allowed")
    n_classes = len(classes) if classes is not None else MAX_CLASSES
    if item.label is not None and not 0 <= item.label < n_classes:
        raise ValueError(f"sample {item.key}: label {item.label} not a class index")
    names = set(item.layout)
    if not (names == set(fields) or (len(fields) == 2 and len(names) == 1 and names < set(fields))):
        raise ValueError(f"sample {item.key}: fields {sorted(names)}, expected {fields}")
    for name, (dtype, arr_shape) in item.layout.items():
        if dtype != "uint8" or arr_shape != shape:
            raise ValueError(
                f"sample {item.key}: {name} is {dtype}{list(arr_shape)}, "
                f"expected uint8{list(shape)} like the first sample"
            )


def _replace_dir(new: Path, dst: Path) -> None:
    """Move ``new`` to ``dst``, replacing what was there; ``dst`` is restored if the move fails."""
    if not dst.exists():
        os.replace(new, dst)
        return
    old = dst.parent / f".{dst.name}.old-{os.getpid()}"
    os.replace(dst, old)
    try:
        os.replace(new, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


def dataset_info(shards: str | Path, expect: DataConfig | None = None) -> dict[str, Any]:
    """Resolution, channels, class names (by label index), image fields and train size of a
    shard directory. With ``expect`` (the ``data:`` params in force), shards written under
    other data params (another task's profile, an edited resolution) are refused with one
    line instead of being trained on."""
    path = storage.join(shards, STATS)
    if storage.file_type(path) != pafs.FileType.File:
        raise GanlibError(f"{path}: no shards here; run `dvc repro shard` first")
    stats = json.loads(storage.read_bytes(path))
    meta = manifest_metadata(read_manifest(shards, columns=[]))  # metadata only
    info = {
        "resolution": int(stats["resolution"]),
        "channels": int(stats["channels"]),
        "classes": meta["classes"] or None,
        "fields": list(meta["fields"]),  # ["png"], or ["a.png", "b.png"] for translation
        "train_samples": int(stats["train"]),
    }
    if expect is not None:  # single images or pairs: the source decides; each task checks
        have = (info["resolution"], info["channels"])
        want = (expect.resolution, expect.channels)
        if have != want:

            def say(r, c):
                return f"{r} px, {c} channel{'s' if c > 1 else ''}"

            raise GanlibError(
                f"{shards}: the shards hold {say(*have)} images, the data params say "
                f"{say(*want)} (sharded under other params, e.g. another task); run "
                "`dvc repro shard`"
            )
    return info
