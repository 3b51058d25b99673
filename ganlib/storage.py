"""Where the things every node must see live: one root URL (``storage.root``), through pyarrow.fs.

A *location* is a local path or a URL (``s3://bucket/prefix``, ``gs://...``, ``hdfs://...``,
``file:///...``, or any scheme an installed fsspec implementation knows). It is opened with
``pyarrow.fs.FileSystem.from_uri`` -- the layer Ray Train uses for its own storage, which takes
credentials and endpoints from the standard environment (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...) -- or, for other schemes,
through ``PyFileSystem(FSSpecHandler(...))``. URLs are joined as strings (:func:`join`), never
through ``pathlib``, which turns ``s3://b/x`` into ``s3:/b/x``.

Layout under a root::

    {root}/shards/<manifest sha256>/   published shards, manifest and stats (immutable)
    {root}/runs/                       Ray Train / Tune storage; runs/<name>/outputs/ the
                                       exported generator, history and samples of a run
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from ganlib.errors import GanlibError

# Filesystems whose first path component is a bucket (GCS only when pyarrow was built with it).
_BUCKETED = tuple(getattr(pafs, n) for n in ("S3FileSystem", "GcsFileSystem") if hasattr(pafs, n))


def is_url(location: str | os.PathLike) -> bool:
    """Whether ``location`` names a filesystem by scheme (``s3://...``) rather than a path."""
    return "://" in str(location)


def is_remote(location: str | os.PathLike) -> bool:
    """A URL of anything but the local filesystem (``file://`` is local)."""
    return is_url(location) and not str(location).startswith("file://")


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base/part/...`` as a string, for paths and URLs alike (``s3://b`` + ``x`` ->
    ``s3://b/x``); a URL's query (``?endpoint_override=...``) stays at the end."""
    out, sep, query = str(base).partition("?") if is_url(base) else (str(base), "", "")
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = f"{out.rstrip('/')}/{part}"
    return out + sep + query


def basename(location: str | os.PathLike) -> str:
    """The last component of a path or URL (without a URL's query)."""
    path = str(location).partition("?")[0] if is_url(location) else str(location)
    return path.rstrip("/").rsplit("/", 1)[-1]


def _why(exc: BaseException) -> str:
    """The first line of a filesystem error (pyarrow's may quote the whole URL, which the
    GanlibError it goes into masks)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# How a store says it refused the request's keys: S3's error codes, as pyarrow spells them
# (ACCESS_DENIED, INVALID_ACCESS_KEY_ID; ACCESS_DENIED also for a HEAD's bodiless 403) or as
# S3 does (AccessDenied, InvalidAccessKeyId), and a bare HTTP 401/403 (GCS). A bucket that
# exists but lets these keys do nothing is refused the same way: the line says "refused".
_REFUSED = re.compile(
    r"ACCESS_?DENIED|INVALID_?ACCESS_?KEY_?ID|SIGNATURE_?DOES_?NOT_?MATCH|"
    r"INVALID_?(CLIENT_?)?TOKEN|EXPIRED_?TOKEN|"
    r"HTTP status 40[13]\b|\b40[13] (FORBIDDEN|UNAUTHORIZED)",
    re.IGNORECASE,
)
_CREDENTIALS_HINT = (
    "check the keys in this machine's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
    "GOOGLE_APPLICATION_CREDENTIALS) or in the URL"
)


def _refused(exc: BaseException) -> bool:
    """Whether a filesystem error is the store refusing the credentials."""
    return bool(_REFUSED.search(str(exc)))


def open_location(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path inside it)`` of a path or URL; a URL whose scheme neither pyarrow
    nor an installed fsspec implementation can open is one line naming it."""
    location = str(location)
    if not is_url(location):
        return pafs.LocalFileSystem(), str(Path(location).absolute())
    try:
        return pafs.FileSystem.from_uri(location)
    except pa.ArrowInvalid as exc:
        if "Unrecognized filesystem type" not in str(exc):
            raise GanlibError(f"{location}: cannot open ({_why(exc)})") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise GanlibError(f"{location}: cannot open ({_why(exc)})") from None
    try:  # any fsspec filesystem (when its package is installed)
        import fsspec

        fs, path = fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as exc:
        raise GanlibError(
            f"{location}: no filesystem for this scheme ({_why(exc)}); use s3://, gs://, "
            "hdfs://, file:// or a path, or install the fsspec package of the scheme"
        ) from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def check_root(root: str, key: str = "storage.root") -> None:
    """One line, before anything starts, when ``root`` cannot be used: an unknown scheme, a
    bucket that does not exist, credentials refused."""
    fs, path = open_location(root)
    if isinstance(fs, _BUCKETED):
        bucket = path.split("/", 1)[0]
        where = f"bucket {bucket}"
    else:
        bucket, where = path, "directory"
    try:
        info = fs.get_file_info(bucket)
    except (pa.ArrowException, OSError) as exc:
        raise _fail(root, exc, f"read the {where}", key) from None
    if info.type == pafs.FileType.NotFound:
        if where == "directory":
            try:  # a local or HDFS root is made on first use
                fs.create_dir(path, recursive=True)
                return
            except (pa.ArrowException, OSError) as exc:
                raise _fail(root, exc, "create it", key) from None
        raise GanlibError(f"{key}: {root}: the {where} does not exist; create it first")
    if info.type == pafs.FileType.File:
        raise GanlibError(f"{key}: {root}: a file, not a directory")


def _fail(location: str, exc: BaseException, doing: str, key: str = "") -> GanlibError:
    """The one line of a failed filesystem call on ``location`` (after ``key: `` when given);
    refused credentials are said so, with where the keys come from."""
    where = f"{key}: {location}" if key else location
    if _refused(exc):
        return GanlibError(
            f"{where}: credentials refused, cannot {doing} ({_why(exc)}); {_CREDENTIALS_HINT}"
        )
    return GanlibError(f"{where}: cannot {doing} ({_why(exc)})")


def file_type(location: str | os.PathLike) -> pafs.FileType:
    fs, path = open_location(location)
    try:
        return fs.get_file_info(path).type
    except (pa.ArrowException, OSError) as exc:
        raise _fail(str(location), exc, "read it") from None


def read_bytes(location: str | os.PathLike) -> bytes:
    fs, path = open_location(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (pa.ArrowException, OSError) as exc:
        raise _fail(str(location), exc, "read it") from None


def write_bytes(location: str | os.PathLike, data: bytes) -> None:
    """Write a whole file: atomically on a local disk (a temporary sibling, then a rename);
    an object store's PUT is atomic by itself."""
    fs, path = open_location(location)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            Path(tmp).write_bytes(data)
            os.replace(tmp, path)
            return
        with fs.open_output_stream(path) as f:
            f.write(data)
    except (pa.ArrowException, OSError) as exc:
        raise _fail(str(location), exc, "write it") from None


def sha256_of(location: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    fs, path = open_location(location)
    digest = hashlib.sha256()
    try:
        with fs.open_input_stream(path) as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except (pa.ArrowException, OSError) as exc:
        raise _fail(str(location), exc, "read it") from None
    return digest.hexdigest()


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy every file under ``src`` to the same relative path under ``dst`` (either side a
    path or a URL)."""
    src_fs, src_path = open_location(src)
    dst_fs, dst_path = open_location(dst)
    try:
        if isinstance(dst_fs, pafs.LocalFileSystem):
            Path(dst_path).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(src_path, dst_path, source_filesystem=src_fs, destination_filesystem=dst_fs)
    except (pa.ArrowException, OSError) as exc:
        raise _fail(f"{src} -> {dst}", exc, "copy") from None


def delete_tree(location: str | os.PathLike) -> None:
    """Remove a directory and everything under it; nothing when it is not there."""
    fs, path = open_location(location)
    try:
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)
    except (pa.ArrowException, OSError) as exc:
        raise _fail(str(location), exc, "delete it") from None


def runs_location(root: str, project: Path) -> str:
    """Ray Train / Tune storage: ``{root}/runs``, or ``<project>/runs`` without a root."""
    return join(root, "runs") if root else str(Path(project).resolve() / "runs")


def ray_storage(location: str) -> dict:
    """``RunConfig`` keyword arguments for ``location``: a URL's filesystem is opened here, as
    everywhere in ganlib, and handed to Ray (``storage_filesystem``), which ships it to the
    workers with the options the URL or the driver's environment gave (an endpoint, for
    one); credentials the environment gave are looked up again on each node."""
    if not is_url(location):
        return {"storage_path": location}
    fs, path = open_location(location)
    return {"storage_path": path, "storage_filesystem": fs}
