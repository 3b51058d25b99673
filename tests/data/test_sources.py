"""ganlib.data.sources: every source format, bad inputs, keys, determinism."""

import io
import itertools
import json
import os
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ganlib.config import DataConfig
from ganlib.data.records import Sample, Skipped
from ganlib.data.sources import KEY_CHARS, make_key, open_source
from ganlib.errors import GanlibError


def cfg(source: str, **kwargs) -> DataConfig:
    return DataConfig(source=source, **{"resolution": 8, "channels": 3, **kwargs})


def read(source: str, **kwargs) -> tuple[list[Sample], list[Skipped], object]:
    """Iterate a whole source; also check what every source promises about its items."""
    src = open_source(cfg(source, **kwargs))
    items = list(src)
    samples = [i for i in items if isinstance(i, Sample)]
    skipped = [i for i in items if isinstance(i, Skipped)]
    assert len(samples) + len(skipped) == len(items)
    if src.total is not None:
        assert src.total == len(items)
    keys = [s.key for s in samples]
    assert len(set(keys)) == len(keys)
    assert all(set(k) <= KEY_CHARS for k in keys)
    return samples, skipped, src


def png(arr_or_color, size=(12, 10), mode="RGB") -> bytes:
    if isinstance(arr_or_color, np.ndarray):
        img = Image.fromarray(arr_or_color)
    else:
        img = Image.new(mode, size, arr_or_color)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def skipped_reasons(skipped: list[Skipped], root) -> dict[str, str]:
    return {os.path.relpath(s.path, root): s.reason for s in skipped}


# -- keys --------------------------------------------------------------------------------------


def test_make_key_plain_parts_are_kept():
    assert make_key("digits", "00017") == "digits-00017"
    assert make_key("photos", "astronaut", "s96", "y0", "x48") == "photos-astronaut-s96-y0-x48"


def test_make_key_lossy_slugs_get_a_stable_hash():
    # Pinned values: keys must not change between runs, machines or Python versions.
    assert make_key("cat", "img.1") == "cat-img_1--fcc18cfbd5"
    assert make_key("cat", "img_1") == "cat-img_1"
    # A "-" inside a part would make the join ambiguous, so it is lossy too.
    assert make_key("a-b", "c") != make_key("a", "b-c")
    odd = ["x y", "x/y", "x.y", "x:y", "ünïcode", "", "-", "x--y", "\udcff"]
    keys = [make_key(p) for p in odd] + [make_key("cat", p) for p in odd]
    assert len(set(keys)) == len(keys)
    assert all(set(k) <= KEY_CHARS and k for k in keys)


# -- imagefolder -------------------------------------------------------------------------------


def make_folder(root):
    """Two classes, a file at the top, and one of each kind of bad input."""
    write(root / "cat" / "a.png", png((255, 0, 0)))
    write(root / "cat" / "img.1.png", png((0, 255, 0)))
    write(root / "cat" / "img_1.png", png((0, 0, 255)))
    write(root / "cat" / "deep" / "b.JPG", png((9, 9, 9)))  # PNG bytes, JPEG name: still fine
    write(root / "dog" / "c.png", png((200, 200, 200), mode="RGB"))
    write(root / "dog" / "same.png", png((1, 1, 1)))
    write(root / "dog" / "same.jpg", png((2, 2, 2)))
    write(root / "top.png", png((5, 5, 5)))
    write(root / "notes.txt", b"hello")
    write(root / ".hidden.png", png((0, 0, 0)))
    write(root / ".git" / "x.png", png((0, 0, 0)))
    write(root / "dog" / "empty.png", b"")
    write(root / "dog" / "text.png", b"this is not an image")
    write(root / "dog" / "trunc.png", png(np.zeros((32, 32, 3), np.uint8) + 7)[:60])
    write(root / "dog" / "bomb.png", png((0, 0, 0), size=(200, 200)))
    (root / "dog" / "folder.png").mkdir()
    (root / "dog" / "dangling.png").symlink_to(root / "nowhere.png")
    os.mkfifo(root / "dog" / "pipe.png")


