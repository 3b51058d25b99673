"""Sources: read what ``data.source`` names and yield converted samples, one at a time.

:func:`open_source` checks the location up front (a missing path, a missing column or a wrong
array type is a one-line :class:`GanlibError`) and returns a :class:`Source`. Iterating it
streams ``Sample | Skipped`` in a deterministic order: images are decoded one at a time, so
memory does not grow with the number of images. Every input is accounted for: what cannot be
used comes out as ``Skipped`` with its path and reason, never silently dropped.

Translation sources yield images of two domains, A and B: ``"a.png"`` and ``"b.png"``
together for pairs (``builtin:photos2art``, ``imagefolder`` with ``data.paired``, ``parquet``
with ``data.image_column_b``), or one of them per sample for independent domains
(``imagefolder`` with ``data.unpaired``; the loader draws A and B independently). Images of
any size are centre-cropped and resized to ``data.resolution`` one by one (``to_array``), so
a pair's two images need not have the same size or aspect ratio.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.resources
import json
import math
import os
import re
import string
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ganlib.config import DataConfig
from ganlib.data.images import UnusableImage, load_image, to_array
from ganlib.data.records import Sample, Skipped
from ganlib.data.styles import cartoon
from ganlib.errors import GanlibError

# WebDataset splits a tar member name at the first dot after the last slash, so keys hold
# neither; these characters survive every file system and shell untouched.
KEY_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
PARQUET_BATCH_SIZE = 256

# builtin:photos -- photographs bundled inside the scikit-image and scikit-learn wheels, read
# straight from the installed package (skimage.data's fetchers may try to download).
PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "brick": ("skimage", "data/brick.png"),
    "camera": ("skimage", "data/camera.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "coins": ("skimage", "data/coins.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "immunohistochemistry": ("skimage", "data/ihc.png"),
    "moon": ("skimage", "data/moon.png"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),
    "motorcycle_right": ("skimage", "data/motorcycle_right.png"),
    "page": ("skimage", "data/page.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "text": ("skimage", "data/text.png"),
    "china": ("sklearn.datasets", "images/china.jpg"),
    "flower": ("sklearn.datasets", "images/flower.jpg"),
}
PHOTO_SIDES = (96, 128, 192)  # patch sides in original pixels; the stride is half a side
# builtin:photos2art -- the same patches as pairs: A the photo, B its rendering in this style.
PHOTO_STYLES = {"photos": None, "photos2art": cartoon}

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_PLAIN_PART = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class Source:
    """An opened source: iterate it (as often as needed) for ``Sample | Skipped``."""

    classes: list[str] | None  # class names indexed by label; None when unnamed or unlabelled
    total: int | None  # how many items an iteration yields, when cheaply known (progress bars)
    items: Callable[[], Iterator[Sample | Skipped]] = field(repr=False)

    def __iter__(self) -> Iterator[Sample | Skipped]:
        return self.items()


def make_key(*parts: str) -> str:
    """A stable sample key from one or more parts, made of :data:`KEY_CHARS` only.

    Parts made of letters, digits and ``_`` are joined with ``-`` as they are
    (``make_key("digits", "00017") == "digits-00017"``). Otherwise (a dot, a slash, a space,
    a ``-`` inside a part, ...) the slug is lossy, so ``--`` and a 10-hex-digit SHA-256 of the
    exact parts are appended: ``cat/img.1`` and ``cat/img_1`` stay distinct. Plain keys never
    contain ``--``, so they never meet a hashed one. Stable across runs and machines.
    """
    assert parts, "make_key needs at least one part"
    key = "-".join(_UNSAFE.sub("_", part) or "_" for part in parts)
    if all(_PLAIN_PART.fullmatch(part) for part in parts):
        return key
    # JSON keeps the part boundaries (and odd file-name bytes) in what is hashed.
    digest = hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:10]
    return f"{key}--{digest}"


def open_source(cfg: DataConfig) -> Source:
    """Open ``cfg.source`` (SPEC section 4) for streaming.

    Images come out as ``uint8 [cfg.resolution, cfg.resolution, cfg.channels]``. Raises
    :class:`GanlibError` for a missing path, a table without a usable image column, or an
    array of the wrong type or shape.
    """
    if cfg.scheme == "builtin":  # DataConfig has checked the name
        return _digits(cfg) if cfg.location == "digits" else _photos(cfg)
    openers = {"imagefolder": _imagefolder, "parquet": _parquet, "npz": _npz}
    return openers[cfg.scheme](cfg)


def _convert(src: str | os.PathLike | bytes, cfg: DataConfig) -> np.ndarray:
    img = load_image(src, max_pixels=cfg.max_image_pixels)
    return to_array(img, channels=cfg.channels, resolution=cfg.resolution)


def _label(value: int | None) -> int | None:
    # Negative labels mean "unlabelled" (Hugging Face ClassLabel writes -1).
    return None if value is None or value < 0 else int(value)


# -- builtin:digits --------------------------------------------------------------------------


def _digits(cfg: DataConfig) -> Source:
    from sklearn.datasets import load_digits  # a slow import; only this source needs it

    digits = load_digits()  # 1,797 images [8, 8] of 0..16, shipped inside scikit-learn
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # [N, 8, 8]

    def items() -> Iterator[Sample | Skipped]:
        for i, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
            arr = to_array(Image.fromarray(image), channels=cfg.channels, resolution=cfg.resolution)
            yield Sample(
                make_key("digits", f"{i:05d}"), {"png": arr}, int(label), f"builtin:digits#{i}"
            )

    return Source(classes=[str(d) for d in range(10)], total=len(pixels), items=items)


# -- builtin:photos --------------------------------------------------------------------------


def _photos(cfg: DataConfig) -> Source:
    """``builtin:photos`` (``png``) or ``builtin:photos2art`` (``a.png`` photo, ``b.png`` art)."""
    paths = {
        name: importlib.resources.files(pkg).joinpath(rel) for name, (pkg, rel) in PHOTOS.items()
    }
    total = 0
    for path in paths.values():
        try:
            with Image.open(path) as img:  # the header only
                total += sum(1 for _ in _patch_grid(*img.size))
        except OSError as exc:
            raise GanlibError(
                f"data.source: {cfg.source} cannot read {path} ({exc}); reinstall "
                "scikit-image and scikit-learn"
            ) from None
    return Source(classes=None, total=total, items=partial(_photo_items, paths, cfg))


def _patch_grid(width: int, height: int) -> Iterator[tuple[int, int, int]]:
    for side in PHOTO_SIDES:
        stride = side // 2
        for y in range(0, height - side + 1, stride):
            for x in range(0, width - side + 1, stride):
                yield side, y, x


def _photo_items(paths: dict[str, Path], cfg: DataConfig) -> Iterator[Sample | Skipped]:
    source, style = cfg.location, PHOTO_STYLES[cfg.location]
    for name, path in paths.items():
        try:
            photo = load_image(path, max_pixels=cfg.max_image_pixels)
        except UnusableImage as exc:  # only when data.max_image_pixels is set very low
            yield Skipped(str(path), exc.reason)
            continue
        for side, y, x in _patch_grid(*photo.size):
            patch = photo.crop((x, y, x + side, y + side))
            arr = to_array(patch, channels=cfg.channels, resolution=cfg.resolution)
            images = {"png": arr} if style is None else {"a.png": arr, "b.png": style(arr)}
            key = make_key(source, name, f"s{side}", f"y{y}", f"x{x}")
            yield Sample(key, images, None, f"builtin:{source}#{name}/s{side}/y{y}/x{x}")


# -- imagefolder:PATH ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One listed file system entry under an image folder."""

    path: Path
    key_parts: tuple[str, ...]  # relative path, the file name without its extension
    problem: str | None  # why it is skipped without being opened, or None for a candidate


