"""The inpainting evaluator on tiny RGB shards: the table, the card, the sheets, determinism,
the baselines' rows against the metrics module, and exact valid pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ganlib.artifacts import export_generator, load_generator
from ganlib.config import DataConfig, EvalConfig, FeaturizeConfig, InpaintingConfig
from ganlib.data.loader import iter_split
from ganlib.data.masks import area_bin
from ganlib.data.pixels import quantize
from ganlib.data.shards import write_shards
from ganlib.data.sources import open_source
from ganlib.errors import GanlibError
from ganlib.evaluation.baselines import BASELINES, baseline_batch
from ganlib.evaluation.inpainting import (
    EVAL_AREAS,
    METHODS,
    bin_masks,
    evaluate_inpainter,
    repair,
)
from ganlib.featurize import featurize
from ganlib.metrics.inpainting import image_metrics, inpainting_table
from ganlib.models.unet import UNetGenerator

TASK = InpaintingConfig(eval_images=10)
EVAL = EvalConfig(batch_size=4)  # 10 images in three batches


def export_unet(directory, *, task="inpainting", resolution=64):
    torch.manual_seed(0)
    G = UNetGenerator(in_channels=4, out_channels=3, width=8, resolution=resolution)
    state = {"G_ema": G.state_dict(), "model_config": G.config, "task": task,
             "task_config": {"mask_kind": "mix"}, "resolution": resolution, "channels": 3,
             "classes": None, "step": 7, "identity": "test"}  # fmt: skip
    return export_generator(state, directory)


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    """Shards of 120 smooth random 64px RGB images (about 24 in val), their random-network
    extractor and an untrained U-Net."""
    root = tmp_path_factory.mktemp("inpainting_eval")
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(120, 3, 8, 8, generator=g)
    x = F.interpolate(coarse, size=64, mode="bilinear", align_corners=False)  # [N, 3, 64, 64]
    pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez(root / "smooth.npz", x=pixels)
    cfg = DataConfig(source=f"npz:{root / 'smooth.npz'}", resolution=64, channels=3)
    source = open_source(cfg)
    write_shards(source.items(), root / "shards", shard_size=64, val_fraction=0.2,
                 classes=None, total=source.total, progress=False)  # fmt: skip
    featurize(FeaturizeConfig(kind="random"), root / "shards", root / "featurize", seed=0)
    return {"root": root, "shards": root / "shards", "featurize": root / "featurize",
            "generator": export_unet(root / "generator")}  # fmt: skip


@pytest.fixture(scope="module")
def metrics(rgb):
    return evaluate_inpainter(
        rgb["generator"], rgb["shards"], rgb["featurize"], TASK, EVAL, seed=3,
        out=rgb["root"] / "eval",
    )  # fmt: skip


def _val(rgb, n=TASK.eval_images):
    batch = next(iter_split(rgb["shards"], "val", n))
    return batch["image"], batch["key"]  # [n, 3, 64, 64], n keys


def test_table_holds_every_method_and_bin(metrics):
    table = metrics["table"]
    assert list(table) == list(METHODS) == ["ganlib", "biharmonic", "mean_fill", "pull_push"]
    for rows in table.values():
        assert list(rows) == ["all", *EVAL_AREAS]
        for name, row in rows.items():
            assert set(row) == {"psnr", "ssim", "l1_hole", "fid", "n"}
            assert row["n"] == (60 if name == "all" else 10)
            assert all(np.isfinite(v) for v in row.values())
            assert 0 <= row["l1_hole"] <= 1 and row["fid"] >= 0
    overall = table["ganlib"]["all"]
    assert {k: metrics[k] for k in ("l1_hole", "psnr", "ssim", "fid")} == {
        k: overall[k] for k in ("l1_hole", "psnr", "ssim", "fid")
    }
    assert metrics["promotion"] == {"metric": "l1_hole", "value": overall["l1_hole"]}
    assert metrics["task"] == "inpainting" and metrics["generator_step"] == 7
    json.dumps(metrics, allow_nan=False)  # valid JSON: no NaN or inf
    # On smooth images the smooth fills beat the mean, which beats nothing in a large hole.
    assert table["biharmonic"]["50-100"]["l1_hole"] < table["mean_fill"]["50-100"]["l1_hole"]


def test_protocol_card_holds_the_mask_protocol(metrics):
    card = metrics["protocol"]
    assert card["reference_split"] == "val" and card["extractor"] == "random"
    assert (card["num_real"], card["num_fake"]) == (10, 60)
    assert card["masks"] == {
        "kind": "mix",
        "bins": {label: list(area) for label, area in EVAL_AREAS.items()},
        "key": "{sample key}/{bin label}",
        "seed": 3,
        "eval_images": 10,
        "quantized": True,
    }
    assert len(metrics["protocol_hash"]) == 16


def test_sheets(metrics, rgb):
    out = rgb["root"] / "eval"
    # 10 rows (the first 10 images, each at bin i mod 6) of 4 columns, 64px tiles scaled 2x.
    assert Image.open(out / "sheets" / "inpainting.png").size == (
        (4 * 66 + 2) * 2,
        (10 * 66 + 2) * 2,
    )
    assert Image.open(out / "samples.png").size == ((8 * 66 + 2) * 2, (2 * 66 + 2) * 2)


def test_evaluation_is_deterministic(metrics, rgb, tmp_path):
    again = evaluate_inpainter(
        rgb["generator"], rgb["shards"], rgb["featurize"], TASK, EVAL, seed=3, out=tmp_path
    )
    assert again == metrics
    _, keys = _val(rgb)
    first = bin_masks(keys, (64, 64), kind="mix", seed=3)
    second = bin_masks(keys, (64, 64), kind="mix", seed=3)
    other = bin_masks(keys, (64, 64), kind="mix", seed=4)
    for label, mask in first.items():
        assert torch.equal(mask, second[label]) and not torch.equal(mask, other[label])
        # Each mask lands in its own bin, and within its drawing range.
        lo, hi = EVAL_AREAS[label]
        for m in mask:
            fraction = float(m.mean())
            assert area_bin(fraction) == label and lo <= fraction < hi


def test_baseline_rows_equal_the_metrics_module(metrics, rgb):
    real, keys = _val(rgb)
    masks = bin_masks(keys, (64, 64), kind="mix", seed=3)
    results = {}
    for name in BASELINES:
        per_bin = [
            image_metrics(quantize(baseline_batch(name, real, m)), real, m, value_range=(-1, 1))
            for m in masks.values()
        ]
        results[name] = {k: torch.cat([b[k] for b in per_bin]) for k in per_bin[0]}
    expected = inpainting_table(results)
    for name in BASELINES:
        for label, row in expected[name].items():
            got = metrics["table"][name][label]
            assert got["n"] == row["n"]
            for k in ("psnr", "ssim", "l1_hole"):
                assert got[k] == pytest.approx(row[k], rel=1e-6), (name, label, k)


def test_every_method_keeps_the_valid_pixels_exactly(rgb):
    G, _ = load_generator(rgb["generator"])
    real, keys = _val(rgb, 4)
    mask = bin_masks(keys, (64, 64), kind="mix", seed=0)["40-50"]
    valid = (mask == 0).expand_as(real)
    for method in METHODS:
        fake = repair(method, G, real, mask)
        assert torch.equal(fake[valid], real[valid]), method
        assert not torch.equal(fake, real), method  # the hole was filled with something else


def test_refuses_other_tasks_and_formats(rgb, tmp_path):
    args = (rgb["shards"], rgb["featurize"], TASK, EVAL)
    translation = export_unet(tmp_path / "t", task="translation")
    with pytest.raises(GanlibError, match="a translation generator, not an inpainting one"):
        evaluate_inpainter(translation, *args, seed=0, out=tmp_path)
    small = export_unet(tmp_path / "s", resolution=32)
    with pytest.raises(GanlibError, match="trained on 3-channel 32px images, the shards hold"):
        evaluate_inpainter(small, *args, seed=0, out=tmp_path)
