"""Shard writer: determinism, stable split, manifest, stats, atomicity, streaming memory."""

import hashlib
import io
import json
import re
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from ganlib.data import shards
from ganlib.data.images import decode_png
from ganlib.data.records import Sample, Skipped
from ganlib.data.shards import (
    MIN_TRAIN_SAMPLES,
    dataset_info,
    read_manifest,
    split_of,
    summarize,
    verify,
    write_shards,
)
from ganlib.errors import GanlibError

CLASSES = ["cat", "dog", "owl"]


def image(i: int, size: int = 8, channels: int = 3) -> np.ndarray:
    """The deterministic test image of sample i: [size, size, channels] uint8."""
    return np.random.default_rng(i).integers(0, 256, (size, size, channels), dtype=np.uint8)


def samples(n, *, start=0, labels=True, paired=False, size=8):
    for i in range(start, start + n):
        imgs = (
            {"a.png": image(i, size), "b.png": image(i + 10**6, size)}
            if paired
            else {"png": image(i, size)}
        )
        yield Sample(f"s{i:05d}", imgs, i % 3 if labels else None, f"src#{i}")


def write(items, out, **kw):
    args = {"shard_size": 7, "val_fraction": 0.25, "classes": CLASSES, "progress": False}
    return write_shards(items, out, **(args | kw))


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir())


def test_split_is_a_stable_function_of_the_key():
    keys = [f"k{i}" for i in range(2000)]
    splits = [split_of(k, 0.2) for k in keys]
    assert splits == [split_of(k, 0.2) for k in keys]
    assert 0.15 < splits.count("val") / len(keys) < 0.25
    assert {split_of(k, 0.0) for k in keys} == {"train"}


def test_adding_samples_never_moves_old_ones(tmp_path):
    write(samples(40), tmp_path / "a")
    write(samples(90), tmp_path / "b")
    old = read_manifest(tmp_path / "a").to_pydict()
    new = read_manifest(tmp_path / "b").to_pydict()
    new_split = dict(zip(new["key"], new["split"], strict=True))
    assert all(new_split[k] == s for k, s in zip(old["key"], old["split"], strict=True))


def test_output_is_byte_identical_run_to_run(tmp_path):
    long_key = "k" * 150  # gets a PAX header, which must be deterministic too
    for name in ("a", "b"):
        write([*samples(50), Sample(long_key, {"png": image(0)}, 0, "")], tmp_path / name)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*"))
    assert Path("manifest.parquet") in files and Path("train/train-000000.tar") in files
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*"))
    for f in files:
        if (tmp_path / "a" / f).is_file():
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_manifest_rows_point_at_the_stored_members(tmp_path):
    out = tmp_path / "shards"
    write(samples(45), out)
    m = read_manifest(out)
    assert m.schema.field("index").type == "int32" and m.schema.field("label").type == "int64"
    assert json.loads(m.schema.metadata[b"classes"]) == CLASSES
    rows = m.to_pylist()
    assert sorted(r["key"] for r in rows) == [f"s{i:05d}" for i in range(45)]
    for r in rows:
        assert r["shard"].startswith(f"{r['split']}/{r['split']}-") and r["shard"].endswith(".tar")
        members = tar_members(out / r["shard"])
        names = list(dict.fromkeys(name.split(".")[0] for name in members))  # keys, tar order
        assert names[r["index"]] == r["key"]
        png = members[f"{r['key']}.png"]
        assert hashlib.sha256(png).hexdigest() == r["sha256"]
        i = int(r["key"][1:])
        np.testing.assert_array_equal(decode_png(png), image(i))
        assert members[f"{r['key']}.cls"] == str(i % 3).encode()
        assert (r["label"], r["width"], r["height"], r["origin"]) == (i % 3, 8, 8, f"src#{i}")


@pytest.mark.parametrize("paired", [False, True])
def test_manifest_byte_ranges_are_exactly_the_stored_pngs(tmp_path, paired):
    out = tmp_path / "shards"
    long_key = "k" * 150  # its PAX header makes the member header longer than 512 bytes
    items = [
        *samples(20, paired=paired),
        Sample(long_key, next(samples(1, paired=paired)).images, 0, ""),
    ]
    write(items, out)
    m = read_manifest(out)
    for name in ("offset", "length", "offset_b", "length_b"):
        assert m.schema.field(name).type == "int64"
    assert (m["offset_b"].null_count == 0) if paired else (m["offset_b"].null_count == m.num_rows)
    fields = ["a.png", "b.png"] if paired else ["png"]
    for r in m.to_pylist():
        data = (out / r["shard"]).read_bytes()
        with tarfile.open(out / r["shard"]) as tar:
            members = {t.name: t for t in tar.getmembers()}
        spans = [(r["offset"], r["length"]), (r["offset_b"], r["length_b"])][: len(fields)]
        for field, (offset, length) in zip(fields, spans, strict=True):
            member = members[f"{r['key']}.{field}"]
            assert (offset, length) == (member.offset_data, member.size)
        first = data[r["offset"] : r["offset"] + r["length"]]
        assert hashlib.sha256(first).hexdigest() == r["sha256"]
        if paired:
            b = data[r["offset_b"] : r["offset_b"] + r["length_b"]]
            assert hashlib.sha256(b).hexdigest() == r["sha256_b"]
            if r["key"] != long_key:
                np.testing.assert_array_equal(decode_png(b), image(int(r["key"][1:]) + 10**6))
        else:
            assert r["sha256_b"] is None


