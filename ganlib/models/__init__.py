"""Generator and discriminator families, picked by name, rebuilt from their saved config.

Every model keeps its constructor arguments, plus ``"arch"``, as plain data in ``.config``;
a checkpoint stores that dict next to the state dict and rebuilds the model with
:func:`build_generator` / :func:`build_discriminator`, without pickled code.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ganlib.models import dcgan, resnet

ARCHITECTURES = {
    "dcgan": (dcgan.Generator, dcgan.Discriminator),
    "resnet": (resnet.Generator, resnet.Discriminator),
}
SUPPORTED_RESOLUTIONS = {
    "dcgan": dcgan.RESOLUTIONS,
    "resnet": resnet.RESOLUTIONS,
}


def _classes(arch: str) -> tuple[type[nn.Module], type[nn.Module]]:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def build_gan(
    arch: str, *, z_dim: int, resolution: int, channels: int, width: int, num_classes: int
) -> tuple[nn.Module, nn.Module]:
    """Build a fresh ``(G, D)`` pair of the named family."""
    generator, discriminator = _classes(arch)
    G = generator(
        z_dim=z_dim,
        resolution=resolution,
        channels=channels,
        width=width,
        num_classes=num_classes,
    )
    D = discriminator(
        resolution=resolution, channels=channels, width=width, num_classes=num_classes
    )
    return G, D


def build_generator(config: dict[str, Any]) -> nn.Module:
    """Rebuild a generator from its ``.config``; load its state dict afterwards."""
    kwargs = dict(config)
    return _classes(kwargs.pop("arch"))[0](**kwargs)


def build_discriminator(config: dict[str, Any]) -> nn.Module:
    """Rebuild a discriminator from its ``.config``, or from G's.

    G's config differs only by ``z_dim``, which D does not use, so one saved dict can rebuild
    both models; any other unknown key is still refused (TypeError).
    """
    kwargs = dict(config)
    kwargs.pop("z_dim", None)
    return _classes(kwargs.pop("arch"))[1](**kwargs)
