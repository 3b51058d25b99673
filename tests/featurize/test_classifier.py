"""The classifier extractor: it learns, reports, is deterministic, and refuses what it
cannot train on."""

import numpy as np
import pytest
import torch

from ganlib.data.records import Sample
from ganlib.data.shards import write_shards
from ganlib.errors import GanlibError
from ganlib.featurize.classifier import train_classifier


@pytest.fixture(scope="module")
def classifier(digit_shards):
    """A classifier trained for 5 short epochs on the ~230 train digits, and its report."""
    return train_classifier(digit_shards, epochs=5, batch_size=32, lr=3e-3, seed=0)


def test_classifier_learns_and_reports(classifier):
    extractor, report = classifier
    assert extractor.kind == "classifier" and extractor.num_classes == 10
    assert extractor.classes == [str(i) for i in range(10)]
    assert extractor.config == {"channels": 1, "resolution": 32, "num_classes": 10}
    assert report["train_accuracy"] > 0.5  # chance is 0.1
    assert 0.0 <= report["val_accuracy"] <= 1.0
    assert report["train_samples"] + report["val_samples"] == 256
    assert report["epochs"] == 5


def test_classifier_training_is_deterministic(digit_shards):
    rng = torch.get_rng_state()
    runs = [
        train_classifier(digit_shards, epochs=1, batch_size=32, lr=3e-3, seed=seed)[0]
        for seed in (0, 0, 1)
    ]
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left alone
    assert runs[0].weights_sha256 == runs[1].weights_sha256 != runs[2].weights_sha256


def test_classifier_needs_labels(tmp_path):
    rng = np.random.default_rng(0)
    samples = (
        Sample(f"u{i:03d}", {"png": rng.integers(0, 256, (16, 16, 1), dtype=np.uint8)}, None, "")
        for i in range(40)
    )
    root = tmp_path / "unlabelled"
    write_shards(samples, root, shard_size=20, val_fraction=0.2, classes=None, progress=False)
    with pytest.raises(GanlibError, match="classifier needs labelled data; the shards have none"):
        train_classifier(root, epochs=1, batch_size=8, lr=1e-3, seed=0)


def test_classifier_batch_larger_than_the_data_is_refused(digit_shards):
    with pytest.raises(GanlibError, match="featurize.batch_size"):
        train_classifier(digit_shards, epochs=1, batch_size=10_000, lr=1e-3, seed=0)