def test_stats_count_everything(tmp_path):
    out = tmp_path / "shards"
    items = [*samples(30), Skipped("x/broken.png", "truncated"), *samples(20, start=30)]
    stats = write(items, out)
    assert json.loads((out / "stats.json").read_text()) == stats
    m = read_manifest(out).to_pydict()
    n_train = m["split"].count("train")
    assert (stats["samples"], stats["train"], stats["val"]) == (50, n_train, 50 - n_train)
    assert stats["shards"] == {"train": -(-n_train // 7), "val": -(-(50 - n_train) // 7)}
    assert stats["classes"] == {"cat": 17, "dog": 17, "owl": 16}
    assert stats["skipped"] == 1
    assert stats["skipped_files"] == [{"path": "x/broken.png", "reason": "truncated"}]
    assert (stats["resolution"], stats["channels"]) == (8, 3)
    assert sorted(p.name for p in (out / "train").iterdir())[0] == "train-000000.tar"

    info = summarize(out)
    assert info["splits"]["train"]["samples"] == n_train
    assert info["splits"]["val"]["shards"] == stats["shards"]["val"]
    assert info["classes"] == stats["classes"] and info["fields"] == ["png"]
    assert info["splits"]["train"]["first_keys"][0] == "s00000"


def test_webdataset_reads_keys_images_and_labels(tmp_path):
    out = tmp_path / "shards"
    write(samples(30), out)
    urls = sorted(str(p) for p in out.glob("*/*.tar"))
    got = list(wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()))
    assert sorted(s["__key__"] for s in got) == [f"s{i:05d}" for i in range(30)]
    for s in got:
        i = int(s["__key__"][1:])
        assert int(s["cls"]) == i % 3
        np.testing.assert_array_equal(decode_png(s["png"]), image(i))


def test_unlabelled_samples_have_no_cls(tmp_path):
    out = tmp_path / "shards"
    stats = write(samples(12, labels=False), out, classes=None)
    assert stats["classes"] is None
    assert read_manifest(out)["label"].null_count == 12
    assert not any(n.endswith(".cls") for t in out.glob("*/*.tar") for n in tar_members(t))


def test_paired_samples_and_long_keys(tmp_path):
    out = tmp_path / "shards"
    long_key = "k" * 150  # past the 100-byte USTAR name limit
    items = [
        *samples(10, paired=True),
        Sample(long_key, next(samples(1, paired=True)).images, 0, ""),
    ]
    write(items, out, val_fraction=0.0)
    got = list(
        wds.DataPipeline(
            wds.SimpleShardList(sorted(str(p) for p in out.glob("train/*.tar"))),
            wds.tarfile_to_samples(),
        )
    )
    assert [s["__key__"] for s in got] == [f"s{i:05d}" for i in range(10)] + [long_key]
    for s in got[:10]:
        i = int(s["__key__"][1:])
        np.testing.assert_array_equal(decode_png(s["a.png"]), image(i))
        np.testing.assert_array_equal(decode_png(s["b.png"]), image(i + 10**6))
    m = read_manifest(out)
    assert json.loads(m.schema.metadata[b"fields"]) == ["a.png", "b.png"]
    assert m["sha256"][0].as_py() == hashlib.sha256(got[0]["a.png"]).hexdigest()


def failing(n, exc):
    yield from samples(n)
    raise exc


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failure_leaves_no_partial_output(tmp_path, exc):
    out = tmp_path / "shards"
    with pytest.raises(type(exc)):
        write(failing(20, exc), out)
    assert siblings(out) == []

    out.mkdir()
    (out / "old.txt").write_text("previous run")
    with pytest.raises(type(exc)):
        write(failing(20, exc), out)
    assert siblings(out) == ["shards"]
    assert [p.name for p in out.iterdir()] == ["old.txt"]


def test_success_replaces_previous_output(tmp_path):
    out = tmp_path / "shards"
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    write(samples(10), out)
    assert siblings(out) == ["shards"]
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.parquet",
        "stats.json",
        "train",
        "val",
    ]


