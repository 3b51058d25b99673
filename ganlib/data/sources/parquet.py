"""``parquet:PATH_OR_GLOB``: image bytes (and labels) from parquet tables, one batch at a time."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ganlib.config import DataConfig
from ganlib.data.images import UnusableImage
from ganlib.data.records import Sample, Skipped
from ganlib.data.sources._common import Source, _check_classes, _convert, _label, make_key
from ganlib.errors import GanlibError

PARQUET_BATCH_SIZE = 256
_UNLABELLED = "leave it null, or set data.label_column: '' to ignore the column"


# -- parquet:PATH_OR_GLOB --------------------------------------------------------------------


def open_parquet(cfg: DataConfig) -> Source:
    files = _parquet_files(cfg.location)
    # Key prefix: the path below the files' common folder, so equal stems in different
    # folders stay distinct (a single folder gives just the stem).
    base = Path(os.path.commonpath([f.parent for f in files]))
    prefixes = [f.relative_to(base).with_suffix("").parts for f in files]
    classes, total = None, 0
    for path in files:
        try:
            with pq.ParquetFile(path) as pf:  # reads the footer only
                schema, rows = pf.schema_arrow, pf.metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise GanlibError(f"data.source: cannot read parquet file '{path}': {exc}") from None
        _check_columns(schema, path, cfg)
        total += rows
        if classes is None and cfg.label_column in schema.names:
            classes = _check_classes(_hf_class_names(schema, cfg.label_column), str(path))
    items = partial(_parquet_items, files, prefixes, classes, cfg)
    return Source(classes=classes, total=total, items=items)


def _parquet_files(location: str) -> list[Path]:
    path = Path(location)
    if path.is_dir():
        files = [
            f
            for f in path.rglob("*.parquet")
            if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts)
        ]
    elif path.is_file():
        files = [path]
    elif any(c in location for c in "*?["):
        files = [Path(f) for f in glob.glob(location, recursive=True) if os.path.isfile(f)]
    else:
        raise GanlibError(f"data.source: parquet path '{location}' does not exist")
    if not files:
        raise GanlibError(f"data.source: parquet '{location}' matches no .parquet files")
    return sorted(files)


def _check_columns(schema: pa.Schema, path: Path, cfg: DataConfig) -> None:
    def is_bytes(t: pa.DataType) -> bool:
        return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)

    columns = ", ".join(schema.names)
    for key, column in (("image_column", cfg.image_column), ("image_column_b", cfg.image_column_b)):
        if not column:  # no second image column: single images
            continue
        if column not in schema.names:
            raise GanlibError(f"data.{key}: no column '{column}' in {path}; columns: {columns}")
        t = schema.field(column).type
        ok = is_bytes(t) or (
            pa.types.is_struct(t) and t.get_field_index("bytes") >= 0 and is_bytes(t["bytes"].type)
        )
        if not ok:
            raise GanlibError(
                f"data.{key}: column '{column}' in {path} is {t}, expected "
                f"{{bytes, path}} structs or binary; columns: {columns}"
            )
    if cfg.label_column in schema.names:
        t = schema.field(cfg.label_column).type
        if not pa.types.is_integer(t):
            raise GanlibError(
                f"data.label_column: column '{cfg.label_column}' in {path} is {t}, expected "
                f"integer class indices; columns: {columns}"
            )


def _hf_class_names(schema: pa.Schema, label_column: str) -> list[str] | None:
    """Class names from Hugging Face ``datasets`` metadata (a ClassLabel feature), if any."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        meta = json.loads(raw) if raw else {}
        names = meta.get("info", meta)["features"][label_column]["names"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def _image_columns(cfg: DataConfig) -> dict[str, str]:
    """WebDataset field -> parquet column: one image, or an (A, B) pair."""
    if cfg.image_column_b:
        return {"a.png": cfg.image_column, "b.png": cfg.image_column_b}
    return {"png": cfg.image_column}


def _parquet_items(
    files: list[Path],
    prefixes: list[tuple[str, ...]],
    classes: list[str] | None,
    cfg: DataConfig,
) -> Iterator[Sample | Skipped]:
    image_columns = list(_image_columns(cfg).values())
    for path, prefix in zip(files, prefixes, strict=True):
        with pq.ParquetFile(path) as pf:
            has_label = cfg.label_column in pf.schema_arrow.names
            columns = image_columns + ([cfg.label_column] if has_label else [])
            row = 0
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_SIZE, columns=columns):
                images = [batch.column(c).to_pylist() for c in image_columns]  # [F][rows]
                if has_label:
                    labels = batch.column(cfg.label_column).to_pylist()
                else:
                    labels = [None] * batch.num_rows
                for *values, label in zip(*images, labels, strict=True):
                    where = f"data.label_column: '{path}' row {row}"
                    label = _label(label, where, classes, _UNLABELLED)
                    yield _parquet_row(values, label, path, prefix, row, cfg)
                    row += 1


def _parquet_row(
    values: list[dict | bytes | None],
    label: int | None,
    path: Path,
    prefix: tuple[str, ...],
    row: int,
    cfg: DataConfig,
) -> Sample | Skipped:
    """One table row: ``values`` holds the cells of the image columns, in field order."""
    origin = f"{path}#{row}"
    columns = _image_columns(cfg)
    images = {}
    for (name, column), value in zip(columns.items(), values, strict=True):
        # Pairs name the column at fault; single images keep the short reason.
        where = f"{column}: " if len(columns) > 1 else ""
        data = value.get("bytes") if isinstance(value, dict) else value  # {bytes, path} or bytes
        if data is None:
            only = value.get("path") if isinstance(value, dict) else None
            why = f"no image bytes (only the path {only!r})" if only else "no image bytes (null)"
            return Skipped(origin, where + why)
        try:
            images[name] = _convert(data, cfg)
        except UnusableImage as exc:
            return Skipped(origin, where + exc.reason)
    return Sample(make_key(*prefix, f"{row:08d}"), images, label, origin)