def test_imagefolder(tmp_path):
    make_folder(tmp_path)
    samples, skipped, src = read(f"imagefolder:{tmp_path}", max_image_pixels=10_000)
    assert src.classes == ["cat", "dog"]
    by_origin = {os.path.relpath(s.origin, tmp_path): s for s in samples}
    assert sorted(by_origin) == [
        "cat/a.png",
        "cat/deep/b.JPG",
        "cat/img.1.png",
        "cat/img_1.png",
        "dog/c.png",
        "dog/same.jpg",
        "dog/same.png",
        "top.png",
    ]
    assert by_origin["cat/a.png"].label == 0
    assert by_origin["cat/deep/b.JPG"].label == 0
    assert by_origin["dog/c.png"].label == 1
    assert by_origin["top.png"].label is None
    assert by_origin["cat/a.png"].key == "cat-a"
    assert by_origin["cat/img_1.png"].key == "cat-img_1"
    assert by_origin["cat/img.1.png"].key.startswith("cat-img_1--")
    assert by_origin["dog/same.png"].key != by_origin["dog/same.jpg"].key
    red = by_origin["cat/a.png"].images["png"]
    assert red.shape == (8, 8, 3) and (red == (255, 0, 0)).all()
    reasons = skipped_reasons(skipped, tmp_path)
    assert reasons.pop("dog/trunc.png").startswith("truncated or corrupt image: ")
    assert reasons == {
        "notes.txt": "not an image extension",
        "dog/empty.png": "empty file",
        "dog/text.png": "not an image: cannot identify image file",
        "dog/bomb.png": "decompression bomb: 200×200 pixels > limit 10000",
        "dog/folder.png": "is a directory",
        "dog/dangling.png": "dangling symbolic link",
        "dog/pipe.png": "not a regular file",
    }


def test_imagefolder_is_deterministic(tmp_path):
    make_folder(tmp_path)
    first, skipped1, _ = read(f"imagefolder:{tmp_path}", channels=1)
    second, skipped2, _ = read(f"imagefolder:{tmp_path}", channels=1)
    assert [s.key for s in first] == [s.key for s in second]
    assert all(
        np.array_equal(a.images["png"], b.images["png"]) for a, b in zip(first, second, strict=True)
    )
    assert skipped1 == skipped2
    assert first[0].images["png"].shape == (8, 8, 1)


def test_imagefolder_without_subfolders_is_unlabelled(tmp_path):
    write(tmp_path / "a.png", png((1, 2, 3)))
    write(tmp_path / "b.webp", b"")
    samples, skipped, src = read(f"imagefolder:{tmp_path}")
    assert src.classes is None
    assert [s.label for s in samples] == [None]
    assert [s.reason for s in skipped] == ["empty file"]


def test_imagefolder_symlink_loop_does_not_hang(tmp_path):
    write(tmp_path / "cls" / "a.png", png((1, 2, 3)))
    (tmp_path / "cls" / "again").symlink_to(tmp_path / "cls")
    samples, skipped, _ = read(f"imagefolder:{tmp_path}")
    assert len(samples) == 1
    assert [s.reason for s in skipped] == ["symbolic link loop"]


def test_imagefolder_symlink_loops_between_entries_are_skipped(tmp_path):
    # a -> b -> a fails to stat (ELOOP): DirEntry.is_dir raised instead of answering.
    write(tmp_path / "cls" / "ok.png", png((1, 2, 3)))
    loops = [("cls/a", "b"), ("cls/b", "a"), ("cls/x.png", "y.png"), ("cls/y.png", "x.png")]
    loops += [("c", "d"), ("d", "c")]  # at the root, where the classes are listed
    for link, target in loops:
        os.symlink(target, tmp_path / link)
    samples, skipped, src = read(f"imagefolder:{tmp_path}")
    assert src.classes == ["cls"] and [s.key for s in samples] == ["cls-ok"]
    assert skipped_reasons(skipped, tmp_path) == {link: "symbolic link loop" for link, _ in loops}


def test_imagefolder_missing_path(tmp_path):
    with pytest.raises(GanlibError) as info:
        open_source(cfg(f"imagefolder:{tmp_path}/nope"))
    assert str(info.value) == f"data.source: imagefolder path '{tmp_path}/nope' does not exist"


