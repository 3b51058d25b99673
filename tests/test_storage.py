"""The storage layer on a real S3 server (moto on 127.0.0.1) and the local disk."""

from __future__ import annotations

import pytest

from ganlib import storage
from ganlib.errors import GanlibError


def test_urls_are_joined_as_strings_keeping_scheme_and_query():
    assert storage.join("s3://b", "x/", "/y") == "s3://b/x/y"
    assert storage.join("s3://b/p?endpoint_override=h:1", "shards") == (
        "s3://b/p/shards?endpoint_override=h:1"
    )
    assert storage.join("/tmp/a", "b") == "/tmp/a/b"
    assert storage.basename("s3://b/p/abc?x=1") == "abc"
    assert storage.is_remote("gs://b") and not storage.is_remote("file:///x")


def test_round_trip_and_tree_copy_on_s3(s3, tmp_path):
    root = s3.url(s3.bucket("storage-rt") + "/root")
    storage.check_root(root)
    storage.write_bytes(storage.join(root, "a/b.bin"), b"x" * 1000)
    assert storage.read_bytes(storage.join(root, "a/b.bin")) == b"x" * 1000
    (tmp_path / "src/d").mkdir(parents=True)
    (tmp_path / "src/d/f.txt").write_text("hello")
    storage.copy_tree(tmp_path / "src", storage.join(root, "tree"))
    storage.copy_tree(storage.join(root, "tree"), tmp_path / "back")
    assert (tmp_path / "back/d/f.txt").read_text() == "hello"
    assert storage.sha256_of(storage.join(root, "tree/d/f.txt")) == storage.sha256_of(
        tmp_path / "src/d/f.txt"
    )
    storage.delete_tree(storage.join(root, "tree"))
    assert storage.file_type(storage.join(root, "tree/d/f.txt")).name == "NotFound"


def test_any_fsspec_filesystem_opens_through_pyarrow():
    storage.write_bytes("memory://ganlib-test/x.bin", b"abc")
    assert storage.read_bytes("memory://ganlib-test/x.bin") == b"abc"


@pytest.mark.parametrize(
    "root, message",
    [
        ("nosuch://b/x", "nosuch://b/x: no filesystem for this scheme"),
        ("BUCKET", "the bucket storage-missing does not exist"),
    ],
)
def test_a_root_that_cannot_be_used_is_one_line_naming_it(s3, root, message):
    if root == "BUCKET":
        root = s3.url("storage-missing/prefix")
    with pytest.raises(GanlibError) as err:
        storage.check_root(root)
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


def test_a_local_root_is_created(tmp_path):
    storage.check_root(f"file://{tmp_path}/new/root")
    assert (tmp_path / "new/root").is_dir()