@dataclass(frozen=True)
class _Task:
    """A planned sample: the files to decode for it (WebDataset field -> path)."""

    key: str
    files: dict[str, Path]
    label: int | None


def _imagefolder(cfg: DataConfig) -> Source:
    root = Path(cfg.location)
    if not root.exists():
        raise GanlibError(f"data.source: imagefolder path '{root}' does not exist")
    if not root.is_dir():
        raise GanlibError(f"data.source: imagefolder path '{root}' is not a directory")
    if cfg.paired or cfg.unpaired:
        flag = "data.paired" if cfg.paired else "data.unpaired"
        if not ((root / "A").is_dir() and (root / "B").is_dir()):
            raise GanlibError(
                f"data.source: imagefolder path '{root}' needs sub-folders A and B ({flag} is true)"
            )
        classes = None
        plan = partial(_paired_plan if cfg.paired else _unpaired_plan, root)
    else:
        classes = _class_names(root)
        plan = partial(_folder_plan, root, classes or [])
    # Listing is cheap next to decoding, and this makes total match what iteration yields.
    total = sum(1 for _ in plan())
    return Source(classes=classes, total=total, items=partial(_run_plan, plan, cfg))


def _class_names(root: Path) -> list[str] | None:
    with os.scandir(root) as it:
        names = sorted(
            e.name
            for e in it
            if e.is_dir() and not e.name.startswith(".") and not _is_image_name(e.name)
        )
    return names or None


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(
    root: Path, rel: PurePosixPath, ancestors: frozenset[tuple[int, int]] = frozenset()
) -> Iterator[_Entry]:
    """Every non-hidden entry under ``root/rel``, depth first, sorted by name.

    Symbolic links to directories are followed; ``ancestors`` (device, inode) stops loops.
    """
    directory = root / rel
    try:
        st = directory.stat()
        with os.scandir(directory) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        yield _Entry(directory, rel.parts, f"unreadable: {exc.strerror}")
        return
    if (st.st_dev, st.st_ino) in ancestors:
        yield _Entry(directory, rel.parts, "symbolic link loop")
        return
    ancestors = ancestors | {(st.st_dev, st.st_ino)}
    # x.png next to x.jpg would share a key without the extension: keep it for those.
    stems = Counter(os.path.splitext(e.name)[0] for e in entries if _is_image_name(e.name))
    for e in entries:
        path = directory / e.name
        if e.is_dir():
            if _is_image_name(e.name):
                yield _Entry(path, (), "is a directory")
            else:
                yield from _walk(root, rel / e.name, ancestors)
        elif not _is_image_name(e.name):
            yield _Entry(path, (), "not an image extension")
        else:
            stem = os.path.splitext(e.name)[0]
            yield _Entry(path, (*rel.parts, stem if stems[stem] == 1 else e.name), None)


