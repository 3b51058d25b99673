"""The storage layer on a real S3 server (moto on 127.0.0.1) and the local disk."""

from __future__ import annotations

import shutil

import pytest

from ganlib import storage
from ganlib.errors import GanlibError
from tests.conftest import moto_server
from tests.hostile.harness import expect, stage


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


@pytest.fixture(scope="module")
def s3_auth():
    """moto's S3 server checking every request's keys against its (empty) IAM: any keys are
    refused, as AWS refuses unknown or revoked ones."""
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as server:
        yield server


@pytest.fixture()
def refused_keys(s3_auth, monkeypatch):
    """Keys the server refuses, in the standard environment (how every node gets them)."""
    env = s3_auth.env | {"AWS_ACCESS_KEY_ID": "AKIANOBODY", "AWS_SECRET_ACCESS_KEY": "wrong"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return s3_auth


REFUSED = "credentials refused, cannot read the bucket bucket"


def test_refused_credentials_are_one_line_naming_the_url(refused_keys):
    with pytest.raises(GanlibError) as err:
        storage.check_root("s3://bucket")
    message = str(err.value)
    assert message.startswith(f"storage.root: s3://bucket: {REFUSED} (")
    assert "AWS_ACCESS_KEY_ID" in message and len(message.splitlines()) == 1
    # keys in the URL: the line names it without the secret
    url = f"s3://AKIANOBODY:s3cr3t@bucket/p?endpoint_override={refused_keys.endpoint}&scheme=http"
    with pytest.raises(GanlibError) as err:
        storage.check_root(url)
    message = str(err.value)
    assert message.startswith("storage.root: s3://AKIANOBODY:***@bucket/p?endpoint_override=")
    assert REFUSED in message and "s3cr3t" not in message


def test_publish_stage_with_refused_credentials_exits_2_in_one_line(
    refused_keys, digit_shards, tmp_path, monkeypatch
):
    shutil.copytree(digit_shards, tmp_path / "data" / "shards")
    (tmp_path / "params.yaml").write_text("storage: {root: 's3://bucket/ganlib'}\n")
    monkeypatch.chdir(tmp_path)
    expect(stage("publish"), 2, f"^error: storage.root: s3://bucket/ganlib: {REFUSED} ")
    assert not (tmp_path / "data" / "published.json").exists()


def test_no_secret_of_a_url_reaches_an_error_line_or_mlflow(tmp_path, capsys):
    """Messages outside storage.py name URLs as given (a shard, a manifest): the stages' and
    the CLI's error printers mask them, and so does the MLflow param of storage.root."""
    from ganlib import cli, tracking
    from ganlib.config import MlflowConfig
    from pipeline import _stage

    url = "s3://AKIANOBODY:wJalr/K7+s3cr3t@bucket/p/shards/abc/train/train-000000.tar"

    def fails() -> None:
        raise GanlibError(f"{url}: shard not found; re-run the shard stage")

    with pytest.raises(SystemExit):
        _stage.run(fails)
    line = "error: s3://AKIANOBODY:***@bucket/p/shards/abc/train/train-000000.tar: shard not found"
    assert capsys.readouterr().err.startswith(line)
    assert cli.main(["shards", "info", url]) == 2
    err = capsys.readouterr().err
    assert "s3cr3t" not in err and "AKIANOBODY:***@bucket" in err and len(err.splitlines()) == 1
    client = tracking.client(MlflowConfig(), tmp_path)
    exp = tracking.experiment_id(client, "ganlib", tmp_path)
    run = tracking.start_run(client, exp, run_name="r", params={"storage.root": url}, tags={})
    assert client.get_run(run).data.params["storage.root"] == line[7:].split(": ")[0]
