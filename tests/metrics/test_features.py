"""Feature extractors (classifier, random, FID Inception), their saving and loading, reference
statistics, protocol cards and the in-training FID probe, on tiny data."""

import itertools
import json

import numpy as np
import pytest
import torch

from ganlib.data.loader import iter_split
from ganlib.data.records import Sample
from ganlib.data.shards import write_shards
from ganlib.errors import GanlibError
from ganlib.metrics.features import (
    EXTRACTOR_WEIGHTS,
    RANDOM_NOTE,
    REFERENCE,
    ClassifierNet,
    RandomNet,
    check_compatible,
    compute_features,
    compute_outputs,
    file_sha256,
    load_extractor,
    load_inception,
    load_reference,
    protocol_card,
    protocol_hash,
    quantize,
    random_extractor,
    save_extractor,
    save_reference,
    train_classifier,
)
from ganlib.metrics.generation import fid_from_stats, mean_cov
from ganlib.metrics.inception import FIDInceptionV3
from ganlib.metrics.probe import FidProbe
from ganlib.models.dcgan import Generator


def images(n: int, channels: int = 1, resolution: int = 32, seed: int = 0) -> torch.Tensor:
    """n random images in [-1, 1]: [n, C, R, R]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, resolution, resolution, generator=g) * 2 - 1


def train_images(shards, batch_size=64):
    return (b["image"] for b in iter_split(shards, "train", batch_size))


@pytest.fixture(scope="module")
def classifier(digit_shards):
    """A classifier trained for 5 short epochs on the ~230 train digits, and its report."""
    return train_classifier(digit_shards, epochs=5, batch_size=32, lr=3e-3, seed=0)


# -- networks --------------------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "resolution"), [(1, 16), (3, 32), (1, 64), (3, 256)])
def test_networks_take_any_supported_format(channels, resolution):
    x = images(3, channels, resolution)
    feats, logits = ClassifierNet(channels, resolution, num_classes=7)(x)
    assert feats.shape == (3, 128) and logits.shape == (3, 7)
    feats, none = RandomNet(channels, resolution, seed=0)(x)
    assert feats.shape == (3, 256) and none is None


def test_random_extractor_is_fixed_by_its_seed():
    x = images(4)
    a = random_extractor(channels=1, resolution=32, seed=0)
    b = random_extractor(channels=1, resolution=32, seed=0)
    c = random_extractor(channels=1, resolution=32, seed=1)
    assert a.kind == "random" and a.feature_dim == 256 and a.num_classes == 0
    assert torch.equal(a.features(x), b.features(x))
    assert a.weights_sha256 == b.weights_sha256 != c.weights_sha256
    assert a.probs(x) is None
    with pytest.raises(ValueError, match=r"x must be \[N, 1, H, W\]"):
        a.features(images(2, channels=3))
    # The extractor stays in eval mode and out of autograd, whatever its caller does.
    a.train()
    assert not a.net.training and not any(p.requires_grad for p in a.parameters())


def test_quantize_rounds_to_the_levels_of_stored_images():
    x = torch.tensor([-1.5, -1.0, -0.001, 0.5, 1.0, 2.0])
    q = quantize(x)
    assert q.min() == -1.0 and q.max() == 1.0
    levels = (q + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)


# -- classifier ------------------------------------------------------------------------------


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


# -- saving and loading ----------------------------------------------------------------------


def test_saved_extractor_rebuilds_from_data(tmp_path, classifier):
    extractor, report = classifier
    meta = save_extractor(extractor, {"report": report}, tmp_path / "fz")
    loaded, loaded_meta = load_extractor(tmp_path / "fz")
    assert loaded_meta == meta == json.loads((tmp_path / "fz" / "extractor.json").read_text())
    assert meta["kind"] == "classifier" and meta["feature_dim"] == 128
    assert meta["channels"] == 1 and meta["resolution"] == 32
    assert meta["classes"] == extractor.classes and meta["report"] == report
    assert meta["weights_sha256"] == extractor.weights_sha256
    x = images(5)
    f1, p1 = extractor.outputs(x)
    f2, p2 = loaded.outputs(x)
    assert torch.equal(f1, f2) and torch.equal(p1, p2)
    assert torch.allclose(p1.sum(dim=1), torch.ones(5))

    with pytest.raises(ValueError, match="kind"):
        save_extractor(extractor, {"kind": "other"}, tmp_path / "clash")
    # Different weights under the same json are refused.
    other = random_extractor(channels=1, resolution=32, seed=0)
    torch.save(other.net.state_dict(), tmp_path / "fz" / EXTRACTOR_WEIGHTS)
    with pytest.raises(GanlibError, match="weights differ"):
        load_extractor(tmp_path / "fz")
    with pytest.raises(GanlibError, match="run the featurize stage"):
        load_extractor(tmp_path / "nowhere")


def test_check_compatible():
    meta = {"kind": "random", "channels": 1, "resolution": 32}
    check_compatible(meta, channels=1, resolution=32)
    with pytest.raises(GanlibError, match="1-channel 32px images, the data has 3-channel 64px"):
        check_compatible(meta, channels=3, resolution=64)
    inception = {"kind": "inception", "channels": None, "resolution": None}
    check_compatible(inception, channels=3, resolution=64)  # takes any format


# -- FID Inception ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inception_state():
    """A randomly initialised state dict of the FID Inception architecture."""
    torch.manual_seed(0)
    return FIDInceptionV3().state_dict()


def test_inception_loads_a_state_dict_of_its_architecture(tmp_path, inception_state):
    path = tmp_path / "pt_inception.pth"
    torch.save(inception_state, path)
    extractor = load_inception(path)
    assert extractor.kind == "inception" and extractor.feature_dim == 2048
    assert extractor.weights_sha256 == file_sha256(path) and extractor.source == str(path)
    feats, probs = extractor.outputs(images(2, channels=1, resolution=32))  # grey, any size
    assert feats.shape == (2, 2048) and probs.shape == (2, 1008)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2))

    meta = save_extractor(extractor, {}, tmp_path / "fz")
    assert meta["channels"] is None and meta["weights_source"] == str(path)
    path.unlink()  # the saved extractor holds its own copy of the weights
    loaded, _ = load_extractor(tmp_path / "fz")
    assert loaded.weights_sha256 == extractor.weights_sha256
    assert all(torch.equal(v, inception_state[k]) for k, v in loaded.net.state_dict().items())


def test_inception_refuses_other_files(tmp_path, inception_state):
    with pytest.raises(GanlibError, match=r"^featurize.inception_weights: .*x.pth not found"):
        load_inception(tmp_path / "x.pth")

    wrong = dict(inception_state)
    wrong["Conv2d_1a_3x3.conv.weight"] = torch.zeros(32, 1, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    expected = (
        r"wrong.pth does not match the FID Inception-v3 architecture \(Conv2d_1a_3x3.conv.weight:"
        r" expected \[32, 3, 3, 3\], got \[32, 1, 3, 3\]\); use pt_inception-2015-12-05"
    )
    with pytest.raises(GanlibError, match=expected):
        load_inception(tmp_path / "wrong.pth")

    truncated = {k: v for k, v in inception_state.items() if not k.startswith("fc.")}
    torch.save(truncated, tmp_path / "truncated.pth")
    with pytest.raises(GanlibError, match=r"\(fc.weight: missing; and 1 more\)"):
        load_inception(tmp_path / "truncated.pth")

    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(GanlibError, match="holds a list, not a state dict"):
        load_inception(tmp_path / "list.pth")
    (tmp_path / "text.pth").write_text("not weights\n")
    with pytest.raises(GanlibError, match="is not a PyTorch state dict"):
        load_inception(tmp_path / "text.pth")


# -- reference statistics and protocol card -------------------------------------------------


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


# -- in-training probe -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def featurize_dir(tmp_path_factory, digit_shards):
    """A featurize directory: the random extractor and the train split's reference."""
    out = tmp_path_factory.mktemp("featurize")
    extractor = random_extractor(channels=1, resolution=32, seed=0)
    save_extractor(extractor, {}, out)
    save_reference(out / REFERENCE, compute_features(extractor, train_images(digit_shards)))
    return out