def _folder_plan(root: Path, classes: list[str]) -> Iterator[_Task | Skipped]:
    index = {name: i for i, name in enumerate(classes)}
    for entry in _walk(root, PurePosixPath()):
        if entry.problem:
            yield Skipped(str(entry.path), entry.problem)
        else:
            # A first-level sub-folder is the class; files directly in root have none.
            parts = entry.key_parts
            label = index[parts[0]] if len(parts) > 1 else None
            yield _Task(make_key(*parts), {"png": entry.path}, label)


def _domains(root: Path, flag: str) -> tuple[list[Skipped], dict[str, dict[tuple[str, ...], Path]]]:
    """List ``root/A`` and ``root/B``: what is skipped, and each domain's candidate images.

    Candidates are keyed by their path inside A or B (without the extension). Raises
    :class:`GanlibError` when a domain holds no candidate image at all.
    """
    with os.scandir(root) as it:
        others = sorted(
            e.name for e in it if not e.name.startswith(".") and e.name not in ("A", "B")
        )
    skipped = [Skipped(str(root / name), f"not in A or B ({flag} is true)") for name in others]
    found: dict[str, dict[tuple[str, ...], Path]] = {"A": {}, "B": {}}
    for side, files in found.items():
        for entry in _walk(root, PurePosixPath(side)):
            if entry.problem:
                skipped.append(Skipped(str(entry.path), entry.problem))
            else:
                files[entry.key_parts[1:]] = entry.path
        if not files:
            raise GanlibError(
                f"data.source: imagefolder domain folder '{root / side}' holds no images "
                f"({flag} is true)"
            )
    return skipped, found


def _paired_plan(root: Path) -> Iterator[_Task | Skipped]:
    skipped, found = _domains(root, "data.paired")
    yield from skipped
    a, b = found["A"], found["B"]  # pair on the path inside A or B
    for parts in sorted(a.keys() | b.keys()):
        if parts not in b:
            yield Skipped(str(a[parts]), "no partner in B")
        elif parts not in a:
            yield Skipped(str(b[parts]), "no partner in A")
        else:
            yield _Task(make_key(*parts), {"a.png": a[parts], "b.png": b[parts]}, None)


def _unpaired_plan(root: Path) -> Iterator[_Task | Skipped]:
    # One sample per image, holding "a.png" or "b.png": the domains are never matched here,
    # so any counts work and no image is dropped or repeated.
    skipped, found = _domains(root, "data.unpaired")
    yield from skipped
    for side, files in found.items():
        for parts in sorted(files):
            yield _Task(make_key(side, *parts), {f"{side.lower()}.png": files[parts]}, None)


