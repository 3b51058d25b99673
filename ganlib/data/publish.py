"""Publishing shards to ``storage.root``, where every node of a cluster reads them.

A shard set is published once per manifest hash, to ``{root}/shards/<manifest sha256>/``: the
same layout as the local shard root (``train/``, ``val/``, ``stats.json``, ``manifest.parquet``),
immutable. The manifest is uploaded last, so its presence marks a complete set; the sha256 of
its bytes must be the directory's name, which the readers check (:func:`check_published`). The
manifest lists every sample's sha256, so the name pins the whole set. The record of what was
published (``data/published.json``, committed: it travels with ``ray job submit
--working-dir``) tells the train and tune stages where to read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from ganlib import storage
from ganlib.data.shards import MANIFEST, SPLITS, STATS
from ganlib.errors import GanlibError

RECORD = Path("data/published.json")  # relative to the project directory


def published_location(root: str, manifest_sha256: str) -> str:
    return storage.join(root, "shards", manifest_sha256)


def publish_shards(local: Path, root: str) -> dict[str, Any]:
    """Upload the shard root ``local`` to ``{root}/shards/<hash>/`` unless it is there already;
    returns the record (``root``, ``url``, ``manifest_sha256``, ``uploaded``). Without a
    ``root`` nothing is copied: the record names ``local``."""
    manifest = Path(local) / MANIFEST
    if not manifest.is_file():
        raise GanlibError(f"{manifest}: missing shards; run `dvc repro shard` first")
    sha = storage.sha256_of(manifest)
    if not root:
        return {"root": "", "url": str(local), "manifest_sha256": sha, "uploaded": False}
    storage.check_root(root)
    url = published_location(root, sha)
    uploaded = storage.file_type(storage.join(url, MANIFEST)) != pafs.FileType.File
    if uploaded:
        for split in SPLITS:
            storage.copy_tree(Path(local) / split, storage.join(url, split))
        storage.write_bytes(storage.join(url, STATS), (Path(local) / STATS).read_bytes())
        storage.write_bytes(storage.join(url, MANIFEST), manifest.read_bytes())  # last
    check_published(url)
    return {"root": root, "url": url, "manifest_sha256": sha, "uploaded": uploaded}


def check_published(url: str) -> str:
    """``url`` when it holds a complete published set whose manifest hashes to its name."""
    name = storage.basename(url)
    manifest = storage.join(url, MANIFEST)
    if storage.file_type(manifest) != pafs.FileType.File:
        raise GanlibError(
            f"{url}: no published shards there (no {MANIFEST}); run `dvc repro publish`"
        )
    got = storage.sha256_of(manifest)
    if got != name:
        raise GanlibError(
            f"{url}: the published manifest's sha256 is {got[:16]}..., not the {name[:16]}... it "
            "is published under (altered since publishing); delete that directory and run "
            "`dvc repro publish`"
        )
    return url


def shard_location(project: Path, root: str, shards: Path) -> str:
    """Where the training stages read the shards: the local shard root without a
    ``storage.root``; else the published set that ``data/published.json`` names, checked
    against the root in force, against the local manifest when there is one, and against its
    own name."""
    if not root:
        return str(Path(project) / shards)
    record = Path(project) / RECORD
    if not record.is_file():
        raise GanlibError(f"{record}: missing; run `dvc repro publish` (storage.root is {root})")
    rec = json.loads(record.read_text())
    if rec.get("root") != root:
        raise GanlibError(
            f"{record}: published under storage.root {rec.get('root')!r}, not {root!r}; run "
            "`dvc repro publish`"
        )
    local = Path(project) / shards / MANIFEST
    if local.is_file() and storage.sha256_of(local) != rec["manifest_sha256"]:
        raise GanlibError(
            f"{record}: names other shards than {Path(project) / shards} holds; run "
            "`dvc repro publish`"
        )
    return check_published(rec["url"])
