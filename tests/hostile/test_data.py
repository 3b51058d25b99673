"""Hostile input for the data (issue 17): labels, symbolic links, tiny datasets, damaged shards
and files that are not manifests, through the entry points a user calls: the shard and
featurize stages and ``ganlib shards info|verify``.

Every input is a few 8x8 or 16x16 images written here, so the tables take seconds.
"""

# The tables keep one row per line, however long its expected message.
# ruff: noqa: E501

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ganlib.data.images import encode_png
from ganlib.data.records import MAX_CLASSES, Sample
from ganlib.data.shards import dataset_info, read_manifest, write_shards
from tests.hostile.harness import cli, expect, row, stage

CORRUPTED = r"corrupted since sharding; run `dvc repro shard` \(or `dvc checkout`\)"


def images(n: int, side: int = 8) -> np.ndarray:
    """``n`` deterministic gray images, uint8 [n, side, side]."""
    return np.random.default_rng(n).integers(0, 256, (n, side, side), dtype=np.uint8)


def project(path: Path, **sections) -> Path:
    """A project directory holding a params.yaml of ``sections``."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "params.yaml").write_text(yaml.safe_dump(sections))
    return path


# -- inputs of the shard stage: each writes its data under tmp and returns the data section --


def npz(y=None, n: int = 12):
    def make(tmp: Path) -> dict:
        arrays = {"x": images(n)} | ({} if y is None else {"y": np.asarray(y)})
        np.savez(tmp / "d.npz", **arrays)
        return {"source": f"npz:{tmp / 'd.npz'}"}

    return make


def parquet(labels, names: list[str] | None = None, **data):
    """A table of PNG bytes and ``labels``, with Hugging Face ClassLabel ``names`` if given."""

    def make(tmp: Path) -> dict:
        pngs = [encode_png(x[:, :, None]) for x in images(len(labels))]
        table = pa.table({"image": pngs, "label": labels})
        if names is not None:
            features = {"label": {"_type": "ClassLabel", "names": names}}
            table = table.replace_schema_metadata(
                {"huggingface": json.dumps({"features": features})}
            )
        pq.write_table(table, tmp / "t.parquet")
        return {"source": f"parquet:{tmp / 't.parquet'}", **data}

    return make


def folder(*, image: bool = True):
    """An image folder with symbolic link loops: ``a -> b -> a`` (as directories and as
    image names) and a directory link to its parent; and one real image unless not ``image``."""

    def make(tmp: Path) -> dict:
        cls = tmp / "images" / "cls"
        cls.mkdir(parents=True)
        if image:
            for i, x in enumerate(images(4)):
                (cls / f"{i}.png").write_bytes(encode_png(x[:, :, None]))
        os.symlink("b", cls / "a")
        os.symlink("a", cls / "b")
        os.symlink("y.png", cls / "x.png")
        os.symlink("x.png", cls / "y.png")
        os.symlink("..", cls / "up")
        return {"source": f"imagefolder:{tmp / 'images'}", "val_fraction": 0.0}

    return make


TOO_BIG = 10**9
ABC = ["a", "b", "c"]
UNNAMED = ["0", "1", "2"]


def npz_member_without_suffix(tmp: Path) -> dict:
    with zipfile.ZipFile(tmp / "raw.npz", "w") as zf:  # a member x, not x.npy
        zf.writestr("x", b"\0" * 32)
    return {"source": f"npz:{tmp / 'raw.npz'}"}


def npz_declaring_huge_images(tmp: Path) -> dict:
    """20000x20000 images declared in a few hundred bytes: refused from the header."""
    with zipfile.ZipFile(tmp / "huge.npz", "w") as zf, zf.open("x.npy", "w") as fp:
        header = {"descr": "|u1", "fortran_order": False, "shape": (1, 20000, 20000)}
        np.lib.format.write_array_header_1_0(fp, header)
    return {"source": f"npz:{tmp / 'huge.npz'}", "max_image_pixels": 1_000_000}


# (input, exit code, the error line, or for a good row the class names in stats.json)
SHARD_ROWS = [
    row(npz_member_without_suffix, 2, r"its member x is not an .npy array", id="npz-member-x-without-npy"),
    row(npz_declaring_huge_images, 2, r"x holds 20000x20000 images, over data.max_image_pixels \(1000000\)", id="npz-declaring-20000x20000"),
    row(npz(np.arange(12) % 3), 0, UNNAMED, id="npz-unnamed-labels"),
    row(npz([MAX_CLASSES - 1] * 12), 0, [str(i) for i in range(MAX_CLASSES)], id="npz-largest-label"),
    row(npz([MAX_CLASSES] * 12), 2, r"y\[0\]: label 100000 is not a class index 0 <= y < 100,000 \(ganlib.data.records.MAX_CLASSES\)", id="npz-label-at-the-cap"),
    row(npz([0] * 11 + [TOO_BIG]), 2, rf"y\[11\]: label {TOO_BIG} is not a class index 0 <= y < 100,000", id="npz-huge-label"),
    row(npz([0] * 5 + [-1] * 7), 2, r"y\[5\]: label -1 is not a class index .*without y", id="npz-negative-label"),
    row(npz(np.linspace(0, 1, 12)), 2, r"y is float64 \(12,\), expected 12 integers", id="npz-float-labels"),
    row(npz(n=1), 2, r"too few samples in npz:.*: images in the train split: [01], at least 2", id="one-image"),
    row(parquet(pa.array([0, 1, 2] * 4)), 0, UNNAMED, id="parquet-unnamed-labels"),
    row(parquet(pa.array([0, 1, 2] * 4), ABC), 0, ABC, id="parquet-named-labels"),
    row(parquet(pa.array([0, 1, -1, 0])), 2, r"'.*t.parquet' row 2: label -1 is not a class index .*null", id="parquet-minus-one"),
    row(parquet(pa.array([0, 1, -1, 0] * 3), label_column=""), 0, None, id="parquet-labels-ignored"),
    row(parquet(pa.array([0, TOO_BIG])), 2, rf"row 1: label {TOO_BIG} is not a class index 0 <= y < 100,000", id="parquet-huge-label"),
    row(parquet(pa.array([0, 1, 5]), ["a", "b"]), 2, r"row 2: label 5 is not a class index 0 <= y < 2 \(classes named", id="parquet-label-beyond-names"),
    row(parquet(pa.array([0.5, 1.0])), 2, r"column 'label' .* is double, expected integer class indices", id="parquet-float-labels"),
    row(folder(), 0, ["cls"], id="imagefolder-symlink-loops"),
    row(folder(image=False), 2, r"no usable images in imagefolder:.*symbolic link loop", id="imagefolder-only-loops"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "code", "expected"), SHARD_ROWS)
def test_shard_stage(tmp_path, monkeypatch, make, code, expected):
    data = {"resolution": 8, "channels": 1, "val_fraction": 0.2} | make(tmp_path)
    monkeypatch.chdir(project(tmp_path / "project", data=data))
    outcome = stage("shard")
    expect(outcome, code, expected if code else None)
    if code == 0:
        # What every later stage reads: the class names, "0".."K-1" for unnamed labels.
        assert dataset_info("data/shards")["classes"] == expected
        stats = json.loads(Path("data/shards/stats.json").read_text())
        assert sorted(stats["classes"] or ()) == sorted(expected or ())
        if "imagefolder" in data["source"]:  # the loops are skipped with a reason, not fatal
            reasons = [s["reason"] for s in stats["skipped_files"]]
            assert reasons == ["symbolic link loop"] * 5, reasons


def test_unnamed_labels_are_classes_for_every_stage(tmp_path):
    """npz y without names: the manifest names the classes "0".."K-1", so conditional
    training's check and model config see K classes (they said "the shards have none")."""
    from ganlib.config import Params
    from ganlib.data.shards import summarize
    from ganlib.tasks import get_task
    from ganlib.training.run import preflight

    y = np.array([0, 4] * 20)  # classes 1..3 have no sample: K is still 5
    shards = write(tmp_path / "p" / "data" / "shards", images(40, side=32), y)
    assert dataset_info(shards)["classes"] == ["0", "1", "2", "3", "4"]
    assert summarize(shards)["classes"] == {"0": 20, "1": 0, "2": 0, "3": 0, "4": 20}
    params = Params.from_dict({"train": {"conditional": True, "batch_size": 8, "num_workers": 1}})
    info = preflight(params, tmp_path / "p", local=True)
    task = get_task("generation")
    assert task.model_config(params.train, None, info)["num_classes"] == 5


