"""Reference statistics and the protocol card."""

import numpy as np
import pytest

from ganlib.artifacts import save_extractor
from ganlib.data.loader import iter_split
from ganlib.errors import GanlibError
from ganlib.featurize.classifier import train_classifier
from ganlib.metrics.extractors import random_extractor
from ganlib.metrics.generation import mean_cov
from ganlib.metrics.protocol import RANDOM_NOTE, protocol_card, protocol_hash
from ganlib.metrics.reference import (
    REFERENCE,
    compute_features,
    compute_outputs,
    load_reference,
    save_reference,
)


def train_images(shards, batch_size=64):
    return (b["image"] for b in iter_split(shards, "train", batch_size))


@pytest.fixture(scope="module")
def classifier(digit_shards):
    """A classifier trained for 5 short epochs on the ~230 train digits, and its report."""
    return train_classifier(digit_shards, epochs=5, batch_size=32, lr=3e-3, seed=0)


def test_reference_statistics_round_trip(tmp_path, digit_shards, classifier):
    extractor, _ = classifier
    feats, probs = compute_outputs(extractor, train_images(digit_shards))
    n = len(feats)
    assert feats.shape == (n, 128) and probs.shape == (n, 10)
    assert np.array_equal(compute_features(extractor, train_images(digit_shards, 7)), feats)

    ref = save_reference(tmp_path / "a" / REFERENCE, feats, probs, max_samples=100, seed=0)
    save_reference(tmp_path / "b" / REFERENCE, feats, probs, max_samples=100, seed=0)
    data = (tmp_path / "a" / REFERENCE).read_bytes()
    assert data == (tmp_path / "b" / REFERENCE).read_bytes()  # byte-identical: DVC-friendly

    loaded = load_reference(tmp_path / "a" / REFERENCE)
    assert loaded.num_samples == n and loaded.features.shape == (100, 128)
    assert loaded.probs.shape == (100, 10)
    # mu and sigma describe all N; the stored subset is a row subset of the features
    mu, sigma = mean_cov(feats)
    assert np.allclose(loaded.mu, mu) and np.allclose(loaded.sigma, sigma)
    rows = {r.tobytes() for r in feats}
    assert all(r.tobytes() in rows for r in loaded.features)
    assert np.array_equal(loaded.features, ref.features)
    with pytest.raises(GanlibError, match="run the featurize stage"):
        load_reference(tmp_path / "missing.npz")


def test_protocol_card_and_hash(tmp_path):
    meta = save_extractor(random_extractor(channels=1, resolution=32, seed=0), {}, tmp_path)
    args = dict(split="val", num_real=180, num_fake=1000, resolution=32, channels=1, seed=0)
    card = protocol_card(meta, **args)
    assert card == {
        "extractor": "random",
        "weights_sha256": meta["weights_sha256"],
        "feature_dim": 256,
        "reference_split": "val",
        "num_real": 180,
        "num_fake": 1000,
        "resolution": 32,
        "channels": 1,
        "seed": 0,
        "note": RANDOM_NOTE,
    }
    h = protocol_hash(card)
    assert len(h) == 16 and int(h, 16) >= 0
    assert protocol_hash(dict(reversed(card.items()))) == h  # key order does not matter
    assert protocol_hash(protocol_card(meta, **{**args, "num_fake": 999})) != h
    classifier_meta = {**meta, "kind": "classifier", "feature_dim": 128}
    assert "note" not in protocol_card(classifier_meta, **args)


def test_streaming_reference_keeps_the_same_subset_and_statistics(tmp_path, digit_shards):
    """featurize's streaming reference (running sums, only the kept features) stores what the
    all-in-memory one does: the same seeded rows, the same mean and covariance of all N."""
    from ganlib.data.loader import iter_split
    from ganlib.metrics.extractors import random_extractor
    from ganlib.metrics.reference import compute_outputs, reference_from_batches, save_reference

    extractor = random_extractor(channels=1, resolution=32, seed=0)

    def batches():
        return (b["image"] for b in iter_split(digit_shards, "train", 50))

    features, probs = compute_outputs(extractor, batches())
    whole = save_reference(tmp_path / "a.npz", features, probs, max_samples=100, seed=3)
    streamed = reference_from_batches(
        extractor, batches(), len(features), tmp_path / "b.npz", max_samples=100, seed=3
    )
    assert streamed.num_samples == whole.num_samples == len(features) > 100
    np.testing.assert_array_equal(streamed.features, whole.features)
    np.testing.assert_allclose(streamed.mu, whole.mu, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(streamed.sigma, whole.sigma, rtol=1e-8, atol=1e-10)