def test_dvcs_gitignore_in_the_output_survives_a_rewrite(tmp_path):
    """`python -m pipeline.shard` outside DVC must not delete the tracked .gitignore."""
    out = tmp_path / "shards"
    out.mkdir()
    (out / ".gitignore").write_text("/train\n/val\n/manifest.parquet\n")
    write(samples(10), out)
    assert (out / ".gitignore").read_text() == "/train\n/val\n/manifest.parquet\n"
    assert (out / "manifest.parquet").is_file()


def test_zero_usable_images_is_a_clear_error(tmp_path):
    out = tmp_path / "shards"
    bad = [Skipped("a/1.png", "not an image"), Skipped("a/2.png", "empty file")]
    with pytest.raises(
        GanlibError,
        match=r"no usable images in imagefolder:a: 2 inputs skipped, "
        r"e\.g\. a/1\.png: not an image",
    ):
        write(bad, out, source="imagefolder:a")
    with pytest.raises(GanlibError, match="no inputs"):
        write([], out)
    assert siblings(out) == []


def _peak_bytes(n: int, tmp: Path) -> int:
    tracemalloc.start()
    write(samples(n, size=4), tmp / f"n{n}", shard_size=100)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_the_number_of_images(tmp_path, monkeypatch):
    # A small manifest buffer, so both runs flush rows; then nothing may grow with n.
    monkeypatch.setattr(shards, "_ROWS_PER_FLUSH", 200)
    _peak_bytes(50, tmp_path)  # first use allocates caches once (imports, codecs)
    small, large = _peak_bytes(500, tmp_path), _peak_bytes(5000, tmp_path)
    assert large < 1.5 * small, (small, large)


@pytest.mark.parametrize(
    "bad",
    [
        Sample("has.dot", {"png": image(0)}, 0, ""),
        Sample("s99999", {"png": image(0, size=4)}, 0, ""),
        Sample("s99999", {"png": image(0)}, 3, ""),
    ],
    ids=["key", "shape", "label"],
)
def test_source_bugs_are_caught_before_they_reach_the_shards(tmp_path, bad):
    out = tmp_path / "shards"
    with pytest.raises(ValueError, match="s99999|has.dot"):
        write([*samples(3), bad], out)
    assert siblings(out) == []


def one_domain_samples(n_a: int, n_b: int):
    """Unpaired translation samples: n_a holding only a.png, then n_b holding only b.png."""
    for i in range(n_a):
        yield Sample(f"A-{i:03d}", {"a.png": image(i)}, None, f"A/{i}")
    for i in range(n_b):
        yield Sample(f"B-{i:03d}", {"b.png": image(i + 1000)}, None, f"B/{i}")


def test_samples_of_a_single_domain_leave_the_other_span_null(tmp_path):
    out = tmp_path / "shards"
    stats = write(one_domain_samples(9, 4), out, classes=None)
    assert stats["domains"] == {"A": 9, "B": 4, "pairs": 0}
    m = read_manifest(out).to_pylist()
    assert summarize(out)["fields"] == ["a.png", "b.png"]
    for r in m:
        domain = r["key"][0]
        assert (r["offset"] is None) == (domain == "B") and (r["length"] is None) == (domain == "B")
        assert (r["offset_b"] is None) == (domain == "A")
        members = tar_members(out / r["shard"])
        name = f"{r['key']}.{domain.lower()}.png"
        assert [k for k in members if k.startswith(r["key"] + ".")] == [name]
        assert hashlib.sha256(members[name]).hexdigest() == r["sha256"]
        assert r["sha256_b"] == (r["sha256"] if domain == "B" else None)
        i = int(r["key"][2:]) + (1000 if domain == "B" else 0)
        assert (decode_png(members[name]) == image(i)).all()


def test_pairs_and_single_domains_mix_but_not_with_single_images(tmp_path):
    # A B-only first sample still opens the translation layout; pairs may follow.
    first = Sample("B-0", {"b.png": image(0)}, None, "")
    stats = write([first, *samples(3, labels=False, paired=True)], tmp_path / "a", classes=None)
    assert stats["domains"] == {"A": 3, "B": 4, "pairs": 3}
    assert "domains" not in write(samples(3), tmp_path / "b")
    with pytest.raises(ValueError, match=r"fields \['png'\], expected \('a.png', 'b.png'\)"):
        write([first, *samples(1)], tmp_path / "c", classes=None)


def test_a_translation_domain_without_usable_images_is_a_clear_error(tmp_path):
    items = [*one_domain_samples(3, 0), Skipped("B/x.png", "truncated")]
    with pytest.raises(GanlibError, match="no usable images of domain B in .*: 1 inputs skipped"):
        write(items, tmp_path / "shards", classes=None)
    assert not (tmp_path / "shards").exists()