# -- shards for featurize and `ganlib shards`: written directly, so that the featurize checks
# see shards the shard stage refuses --------------------------------------------------------


def write(out: Path, x: np.ndarray, y=None, val_fraction: float = 0.2) -> Path:
    samples = (
        Sample(f"s{i:03d}", {"png": img[:, :, None]}, None if y is None else int(y[i]), f"#{i}")
        for i, img in enumerate(x)
    )
    write_shards(
        samples, out, shard_size=8, val_fraction=val_fraction, classes=None, progress=False
    )
    return out


def corrupt_png(root: Path) -> None:
    """Overwrite 8 bytes inside the first sample's compressed pixels: same size, same tar."""
    r = read_manifest(root).to_pylist()[0]
    tar = root / r["shard"]
    data = bytearray(tar.read_bytes())
    at = r["offset"] + r["length"] - 24  # before the IDAT CRC and the IEND chunk
    data[at : at + 8] = bytes(8)
    tar.write_bytes(bytes(data))


def labelled(root: Path) -> None:
    write(root, images(40, side=16), np.arange(40) % 2)


def one_image(root: Path) -> None:
    write(root, images(1, side=16), val_fraction=0.0)


def one_b_image(root: Path) -> None:
    x = images(6, side=16)[:, :, :, None]
    samples = [Sample(f"A-{i}", {"a.png": img}, None, "") for i, img in enumerate(x[:5])]
    samples.append(Sample("B-0", {"b.png": x[5]}, None, ""))
    write_shards(samples, root, shard_size=8, val_fraction=0.0, classes=None, progress=False)


