"""The featurize stage's library: the extractor kind, and the extractor with its reference."""

from __future__ import annotations

import json

import pytest

from ganlib.config import FeaturizeConfig
from ganlib.errors import GanlibError
from ganlib.featurize import choose_kind, featurize


@pytest.fixture(scope="module")
def classifier_dir(digit_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("featurize") / "extractor"
    report = featurize(FeaturizeConfig(classifier_epochs=2), digit_shards, out, seed=0)
    assert report["kind"] == "classifier" and 0 <= report["val_accuracy"] <= 1
    return out


def test_auto_picks_classifier_for_labels_and_random_for_grey_data():
    def kind(cfg, labelled):
        return choose_kind(cfg, labelled=labelled, channels=1, train_samples=100)[0]

    assert kind(FeaturizeConfig(), labelled=True) == "classifier"
    assert kind(FeaturizeConfig(), labelled=False) == "random"
    with pytest.raises(GanlibError, match="classifier needs labelled data"):
        kind(FeaturizeConfig(kind="classifier"), labelled=False)


def test_featurize_writes_the_extractor_and_reference(classifier_dir, digit_shards):
    meta = json.loads((classifier_dir / "extractor.json").read_text())
    assert meta["kind"] == "classifier" and meta["channels"] == 1 and meta["resolution"] == 32
    stats = json.loads((digit_shards / "stats.json").read_text())
    import numpy as np

    with np.load(classifier_dir / "reference.npz") as ref:
        assert ref["features"].shape == (stats["train"], meta["feature_dim"])
        assert int(ref["num_samples"]) == stats["train"]
