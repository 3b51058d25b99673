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
datasets (see :mod:`ganlib.data.loader`).

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
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from ganlib.data.images import encode_png
from ganlib.data.records import Sample, Skipped
from ganlib.errors import GanlibError

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
        ("origin", pa.string()),
    ]
)

_KEY = re.compile(r"[A-Za-z0-9_-]+")  # WebDataset splits member names at the first dot
# The image layouts a shard root can hold. A sample holds every field of its layout, except
# that a translation sample may hold a single domain ("a.png" or "b.png" alone).
_FIELDS = (("png",), ("a.png", "b.png"))
# The manifest columns (offset, length) of the i-th image field of the manifest's "fields".
SPAN_COLUMNS = (("offset", "length"), ("offset_b", "length_b"))
_ROWS_PER_FLUSH = 4096  # manifest rows held in memory before they go to a parquet row group


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
) -> dict[str, Any]:
    """Write ``samples`` as train/val shards under ``out_dir`` and return the stats.

    ``classes`` names the label indices (or is None for unnamed or no labels); ``total`` is the
    number of inputs when known, for the progress bar; ``source`` names the input in errors.
    Everything is written into a temporary sibling directory that replaces ``out_dir`` only
    when complete; on any exception (KeyboardInterrupt included) it is removed and ``out_dir``
    is left untouched. Raises :class:`GanlibError` when no input is usable.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():  # left by a killed run that had the same pid
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        with tqdm(
            samples,
            total=total,
            desc="shard",
            unit="img",
            file=sys.stderr,
            mininterval=1.0,
            disable=None if progress else True,  # None: off when stderr is not a terminal
        ) as inputs:
            stats = _write_all(inputs, tmp, shard_size, val_fraction, classes, source)
        kept = out_dir / ".gitignore"  # DVC's, tracked by git: the new shards keep it
        if kept.is_file():
            shutil.copy2(kept, tmp / kept.name)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stats


def read_manifest(path: Path, columns: list[str] | None = None) -> pa.Table:
    """The manifest table of a shard root (``path`` is the root or the parquet file itself).

    ``columns`` selects columns (all by default; fewer save memory on large manifests).
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise GanlibError(f"{path}: manifest not found; run the shard stage first")
    missing = sorted(set(columns or ()) - set(pq.read_schema(path).names))
    if missing:
        raise GanlibError(
            f"{path}: no {', '.join(missing)} column(s), written by an older ganlib; "
            "re-run the shard stage"
        )
    return pq.read_table(path, columns=columns)


def manifest_metadata(table: pa.Table) -> dict[str, Any]:
    """``{"classes": [names] or None, "fields": ["png"] or ["a.png", "b.png"]}`` of a manifest."""
    meta = table.schema.metadata
    return {
        "classes": json.loads(meta[b"classes"]),
        "fields": json.loads(meta[b"fields"]),
    }


def summarize(path: Path, n_keys: int = 5) -> dict[str, Any]:
    """What ``ganlib shards info PATH`` shows: counts per split, shards, classes, first keys.

    ``path`` is a shard root or its manifest file.
    """
    table = read_manifest(path)
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
        names = meta["classes"] or [str(i) for i in range(max(counts) + 1)]
        classes = {name: counts.get(i, 0) for i, name in enumerate(names)}
    return {
        "samples": table.num_rows,
        "splits": splits,
        "classes": classes,
        "fields": meta["fields"],
    }


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
    inputs: Iterable[Sample | Skipped],
    root: Path,
    shard_size: int,
    val_fraction: float,
    classes: list[str] | None,
    source: str,
) -> dict[str, Any]:
    skipped: list[dict[str, str]] = []
    labels: Counter[int] = Counter()
    domains: Counter[str] = Counter()  # samples holding each image field, and both a and b
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
                fields = next((f for f in _FIELDS if set(item.images) <= set(f)), None)
                if fields is None:
                    raise ValueError(
                        f"sample {item.key}: image fields {sorted(item.images)} not in {_FIELDS}"
                    )
                shape = next(iter(item.images.values())).shape
                manifest.open(fields)
            _check_sample(item, fields, shape, classes)

            present = [name for name in fields if name in item.images]
            members = {name: encode_png(item.images[name]) for name in present}
            for name in present:
                domains[name] += 1
            domains["pairs"] += len(present) == 2
            if item.label is not None:
                members["cls"] = str(item.label).encode("ascii")
                labels[item.label] += 1
            split = split_of(item.key, val_fraction)
            shard, index, offsets = writers[split].write(item.key, members)
            spans = dict.fromkeys(col for cols in SPAN_COLUMNS for col in cols)  # null: absent
            for (off_col, len_col), name in zip(SPAN_COLUMNS, fields, strict=False):
                if name in members:
                    spans[off_col], spans[len_col] = offsets[name], len(members[name])
            primary = members[present[0]]
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

    if not labels:
        class_counts = None
    elif classes is not None:
        class_counts = {name: labels.get(i, 0) for i, name in enumerate(classes)}
    else:
        class_counts = {str(i): c for i, c in labels.items()}
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
    (root / STATS).write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats


def _check_sample(
    item: Sample, fields: tuple[str, ...], shape: tuple[int, ...], classes: list[str] | None
) -> None:
    """Sources promise these; a violation is a bug there, caught before it corrupts shards."""
    if not _KEY.fullmatch(item.key):
        raise ValueError(f"sample key {item.key!r}: only letters, digits, '_' and '-' allowed")
    n_classes = len(classes) if classes is not None else float("inf")
    if item.label is not None and not 0 <= item.label < n_classes:
        raise ValueError(f"sample {item.key}: label {item.label} not a class index")
    names = set(item.images)
    if not (names == set(fields) or (len(fields) == 2 and len(names) == 1 and names < set(fields))):
        raise ValueError(f"sample {item.key}: fields {sorted(names)}, expected {fields}")
    for name, arr in item.images.items():
        if arr.dtype.name != "uint8" or arr.shape != shape:
            raise ValueError(
                f"sample {item.key}: {name} is {arr.dtype}{list(arr.shape)}, "
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


def dataset_info(shards: str | Path) -> dict[str, Any]:
    """Resolution, channels, class names (by label index), image fields and train size of a
    shard directory."""
    path = Path(shards) / "stats.json"
    if not path.is_file():
        raise GanlibError(f"{path}: no shards here; run `dvc repro shard` first")
    stats = json.loads(path.read_text())
    meta = manifest_metadata(read_manifest(Path(shards), columns=["key"]))  # metadata only
    return {
        "resolution": int(stats["resolution"]),
        "channels": int(stats["channels"]),
        "classes": meta["classes"] or None,
        "fields": list(meta["fields"]),  # ["png"], or ["a.png", "b.png"] for translation
        "train_samples": int(stats["train"]),
    }