def corrupted(root: Path) -> None:
    write(root, images(12, side=16))
    corrupt_png(root)


FEATURIZE_ROWS = [
    row(labelled, "classifier", 0, None, id="unnamed-labels-classifier"),
    row(one_image, "random", 2, r"png images in the train split: 1, featurize needs at least 2", id="one-image"),
    row(one_b_image, "random", 2, r"b.png images in the train split: 1, featurize needs at least 2", id="one-b-image"),
    row(corrupted, "random", 2, r"train-000000.tar: s\d+.png does not decode \(.*\); its bytes differ from the manifest's sha256: " + CORRUPTED, id="corrupted-png"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "kind", "code", "line"), FEATURIZE_ROWS)
def test_featurize_stage(tmp_path, monkeypatch, make, kind, code, line):
    featurize = {"kind": kind, "classifier_epochs": 1, "batch_size": 8}
    data = {"resolution": 16, "channels": 1}  # what the rows shard
    monkeypatch.chdir(project(tmp_path, featurize=featurize, data=data))
    make(Path("data/shards"))
    outcome = stage("featurize")
    expect(outcome, code, line)
    if code == 0:
        report = json.loads(Path("featurize/report.json").read_text())
        assert report["kind"] == kind


# -- ganlib shards info | verify ---------------------------------------------------------------


def not_parquet(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "manifest.parquet").write_text("key,split\n")
    return root


def foreign_parquet(root: Path) -> Path:
    root.mkdir(parents=True)
    pq.write_table(pa.table({"key": ["a"], "split": ["train"]}), root / "manifest.parquet")
    return root / "manifest.parquet"


def good(root: Path) -> Path:
    return write(root, images(12), np.arange(12) % 3)


def damaged(damage):
    def make(root: Path) -> Path:
        damage(good(root))
        return root

    return make


def change_label(root: Path) -> None:
    r = next(r for r in read_manifest(root).to_pylist() if r["label"] == 1)
    tar = root / r["shard"]
    data = tar.read_bytes()
    # the .cls member's one byte follows its 512-byte header, which names it
    header = data.index(f"{r['key']}.cls".encode())
    at = header + 512
    assert data[at : at + 1] == b"1"
    tar.write_bytes(data[:at] + b"2" + data[at + 1 :])


def delete_tar(root: Path) -> None:
    (root / "train" / "train-000000.tar").unlink()


def extra_tar(root: Path) -> None:
    (root / "train" / "train-000099.tar").write_bytes(bytes(1024))


CLI_ROWS = [
    row(["info"], good, 0, None, id="info"),
    row(["info"], not_parquet, 2, r"manifest.parquet: not a parquet file \(.*\); give a shard directory", id="info-not-parquet"),
    row(["info"], foreign_parquet, 2, r"without ganlib's shard metadata \(classes, fields\)", id="info-foreign-parquet"),
    row(["info"], lambda root: root, 2, r"manifest not found; run the shard stage first", id="info-missing"),
    row(["verify"], good, 0, None, id="verify"),
    row(["verify"], damaged(corrupt_png), 2, r": 1 mismatched, e.g. train/train-000000.tar: s\d+.png: sha256 differs from the manifest; " + CORRUPTED, id="verify-corrupted-png"),
    row(["verify"], damaged(change_label), 2, r": 1 mismatched, e.g. .*s\d+.cls: label b'2', the manifest says 1", id="verify-changed-label"),
    row(["verify"], damaged(delete_tar), 2, r": \d+ missing, e.g. train/train-000000.tar: the tar file is missing", id="verify-missing-tar"),
    row(["verify"], damaged(extra_tar), 2, r": 1 extra, e.g. train/train-000099.tar: a tar the manifest does not list", id="verify-extra-tar"),
    row(["verify"], not_parquet, 2, r"not a parquet file", id="verify-not-parquet"),
]  # fmt: skip


@pytest.mark.parametrize(("command", "make", "code", "line"), CLI_ROWS)
def test_shards_cli(tmp_path, command, make, code, line):
    path = make(tmp_path / "shards")
    outcome = cli("shards", *command, str(path))
    expect(outcome, code, line)
    if command == ["info"] and code == 0:
        assert "classes (3): 0: " in outcome.stdout
    if command == ["verify"] and make is not not_parquet:
        assert "members in" in outcome.stdout  # the summary, also when something is wrong