def test_imagefolder_paired(tmp_path):
    for name in ("1.png", "2.png", "3.png"):
        write(tmp_path / "A" / name, png((255, 0, 0)))
    for name in ("1.jpg", "2.png", "4.png"):
        write(tmp_path / "B" / name, png((0, 0, 255)))
    write(tmp_path / "B" / "5.png", b"")
    write(tmp_path / "A" / "5.png", png((255, 0, 0)))
    write(tmp_path / "readme.md", b"x")
    samples, skipped, src = read(f"imagefolder:{tmp_path}", paired=True)
    assert src.classes is None
    assert [s.key for s in samples] == ["1", "2"]
    assert all(set(s.images) == {"a.png", "b.png"} and s.label is None for s in samples)
    assert (samples[0].images["a.png"] == (255, 0, 0)).all()
    assert (samples[0].images["b.png"] == (0, 0, 255)).all()
    assert skipped_reasons(skipped, tmp_path) == {
        "readme.md": "not in A or B (data.paired is true)",
        "B/5.png": "empty file",
        "A/3.png": "no partner in B",
        "B/4.png": "no partner in A",
    }


def test_imagefolder_paired_needs_a_and_b(tmp_path):
    (tmp_path / "A").mkdir()
    with pytest.raises(GanlibError, match="needs sub-folders A and B"):
        open_source(cfg(f"imagefolder:{tmp_path}", paired=True))


# -- parquet -----------------------------------------------------------------------------------


