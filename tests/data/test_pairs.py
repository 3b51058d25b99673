"""Translation data: A/B pairing by name, independent domains, parquet pairs, the photos2art
demo and its hidden ground truth, and the bad inputs of issue 6."""

import io
import itertools
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from ganlib.config import ConfigError, DataConfig
from ganlib.data.loader import ShardLoader, iter_split
from ganlib.data.records import Sample, Skipped
from ganlib.data.shards import read_manifest, write_shards
from ganlib.data.sources import open_source
from ganlib.data.styles import cartoon
from ganlib.errors import GanlibError


def cfg(source: str, **kwargs) -> DataConfig:
    return DataConfig(source=source, **{"resolution": 16, "channels": 3, **kwargs})


def read(source: str, **kwargs) -> tuple[list[Sample], dict[str, str]]:
    """Samples, and the skipped inputs as {path relative to the source: reason}."""
    src = open_source(cfg(source, **kwargs))
    items = list(src)
    assert src.total == len(items)
    root = source.partition(":")[2]
    skipped = {os.path.relpath(s.path, root): s.reason for s in items if isinstance(s, Skipped)}
    return [s for s in items if isinstance(s, Sample)], skipped


def png(color, size=(12, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# -- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "builtin:photos", "paired": True}, "data.paired: applies to imagefolder"),
        ({"source": "npz:x.npz", "unpaired": True}, "data.unpaired: applies to imagefolder"),
        ({"source": "imagefolder:x", "paired": True, "unpaired": True}, "pick one"),
        ({"source": "imagefolder:x", "image_column_b": "b"}, "applies to parquet sources only"),
        ({"source": "parquet:x", "image_column_b": "image"}, "must differ from data.image_col"),
        ({"source": "builtin:photos2"}, "unknown builtin 'photos2'"),
    ],
)
def test_translation_data_settings_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**kwargs)


# -- imagefolder: pairs matched by name, or independent domains ---------------------------------


def test_paired_folders_use_the_matched_names_and_report_the_rest(tmp_path):
    for name in ("x1.png", "x2.jpg", "only_a.png", "sub/x3.png", "sub/y.png"):
        write(tmp_path / "A" / name, png((200, 0, 0)))
    for name in ("x1.png", "x2.png", "only_b.png", "sub/x3.webp", "sub/z.png"):
        write(tmp_path / "B" / name, png((0, 0, 200)))
    samples, skipped = read(f"imagefolder:{tmp_path}", paired=True)
    # Matched on the path inside A and B without the extension, in sorted order.
    assert [s.key for s in samples] == ["sub-x3", "x1", "x2"]
    assert all(set(s.images) == {"a.png", "b.png"} for s in samples)
    assert skipped == {
        "A/only_a.png": "no partner in B",
        "B/only_b.png": "no partner in A",
        "A/sub/y.png": "no partner in B",
        "B/sub/z.png": "no partner in A",
    }


def test_unpaired_folders_keep_every_image_of_both_domains(tmp_path):
    for i in range(5):
        write(tmp_path / "A" / f"{i}.png", png((10 * i, 0, 0)))
    for name in ("p.png", "q.jpg"):
        write(tmp_path / "B" / name, png((0, 0, 200)))
    write(tmp_path / "B" / "broken.png", b"not a png")
    write(tmp_path / "notes.txt", b"x")
    samples, skipped = read(f"imagefolder:{tmp_path}", unpaired=True)
    assert [s.key for s in samples] == ["A-0", "A-1", "A-2", "A-3", "A-4", "B-p", "B-q"]
    assert [list(s.images) for s in samples] == [["a.png"]] * 5 + [["b.png"]] * 2
    assert skipped == {
        "notes.txt": "not in A or B (data.unpaired is true)",
        "B/broken.png": "not an image: cannot identify image file",
    }


@pytest.mark.parametrize("flag", ["paired", "unpaired"])
def test_an_empty_domain_folder_is_a_one_line_error(tmp_path, flag):
    write(tmp_path / "A" / "1.png", png((1, 2, 3)))
    write(tmp_path / "B" / "readme.txt", b"no images here")
    with pytest.raises(GanlibError) as info:
        open_source(cfg(f"imagefolder:{tmp_path}", **{flag: True}))
    assert str(info.value) == (
        f"data.source: imagefolder domain folder '{tmp_path}/B' holds no images "
        f"(data.{flag} is true)"
    )