def _run_plan(
    plan: Callable[[], Iterator[_Task | Skipped]], cfg: DataConfig
) -> Iterator[Sample | Skipped]:
    for item in plan():
        yield _load_task(item, cfg) if isinstance(item, _Task) else item


def _load_task(task: _Task, cfg: DataConfig) -> Sample | Skipped:
    images = {}
    for name, path in task.files.items():
        try:
            images[name] = _convert(path, cfg)
        except UnusableImage as exc:
            return Skipped(str(path), exc.reason)
    origin = " + ".join(str(path) for path in task.files.values())
    return Sample(task.key, images, task.label, origin)


# -- parquet:PATH_OR_GLOB --------------------------------------------------------------------


def _parquet(cfg: DataConfig) -> Source:
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
            classes = _hf_class_names(schema, cfg.label_column)
    items = partial(_parquet_items, files, prefixes, cfg)
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
    files: list[Path], prefixes: list[tuple[str, ...]], cfg: DataConfig
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
                    yield _parquet_row(values, _label(label), path, prefix, row, cfg)
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


# -- npz:PATH --------------------------------------------------------------------------------


def _npz(cfg: DataConfig) -> Source:
    path = Path(cfg.location)
    if not path.is_file():
        raise GanlibError(f"data.source: npz file '{path}' does not exist")
    if not zipfile.is_zipfile(path):
        raise GanlibError(f"data.source: '{path}' is not an .npz archive (numpy.savez)")
    with np.load(path) as npz:  # members are read only when indexed
        arrays = ", ".join(npz.files) or "none"
        if "x" not in npz.files:
            raise GanlibError(f"data.source: npz '{path}' has no array 'x'; arrays: {arrays}")
        try:
            y = npz["y"] if "y" in npz.files else None
        except ValueError as exc:  # an object array: numpy refuses to unpickle it
            raise GanlibError(f"data.source: npz '{path}': y: {exc}") from None
    with zipfile.ZipFile(path) as zf, zf.open("x.npy") as fp:
        shape, fortran_order, dtype = _npy_header(fp, path)
    ok_shape = len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3, 4))
    if dtype != np.uint8 or not ok_shape or 0 in shape[1:]:
        raise GanlibError(
            f"data.source: npz '{path}': x is {dtype} {shape}, expected uint8 [N, H, W] or "
            "[N, H, W, C] with C = 1, 3 or 4"
        )
    if y is not None and (y.shape != (shape[0],) or not np.issubdtype(y.dtype, np.integer)):
        raise GanlibError(
            f"data.source: npz '{path}': y is {y.dtype} {y.shape}, expected {shape[0]} integers"
        )
    items = partial(_npz_items, path, shape, fortran_order, y, cfg)
    return Source(classes=None, total=shape[0], items=items)


def _npy_header(fp: IO[bytes], path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)
    raise GanlibError(f"data.source: npz '{path}': x.npy has unsupported format {version}")


def _npy_rows(path: Path, shape: tuple[int, ...], fortran_order: bool) -> Iterator[np.ndarray]:
    """``x[i]`` one at a time, read from the (possibly compressed) zip member as a stream."""
    if fortran_order:
        # Column-major items are not contiguous in the file; load x whole (rare: np.save of
        # a transposed array).
        with np.load(path) as npz:
            yield from npz["x"]
        return
    size = math.prod(shape[1:])
    with zipfile.ZipFile(path) as zf, zf.open("x.npy") as fp:
        _npy_header(fp, path)
        for _ in range(shape[0]):
            buf = fp.read(size)
            if len(buf) != size:
                raise GanlibError(f"data.source: npz '{path}': x.npy is truncated")
            yield np.frombuffer(buf, dtype=np.uint8).reshape(shape[1:])


def _npz_items(
    path: Path,
    shape: tuple[int, ...],
    fortran_order: bool,
    y: np.ndarray | None,
    cfg: DataConfig,
) -> Iterator[Sample | Skipped]:
    for i, image in enumerate(_npy_rows(path, shape, fortran_order)):
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]  # Pillow wants [H, W] for gray
        # [H, W] -> L, [H, W, 3] -> RGB, [H, W, 4] -> RGBA (composited over white)
        img = Image.fromarray(np.ascontiguousarray(image))
        arr = to_array(img, channels=cfg.channels, resolution=cfg.resolution)
        label = _label(int(y[i])) if y is not None else None
        yield Sample(make_key(path.stem, f"{i:07d}"), {"png": arr}, label, f"{path}#{i}")
