"""Generation's in-training probe: an FID of fixed noise against the train split."""

import itertools

import pytest
import torch

from ganlib.artifacts import save_extractor
from ganlib.data.loader import iter_split
from ganlib.data.pixels import quantize
from ganlib.metrics.extractors import random_extractor
from ganlib.metrics.generation import fid_from_stats, mean_cov
from ganlib.metrics.reference import (
    REFERENCE,
    compute_features,
    load_reference,
    save_reference,
)
from ganlib.models.dcgan import Generator
from ganlib.tasks.generation import FidProbe


def images(n: int, channels: int = 1, resolution: int = 32, seed: int = 0) -> torch.Tensor:
    """n random images in [-1, 1]: [n, C, R, R]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, resolution, resolution, generator=g) * 2 - 1


def train_images(shards, batch_size=64):
    return (b["image"] for b in iter_split(shards, "train", batch_size))


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
            self.config = {"z_dim": 4, "resolution": 32}
            self.x = x
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, z, labels=None):
            return self.x[: len(z)] * self.scale

    real = torch.cat(list(itertools.islice(train_images(digit_shards), 4)))[:200]
    noise = images(200)
    probe = FidProbe(featurize_dir, num_fake=200)
    assert probe(Replay(real)) < 0.2 * probe(Replay(noise))