def hf_table(n: int, start: int = 0) -> pa.Table:
    """A table as Hugging Face datasets writes it: {bytes, path} structs and a ClassLabel."""
    images = [
        {"bytes": png((10 * (start + i), 0, 0)), "path": f"{start + i}.png"} for i in range(n)
    ]
    table = pa.table({"image": images, "label": pa.array([i % 2 for i in range(n)], pa.int64())})
    features = {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": ["a", "b"]}}
    meta = {"info": {"features": features}}
    return table.replace_schema_metadata({"huggingface": json.dumps(meta)})


def test_parquet_struct_column_with_labels(tmp_path):
    table = hf_table(3)
    bad = pa.table(
        {
            "image": [{"bytes": None, "path": "lost.png"}, {"bytes": b"junk", "path": "j.png"}],
            "label": pa.array([1, None], pa.int64()),
        }
    )
    table = pa.concat_tables([table, bad.cast(table.schema)])
    pq.write_table(table, tmp_path / "train.parquet")
    samples, skipped, src = read(f"parquet:{tmp_path / 'train.parquet'}")
    assert src.classes == ["a", "b"]
    assert [s.key for s in samples] == ["train-00000000", "train-00000001", "train-00000002"]
    assert [s.label for s in samples] == [0, 1, 0]
    assert samples[2].origin == f"{tmp_path / 'train.parquet'}#2"
    assert (samples[2].images["png"] == (20, 0, 0)).all()
    assert [(os.path.basename(s.path), s.reason) for s in skipped] == [
        ("train.parquet#3", "no image bytes (only the path 'lost.png')"),
        ("train.parquet#4", "not an image: cannot identify image file"),
    ]


def test_parquet_raw_binary_without_labels(tmp_path):
    table = pa.table({"img": pa.array([png((1, 2, 3)), None], pa.binary())})
    pq.write_table(table, tmp_path / "raw.parquet")
    samples, skipped, src = read(f"parquet:{tmp_path}/raw.parquet", image_column="img", channels=1)
    assert src.classes is None
    assert [(s.key, s.label, s.images["png"].shape) for s in samples] == [
        ("raw-00000000", None, (8, 8, 1))
    ]
    assert [s.reason for s in skipped] == ["no image bytes (null)"]


def test_parquet_label_without_names_is_kept(tmp_path):
    pq.write_table(hf_table(2).replace_schema_metadata(None), tmp_path / "t.parquet")
    samples, _, src = read(f"parquet:{tmp_path}/t.parquet")
    assert src.classes is None
    assert [s.label for s in samples] == [0, 1]


@pytest.mark.parametrize(
    ("labels", "names", "message"),
    [
        ([0, -1], None, r"row 1: label -1 is not a class index 0 <= y < 100,000 .*null"),
        ([0, 10**9], None, r"row 1: label 1000000000 is not a class index 0 <= y < 100,000"),
        ([0, 1, 2], ["a", "b"], r"row 2: label 2 is not a class index 0 <= y < 2 \(classes named"),
    ],
    ids=["negative", "huge", "beyond-the-names"],
)
def test_parquet_labels_out_of_range(tmp_path, labels, names, message):
    table = hf_table(len(labels)).set_column(1, "label", pa.array(labels, pa.int64()))
    if names is None:
        table = table.replace_schema_metadata(None)
    pq.write_table(table, tmp_path / "t.parquet")
    src = open_source(cfg(f"parquet:{tmp_path}/t.parquet"))
    assert src.classes == names
    with pytest.raises(GanlibError, match=f"data.label_column: '.*t.parquet' {message}"):
        list(src)


def test_parquet_more_class_names_than_the_cap(tmp_path):
    from ganlib.data.records import MAX_CLASSES

    features = {"label": {"_type": "ClassLabel", "names": [str(i) for i in range(MAX_CLASSES + 1)]}}
    table = hf_table(1).replace_schema_metadata({"huggingface": json.dumps({"features": features})})
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(GanlibError, match="100,001 classes, more than ganlib's 100,000"):
        open_source(cfg(f"parquet:{tmp_path}/t.parquet"))


def test_parquet_glob_and_folder_over_two_files(tmp_path):
    pq.write_table(hf_table(2, start=5), tmp_path / "part-b.parquet")
    pq.write_table(hf_table(3, start=0), tmp_path / "part-a.parquet")
    (tmp_path / "notes.txt").write_text("ignored")
    for source in (f"parquet:{tmp_path}/part-*.parquet", f"parquet:{tmp_path}"):
        samples, skipped, src = read(source)
        assert src.total == 5 and not skipped
        assert [s.origin.rsplit("/", 1)[1] for s in samples] == [
            "part-a.parquet#0",
            "part-a.parquet#1",
            "part-a.parquet#2",
            "part-b.parquet#0",
            "part-b.parquet#1",
        ]
        assert samples[0].key.startswith("part-a-00000000--")  # "-" in the stem: hashed
        assert (samples[3].images["png"] == (50, 0, 0)).all()


def test_parquet_missing_image_column(tmp_path):
    pq.write_table(pa.table({"pixels": [b"x"], "label": [0]}), tmp_path / "t.parquet")
    with pytest.raises(GanlibError) as info:
        open_source(cfg(f"parquet:{tmp_path}/t.parquet"))
    message = str(info.value)
    assert "no column 'image'" in message and "columns: pixels, label" in message


def test_parquet_wrong_column_types(tmp_path):
    pq.write_table(pa.table({"image": [1, 2]}), tmp_path / "ints.parquet")
    with pytest.raises(GanlibError, match="column 'image' .* is int64, expected"):
        open_source(cfg(f"parquet:{tmp_path}/ints.parquet"))
    pq.write_table(pa.table({"image": [b"x"], "label": ["cat"]}), tmp_path / "str.parquet")
    with pytest.raises(GanlibError, match="data.label_column: column 'label' .* is string"):
        open_source(cfg(f"parquet:{tmp_path}/str.parquet"))


def test_parquet_bad_paths(tmp_path):
    with pytest.raises(GanlibError, match="does not exist"):
        open_source(cfg(f"parquet:{tmp_path}/nope.parquet"))
    with pytest.raises(GanlibError, match="matches no .parquet files"):
        open_source(cfg(f"parquet:{tmp_path}/*.parquet"))
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(GanlibError, match="cannot read parquet file .*junk.parquet"):
        open_source(cfg(f"parquet:{tmp_path}"))


# -- npz ---------------------------------------------------------------------------------------


def test_npz_gray_with_labels(tmp_path):
    x = np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8)
    np.savez(tmp_path / "digits.npz", x=x, y=np.array([2, 0, 1]))
    samples, skipped, src = read(f"npz:{tmp_path}/digits.npz", channels=1)
    assert src.total == 3 and not skipped
    assert [s.key for s in samples] == ["digits-0000000", "digits-0000001", "digits-0000002"]
    assert [s.label for s in samples] == [2, 0, 1]
    assert np.array_equal(samples[1].images["png"][:, :, 0], x[1])


@pytest.mark.parametrize("channels_in", [1, 3, 4])
def test_npz_colour_compressed_without_labels(tmp_path, channels_in):
    x = np.full((2, 8, 8, channels_in), 90, np.uint8)
    if channels_in == 4:
        x[..., 3] = 0  # fully transparent: composited over white
    np.savez_compressed(tmp_path / "c.npz", x=x)
    samples, _, _ = read(f"npz:{tmp_path}/c.npz")
    assert [s.label for s in samples] == [None, None]
    assert (samples[0].images["png"] == (255 if channels_in == 4 else 90)).all()


