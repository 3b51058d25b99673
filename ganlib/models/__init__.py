"""Generator and discriminator families, picked by name, rebuilt from their saved config.

Every model keeps its constructor arguments, plus ``"arch"``, as plain data in ``.config``
(:class:`~ganlib.models.base.SavedConfig`); a checkpoint stores that dict next to the state
dict and rebuilds the model with :func:`build_generator` / :func:`build_discriminator`,
without pickled code.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ganlib.models import dcgan, r3gan, resnet
from ganlib.models.base import without_arch
from ganlib.models.cyclegan import CycleGenerators, ResnetGenerator
from ganlib.models.patchgan import PatchDiscriminator
from ganlib.models.unet import UNetGenerator

# Noise-to-image families (task: generation), as (G, D) pairs.
ARCHITECTURES = {
    "dcgan": (dcgan.Generator, dcgan.Discriminator),
    "resnet": (resnet.Generator, resnet.Discriminator),
    "r3gan": (r3gan.R3Generator, r3gan.R3Discriminator),
}
SUPPORTED_RESOLUTIONS = {
    "dcgan": dcgan.RESOLUTIONS,
    "resnet": resnet.RESOLUTIONS,
    "r3gan": r3gan.RESOLUTIONS,
}


# Image-to-image networks (inpainting, translation), rebuilt from their config by arch name.
IMAGE_MODELS: dict[str, type[nn.Module]] = {
    m.arch: m for m in (UNetGenerator, CycleGenerators, ResnetGenerator, PatchDiscriminator)
}


def _classes(arch: str) -> tuple[type[nn.Module], type[nn.Module]]:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def build_gan(arch: str, **config: Any) -> tuple[nn.Module, nn.Module]:
    """Build a fresh ``(G, D)`` pair of the named family from G's config without ``arch``
    (``z_dim``, ``resolution``, ``channels``, ``num_classes`` and the family's own keys:
    ``width`` for dcgan and resnet, ``widths``/``blocks``/... for r3gan). G is built first."""
    full = {"arch": arch, **config}
    return build_generator(full), build_discriminator(full)


def build_generator(config: dict[str, Any]) -> nn.Module:
    """Rebuild a generator (any task's) from its ``.config``; load its state dict afterwards."""
    arch, kwargs = config["arch"], without_arch(config)
    if arch in IMAGE_MODELS:
        return IMAGE_MODELS[arch](**kwargs)
    return _classes(arch)[0](**kwargs)


def build_discriminator(config: dict[str, Any]) -> nn.Module:
    """Rebuild a discriminator from its ``.config``, or from G's.

    G's config differs only by ``z_dim``, which D does not use, so one saved dict can rebuild
    both models; any other unknown key is still refused (TypeError).
    """
    arch, kwargs = config["arch"], without_arch(config)
    if arch in IMAGE_MODELS:
        return IMAGE_MODELS[arch](**kwargs)
    kwargs.pop("z_dim", None)
    return _classes(arch)[1](**kwargs)