@pytest.mark.parametrize("num_classes", [0, 10])
def test_probe_scores_a_generator_on_fixed_noise(featurize_dir, num_classes):
    torch.manual_seed(0)
    G = Generator(z_dim=16, resolution=32, channels=1, width=8, num_classes=num_classes)
    probe = FidProbe(featurize_dir, num_fake=300, seed=0)
    rng = torch.get_rng_state()
    first = probe(G, num_classes)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left alone
    assert G.training  # mode restored
    assert probe(G, num_classes) == first > 0  # same noise, same number

    # The same computation by hand.
    z = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(300) % num_classes if num_classes else None
    with torch.no_grad():
        fake = quantize(G.eval()(z, labels))
    feats = probe.extractor.features(fake).numpy()
    ref = load_reference(featurize_dir / REFERENCE)
    expected = fid_from_stats(ref.mu, ref.sigma, *mean_cov(feats))["fid"]
    assert first == pytest.approx(expected, rel=1e-5)


def test_probe_ranks_real_like_images_above_noise(featurize_dir, digit_shards):
    """A "generator" that replays real digits scores far better than one that emits noise."""

    class Replay(torch.nn.Module):
        def __init__(self, x):
            super().__init__()
            self.config = {"z_dim": 4}
            self.x = x
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, z, labels=None):
            return self.x[: len(z)] * self.scale

    real = torch.cat(list(itertools.islice(train_images(digit_shards), 4)))[:200]
    noise = images(200)
    probe = FidProbe(featurize_dir, num_fake=200)
    assert probe(Replay(real)) < 0.2 * probe(Replay(noise))