def test_npz_fortran_order(tmp_path):
    x = np.asfortranarray(np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8))
    np.savez(tmp_path / "f.npz", x=x)
    samples, _, _ = read(f"npz:{tmp_path}/f.npz", channels=1)
    assert np.array_equal(samples[1].images["png"][:, :, 0], x[1])


def test_npz_bad_inputs(tmp_path):
    np.savez(tmp_path / "float.npz", x=np.zeros((2, 4, 4), np.float32))
    np.savez(tmp_path / "flat.npz", x=np.zeros((2, 16), np.uint8))
    np.savez(tmp_path / "noy.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.zeros(3, np.int64))
    np.savez(tmp_path / "nox.npz", images=np.zeros((2, 4, 4), np.uint8))
    np.savez(tmp_path / "negy.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, -3]))
    np.savez(tmp_path / "bigy.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([10**5, 0]))
    np.savez(tmp_path / "i8y.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, -1], np.int8))
    (tmp_path / "text.npz").write_text("not a zip")
    with zipfile.ZipFile(tmp_path / "raw.npz", "w") as zf:  # a member x, not x.npy
        zf.writestr("x", b"\0" * 32)
    huge = tmp_path / "huge.npz"  # declares 20000x20000 images in a few hundred bytes
    with zipfile.ZipFile(huge, "w") as zf, zf.open("x.npy", "w") as fp:
        header = {"descr": "|u1", "fortran_order": False, "shape": (1, 20000, 20000)}
        np.lib.format.write_array_header_1_0(fp, header)
    cases = {
        "raw.npz": "its member x is not an .npy array",
        "huge.npz": "x holds 20000x20000 images, over data.max_image_pixels (1000000)",
        "float.npz": "x is float32 (2, 4, 4), expected uint8",
        "flat.npz": "x is uint8 (2, 16), expected uint8",
        "noy.npz": "y is int64 (3,), expected 2 integers",
        "negy.npz": "y[1]: label -3 is not a class index 0 <= y < 100,000",
        "bigy.npz": "y[0]: label 100000 is not a class index 0 <= y < 100,000",
        "i8y.npz": "y[1]: label -1 is not a class index",
        "nox.npz": "has no array 'x'; arrays: images",
        "text.npz": "is not an .npz archive",
        "missing.npz": "does not exist",
    }
    for name, expected in cases.items():
        with pytest.raises(GanlibError) as info:
            open_source(cfg(f"npz:{tmp_path / name}", max_image_pixels=1_000_000))
        assert expected in str(info.value), name


# -- builtin -----------------------------------------------------------------------------------


def test_builtin_digits():
    samples, skipped, src = read("builtin:digits", channels=1)
    assert len(samples) == 1797 and not skipped
    assert src.classes == [str(d) for d in range(10)]
    assert {s.label for s in samples} == set(range(10))
    assert samples[17].key == "digits-00017" and samples[17].origin == "builtin:digits#17"
    assert samples[0].images["png"].shape == (8, 8, 1)
    assert samples[0].images["png"].max() > 200  # 0..16 was scaled to 0..255


def test_builtin_photos():
    src = open_source(cfg("builtin:photos", resolution=16))
    assert src.classes is None
    assert 2_000 <= src.total <= 10_000
    first = list(itertools.islice(src, 40))
    again = list(itertools.islice(open_source(cfg("builtin:photos", resolution=16)), 40))
    assert first[0].key == "photos-astronaut-s96-y0-x0"
    assert first[1].key == "photos-astronaut-s96-y0-x48"
    assert [s.key for s in first] == [s.key for s in again]
    assert all(
        np.array_equal(a.images["png"], b.images["png"]) for a, b in zip(first, again, strict=True)
    )
    assert all(s.images["png"].shape == (16, 16, 3) and s.label is None for s in first)


def test_builtin_photos_gray_photos_replicate_to_rgb():
    # "camera" is grayscale: with channels=3 its three channels are equal.
    src = open_source(cfg("builtin:photos"))
    camera = next(s for s in src if s.key.startswith("photos-camera-"))
    arr = camera.images["png"]
    assert arr.shape == (8, 8, 3) and (arr[..., 0] == arr[..., 2]).all()


def test_builtin_photos_full_pass():
    samples, skipped, src = read("builtin:photos", channels=1)
    assert not skipped and len(samples) == src.total
