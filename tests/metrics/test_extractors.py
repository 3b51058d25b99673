"""Feature extractors (classifier, random, FID Inception) and their saving and loading."""

import json

import pytest
import torch

from ganlib.artifacts import EXTRACTOR_WEIGHTS, load_extractor, save_extractor
from ganlib.errors import GanlibError
from ganlib.featurize.classifier import train_classifier
from ganlib.metrics.extractors import (
    ClassifierNet,
    RandomNet,
    check_compatible,
    load_inception,
    random_extractor,
)
from ganlib.metrics.inception import FIDInceptionV3, file_sha256


def images(n: int, channels: int = 1, resolution: int = 32, seed: int = 0) -> torch.Tensor:
    """n random images in [-1, 1]: [n, C, R, R]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, resolution, resolution, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def classifier(digit_shards):
    """A classifier trained for 5 short epochs on the ~230 train digits, and its report."""
    return train_classifier(digit_shards, epochs=5, batch_size=32, lr=3e-3, seed=0)


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
