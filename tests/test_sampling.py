"""Sampling by seed: one image per seed, the same bytes whatever the batch or its position."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganlib.artifacts import export_generator, load_generator
from ganlib.errors import GanlibError
from ganlib.models import build_gan
from ganlib.sampling import generate


def tiny_generator(arch="dcgan", channels=1, num_classes=0) -> torch.nn.Module:
    """A 32x32 generator with random N(0, 0.2) weights: varied images, classes that matter."""
    torch.manual_seed(0)
    G, _ = build_gan(
        arch, z_dim=8, resolution=32, channels=channels, width=4, num_classes=num_classes
    )
    with torch.no_grad():
        for p in G.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return G


def export_tiny(directory, channels=1, num_classes=0):
    """:func:`tiny_generator` exported as ``models/generator`` is; returns the directory."""
    G = tiny_generator(channels=channels, num_classes=num_classes)
    state = {"G_ema": G.state_dict(), "model_config": G.config, "step": 3, "identity": "tiny",
             "classes": [f"c{i}" for i in range(num_classes)] or None, "task": "generation",
             "task_config": {}, "resolution": 32, "channels": channels}  # fmt: skip
    return export_generator(state, directory)


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_an_image_depends_only_on_its_seed(arch):
    # G's floats for a batch of 7 differ from a batch of 1's (by ~1e-7 here), enough to flip
    # the rounding of a pixel now and then: this holds because G sees one z at a time.
    G = tiny_generator(arch, channels=3)
    alone = generate(G, G.config, [5])
    batch = generate(G, G.config, range(7))
    assert np.array_equal(alone[0], batch[5])
    assert np.array_equal(generate(G, G.config, [9, 5, 3])[1], batch[5])
    assert np.array_equal(generate(G, G.config, range(7)), batch)  # repeatable
    assert not np.array_equal(batch[0], batch[1])


@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_and_range(channels):
    G = tiny_generator(channels=channels)
    images = generate(G, G.config, [0, 1, 2])
    assert images.shape == (3, 32, 32, channels) and images.dtype == np.uint8
    assert images.std() > 10  # not a constant grey
    assert generate(G, G.config, []).shape == (0, 32, 32, channels)


def test_matches_G_on_the_seeded_noise_and_restores_train_mode():
    G = tiny_generator().train()
    images = generate(G, G.config, [3])
    assert G.training
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = ((G.eval()(z) + 1) * 127.5).round().to(torch.uint8)  # [1, 1, 32, 32]
    assert np.array_equal(images, expected.permute(0, 2, 3, 1).numpy())


def test_conditional_labels_default_to_seed_mod_k_and_are_checked():
    G = tiny_generator(num_classes=3)
    seeds = [0, 1, 2, 3, 4]
    assert np.array_equal(
        generate(G, G.config, seeds), generate(G, G.config, seeds, [0, 1, 2, 0, 1])
    )
    all_two = generate(G, G.config, seeds, [2] * 5)
    assert np.array_equal(all_two[2], generate(G, G.config, [2])[0])
    assert not np.array_equal(all_two[0], generate(G, G.config, [0])[0])
    with pytest.raises(GanlibError, match=r"label: 3 is not a class of this generator \(0..2\)"):
        generate(G, G.config, [0, 1], [0, 3])
    with pytest.raises(GanlibError, match="1 labels for 2 seeds"):
        generate(G, G.config, [0, 1], [0])


def test_unconditional_generator_refuses_labels():
    G = tiny_generator()
    with pytest.raises(GanlibError, match="unconditional"):
        generate(G, G.config, [0], [0])


def test_exported_generator_loads_and_samples_the_same(tmp_path):
    G2, meta = load_generator(export_tiny(tmp_path / "gen", num_classes=2))
    assert meta["classes"] == ["c0", "c1"] and not G2.training
    G = tiny_generator(num_classes=2)
    assert np.array_equal(generate(G2, meta["model_config"], [4]), generate(G, G.config, [4]))
    with pytest.raises(GanlibError, match="not an exported generator"):
        load_generator(tmp_path)