def test_images_of_mixed_sizes_are_cropped_and_resized_one_by_one(tmp_path):
    write(tmp_path / "A" / "1.png", png((255, 0, 0), size=(40, 24)))
    write(tmp_path / "B" / "1.png", png((0, 255, 0), size=(9, 13)))
    (sample,), _ = read(f"imagefolder:{tmp_path}", paired=True)
    assert sample.images["a.png"].shape == sample.images["b.png"].shape == (16, 16, 3)


# -- parquet: two image columns ---------------------------------------------------------------


def test_parquet_pairs_come_from_two_image_columns(tmp_path):
    path = tmp_path / "pairs.parquet"
    table = pa.table(
        {
            "input": [{"bytes": png((9, 0, 0)), "path": "0.png"}, {"bytes": png((8, 0, 0))}] * 2,
            "target": [png((0, 9, 0)), None, b"junk", png((0, 7, 0))],
        }
    )
    pq.write_table(table, path)
    samples, skipped = read(f"parquet:{path}", image_column="input", image_column_b="target")
    assert [s.key for s in samples] == ["pairs-00000000", "pairs-00000003"]
    assert (samples[1].images["b.png"] == (0, 7, 0)).all()
    assert list(skipped.values()) == [
        "target: no image bytes (null)",
        "target: not an image: cannot identify image file",
    ]
    with pytest.raises(GanlibError, match="data.image_column_b: no column 'b' in .* input, target"):
        open_source(cfg(f"parquet:{path}", image_column="input", image_column_b="b"))


# -- builtin:photos2art: the demo and its hidden ground truth --------------------------------


def test_the_style_is_deterministic_and_changes_the_image():
    photo = next(iter(open_source(cfg("builtin:photos", resolution=32)))).images["png"]
    art = cartoon(photo)
    assert art.dtype == np.uint8 and art.shape == photo.shape
    assert (cartoon(photo) == art).all()
    assert np.abs(art.astype(int) - photo).mean() > 10
    gray = cartoon(photo[:, :, :1])
    assert gray.shape == (32, 32, 1)


def test_photos2art_pairs_each_photo_patch_with_its_rendering():
    first = list(itertools.islice(open_source(cfg("builtin:photos2art")), 3))
    photos = list(itertools.islice(open_source(cfg("builtin:photos")), 3))
    assert first[0].key == "photos2art-astronaut-s96-y0-x0"
    assert first[0].origin == "builtin:photos2art#astronaut/s96/y0/x0"
    for pair, photo in zip(first, photos, strict=True):
        assert (pair.images["a.png"] == photo.images["png"]).all()
        assert (pair.images["b.png"] == cartoon(photo.images["png"])).all()
    again = list(itertools.islice(open_source(cfg("builtin:photos2art")), 3))
    for x, y in zip(first, again, strict=True):
        assert x.key == y.key and (x.images["b.png"] == y.images["b.png"]).all()


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory):
    """The first 120 pairs of builtin:photos2art at 16 pixels, as shards."""
    source = open_source(cfg("builtin:photos2art"))
    root = tmp_path_factory.mktemp("demo") / "shards"
    write_shards(
        itertools.islice(source, 120),
        root,
        shard_size=50,
        val_fraction=0.2,
        classes=None,
        progress=False,
    )
    return root


def test_the_unpaired_demo_trains_without_pairs_and_keeps_the_ground_truth(demo_shards):
    args = {"batch_size": 8, "rank": 0, "world_size": 1, "num_workers": 0, "seed": 0}
    seen = 0
    for epoch in range(3):
        loader = ShardLoader(demo_shards, **args, unpaired=True)
        loader.set_epoch(epoch)
        for batch in loader:
            # A B image is never its A image's rendering, except by chance.
            seen += sum(a != b for a, b in zip(batch["key"], batch["key_b"], strict=True))
            assert not torch.equal(batch["a"], batch["b"])
    assert seen >= 3 * len(loader) * 8 - 3
    # Evaluation reads the val split as stored: every pair is (photo, its rendering).
    manifest = read_manifest(demo_shards).to_pydict()
    n_val = manifest["split"].count("val")
    for batch in iter_split(demo_shards, "val", batch_size=64):
        for a, b in zip(batch["a"], batch["b"], strict=True):
            photo = ((a.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
            art = ((b.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
            assert (cartoon(photo) == art).all()
            n_val -= 1
    assert n_val == 0
