"""Evaluate generation on tiny real shards: the card, the floor, the sheets, bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from ganlib.artifacts import export_generator
from ganlib.config import EvalConfig, FeaturizeConfig
from ganlib.errors import GanlibError
from ganlib.evaluation import evaluate_generator
from ganlib.featurize import featurize
from ganlib.models import build_gan

EVAL = EvalConfig(num_fake=500, kid_subsets=10, kid_subset_size=50, batch_size=64)


@pytest.fixture(scope="module")
def classifier_dir(digit_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("featurize") / "extractor"
    report = featurize(FeaturizeConfig(classifier_epochs=2), digit_shards, out, seed=0)
    assert report["kind"] == "classifier" and 0 <= report["val_accuracy"] <= 1
    return out


def export_random_generator(directory, *, resolution=32, channels=1, seed=0):
    torch.manual_seed(seed)
    config = {"arch": "dcgan", "z_dim": 16, "resolution": resolution, "channels": channels,
              "width": 8, "num_classes": 0}  # fmt: skip
    G, _ = build_gan(**config)
    state = {"G_ema": G.state_dict(), "model_config": config, "classes": None, "step": 0,
             "identity": "test", "task": "generation", "task_config": {},
             "resolution": resolution, "channels": channels}  # fmt: skip
    return export_generator(state, directory)


def test_evaluate_measures_generator_and_floor_under_one_card(
    classifier_dir, digit_shards, tmp_path
):
    gen = export_random_generator(tmp_path / "generator")
    metrics = evaluate_generator(gen, digit_shards, classifier_dir, EVAL, seed=0, out=tmp_path)
    stats = json.loads((digit_shards / "stats.json").read_text())
    card = metrics["protocol"]
    assert card["num_fake"] == stats["val"]  # clamped to the val split: the floor's size
    assert card["num_real"] == stats["train"] and card["extractor"] == "classifier"
    assert card["reference_split"] == "train" and card["resolution"] == 32
    assert len(metrics["protocol_hash"]) == 16
    # An untrained generator is far from the data; real val images are close to real train.
    assert metrics["fid"] > 3 * metrics["floor"]["fid"] > 0
    assert metrics["floor"]["precision"] > metrics["precision"]
    assert 0 < metrics["floor"]["class_coverage"] <= 1 and metrics["mode_collapse"] in (0.0, 1.0)
    for key in ("kid_mean", "kid_std", "recall", "density", "coverage", "classifier_score"):
        assert key in metrics and key in metrics["floor"]
    # Sheets: 64 samples; one row of 10 per class; 16 (fake, nearest real) pairs.
    assert Image.open(tmp_path / "samples.png").size == ((8 * 34 + 2) * 4,) * 2
    classes = Image.open(tmp_path / "sheets" / "classes.png")
    assert classes.size == ((10 * 34 + 2) * 4, (10 * 34 + 2) * 4)
    assert Image.open(tmp_path / "sheets" / "nearest.png").size == (
        (8 * 34 + 2) * 4,
        (4 * 34 + 2) * 4,
    )
    again = evaluate_generator(gen, digit_shards, classifier_dir, EVAL, seed=0, out=tmp_path)
    assert again == metrics  # deterministic


def test_evaluate_refuses_mismatched_inputs(classifier_dir, digit_shards, tmp_path):
    gen = export_random_generator(tmp_path / "g64", resolution=64, channels=3)
    with pytest.raises(
        GanlibError, match="trained on 3-channel 64px images, the shards hold 1-channel"
    ):
        evaluate_generator(gen, digit_shards, classifier_dir, EVAL, seed=0, out=tmp_path)
    with pytest.raises(GanlibError, match="run the featurize stage"):
        gen = export_random_generator(tmp_path / "g32")
        evaluate_generator(gen, digit_shards, tmp_path / "none", EVAL, seed=0, out=tmp_path)