def test_unnamed_labels_are_named_by_their_index(tmp_path):
    # The manifest's metadata is written before the largest label is known, then rewritten:
    # the rows must be those of a run that knew the names from the start.
    write(samples(20), tmp_path / "unnamed", classes=None)
    write(samples(20), tmp_path / "named", classes=["0", "1", "2"])
    unnamed, named = (read_manifest(tmp_path / name) for name in ("unnamed", "named"))
    assert json.loads(unnamed.schema.metadata[b"classes"]) == ["0", "1", "2"]
    assert unnamed.equals(named) and unnamed.schema.metadata == named.schema.metadata
    assert dataset_info(tmp_path / "unnamed")["classes"] == ["0", "1", "2"]
    assert list(summarize(tmp_path / "unnamed")["classes"]) == ["0", "1", "2"]
    assert not list(tmp_path.glob("unnamed/*.tmp"))


def test_labels_beyond_the_cap_are_a_source_bug(tmp_path):
    from ganlib.data.records import MAX_CLASSES

    with pytest.raises(ValueError, match=f"label {MAX_CLASSES} not a class index"):
        write([Sample("s0", {"png": image(0)}, MAX_CLASSES, "")], tmp_path / "s", classes=None)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (samples(1), r"images in the train split: [01], at least 2 are needed"),
        ([*one_domain_samples(8, 1)], r"B images in the train split: [01], at least 2"),
    ],
    ids=["one-image", "one-b-image"],
)
def test_too_few_train_images_for_the_pipeline(tmp_path, items, message):
    out = tmp_path / "shards"
    with pytest.raises(GanlibError, match=f"too few samples in src: {message}"):
        write(items, out, classes=None, min_train=MIN_TRAIN_SAMPLES, source="src")
    assert siblings(out) == []


def _rewrite_manifest(root: Path, column: str, fn) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = read_manifest(root)
    values = pa.array([fn(v) for v in table[column].to_pylist()], table.schema.field(column).type)
    table = table.set_column(table.schema.get_field_index(column), column, values)
    pq.write_table(table, root / "manifest.parquet")


def test_verify_finds_every_kind_of_problem(tmp_path):
    out = tmp_path / "shards"
    write(samples(30, paired=True), out)
    found = verify(out)
    assert (found["samples"], found["members"]) == (30, 90)  # a.png, b.png and cls each
    assert all(found[k] == {"count": 0, "first": []} for k in ("missing", "extra", "mismatched"))

    # an extra member inside a tar, and an offset the manifest gets wrong
    shard = out / "train" / "train-000000.tar"
    with tarfile.open(shard, "a") as tar:
        info = tarfile.TarInfo("stray.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    _rewrite_manifest(out, "offset", lambda v: v + 512)
    found = verify(out)
    assert found["extra"] == {
        "count": 1,
        "first": ["train/train-000000.tar: stray.txt: not in the manifest"],
    }
    assert found["mismatched"]["count"] == 30
    assert re.fullmatch(
        r"\S+\.tar: s\d+\.a\.png: at byte \d+, the manifest says \d+",
        found["mismatched"]["first"][0],
    )


def test_verify_checks_the_b_images_by_their_own_sha256(tmp_path):
    out = tmp_path / "shards"
    write(samples(6, paired=True), out)
    _rewrite_manifest(out, "sha256_b", lambda v: "0" * 64)
    found = verify(out)
    assert found["mismatched"]["count"] == 6
    assert "b.png: sha256 differs from the manifest" in found["mismatched"]["first"][0]


def test_parallel_writer_gives_byte_identical_shards(tmp_path):
    """An ordered pool of 2 workers decoding and encoding an image folder writes exactly the
    bytes of the serial writer (tars, manifest, stats)."""
    from PIL import Image

    from ganlib.config import DataConfig
    from ganlib.data.sources import open_source

    for i in range(40):
        (tmp_path / "img" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        arr = np.random.default_rng(i).integers(0, 256, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / "img" / f"c{i % 2}" / f"x{i}.png")
    (tmp_path / "img" / "c0" / "broken.png").write_bytes(b"not a png")
    source = open_source(
        DataConfig(source=f"imagefolder:{tmp_path / 'img'}", resolution=16, channels=3)
    )
    out = {}
    for workers in (1, 2):
        samples = source.lazy() if workers > 1 else source
        write_shards(samples, tmp_path / f"w{workers}", shard_size=8, val_fraction=0.2,
                     classes=source.classes, progress=False, workers=workers)  # fmt: skip
        out[workers] = {
            p.relative_to(tmp_path / f"w{workers}"): p.read_bytes()
            for p in sorted((tmp_path / f"w{workers}").rglob("*")) if p.is_file()
        }  # fmt: skip
    assert out[1] == out[2] and len(out[1]) > 4
