"""``imagefolder:PATH``: a folder of images, plain (sub-folders are classes), paired or unpaired."""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from ganlib.config import DataConfig
from ganlib.data.images import UnusableImage
from ganlib.data.records import Sample, Skipped
from ganlib.data.sources._common import (
    IMAGE_EXTENSIONS,
    Source,
    _check_classes,
    _convert,
    make_key,
)
from ganlib.errors import GanlibError

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


def open_imagefolder(cfg: DataConfig) -> Source:
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
    return Source(
        classes=classes,
        total=total,
        items=partial(_run_plan, plan, cfg),
        tasks=partial(_plan_tasks, plan, cfg),
    )


def _class_names(root: Path) -> list[str] | None:
    with os.scandir(root) as it:
        names = sorted(
            e.name
            for e in it
            if _is_dir(e) is True and not e.name.startswith(".") and not _is_image_name(e.name)
        )
    return _check_classes(names, f"data.source: imagefolder path '{root}' has sub-folders:")


def _is_dir(entry: os.DirEntry) -> bool | str:
    """Whether ``entry`` is (or links to) a directory, or why that cannot be known: a
    symbolic link loop (``a -> b -> a``) or an unreadable entry. DirEntry.is_dir raises
    for those instead of answering."""
    try:
        return entry.is_dir()
    except OSError as exc:
        return "symbolic link loop" if exc.errno == errno.ELOOP else f"unreadable: {exc.strerror}"


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
        is_dir = _is_dir(e)
        if isinstance(is_dir, str):
            yield _Entry(path, (), is_dir)
        elif is_dir:
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


def _plan_tasks(
    plan: Callable[[], Iterator[_Task | Skipped]], cfg: DataConfig
) -> Iterator[Callable[[], Sample | Skipped] | Skipped]:
    for item in plan():
        yield partial(_load_task, item, cfg) if isinstance(item, _Task) else item


def _load_task(task: _Task, cfg: DataConfig) -> Sample | Skipped:
    images = {}
    for name, path in task.files.items():
        try:
            images[name] = _convert(path, cfg)
        except UnusableImage as exc:
            return Skipped(str(path), exc.reason)
    origin = " + ".join(str(path) for path in task.files.values())
    return Sample(task.key, images, task.label, origin)
