"""Feature extractors for the generation metrics, reference statistics and the protocol card.

Three kinds of :class:`Extractor`, one interface (``features``, ``probs``, ``outputs``):

- ``inception``: the standard FID Inception-v3 (:mod:`ganlib.metrics.inception`) with the
  weights file the user supplies (``pt_inception-2015-12-05-6726825d.pth``); never downloaded.
  The only kind whose numbers compare with published FIDs.
- ``classifier``: a small CNN trained on the labelled train split (:func:`train_classifier`);
  its penultimate layer gives the features, its softmax the class probabilities that the
  classifier score and class coverage need.
- ``random``: a fixed-seed, untrained conv net (:func:`random_extractor`), for unlabelled data
  without Inception weights. Random features do separate real from generated images, but the
  numbers mean something only under the exact same network: the protocol card says so.

An extractor is saved as data (:func:`save_extractor`): ``extractor.pt``, a state dict, and
``extractor.json``, the kind, the constructor arguments that rebuild the network, and the
weights' hashes; :func:`load_extractor` never runs pickled code. Every number computed with an
extractor goes out with its :func:`protocol_card`; numbers with different cards (different
:func:`protocol_hash`) are never compared.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlib.data.loader import ShardLoader, iter_split
from ganlib.data.shards import manifest_metadata, read_manifest
from ganlib.errors import GanlibError
from ganlib.metrics.generation import mean_cov
from ganlib.metrics.inception import FIDInceptionV3

EXTRACTOR_WEIGHTS = "extractor.pt"
EXTRACTOR_META = "extractor.json"
REFERENCE = "reference.npz"  # the conventional name of the reference statistics file
FORMAT_VERSION = 1
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
RANDOM_NOTE = "random-network features: numbers are comparable only under this exact card"


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


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
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


def quantize(x: Tensor) -> Tensor:
    """Round images in [-1, 1] to the 256 levels that stored (PNG) images have.

    Real images reach the extractor as decoded 8-bit PNGs; generated ones should be rounded
    the same way before their features are taken, as StyleGAN's metrics do, so that the two
    differ by content only, not by quantisation.
    """
    return ((x + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1


# -- the three kinds -------------------------------------------------------------------------


def random_extractor(*, channels: int, resolution: int, seed: int) -> Extractor:
    """The ``random`` extractor: :class:`RandomNet` initialised from ``seed``, no training."""
    config = {"channels": channels, "resolution": resolution, "seed": seed}
    return Extractor("random", RandomNet(**config), config)


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
    net = FIDInceptionV3()
    problem = _state_mismatch(net.state_dict(), state)
    if problem:
        raise GanlibError(
            f"{key}: {path} does not match the FID Inception-v3 architecture ({problem}); "
            f"use {INCEPTION_FILE}"
        )
    net.load_state_dict(state, strict=True)
    return Extractor("inception", net, {}, weights_sha256=file_sha256(path), source=str(path))


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


def train_classifier(
    shard_root: str | Path,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | torch.device = "cpu",
) -> tuple[Extractor, dict[str, Any]]:
    """Train the ``classifier`` extractor on the labelled train split of ``shard_root``.

    Adam with a cosine learning-rate decay to zero over ``epochs`` epochs of
    :class:`ShardLoader` batches (rank 0 of 1, shuffled from ``seed``), then BatchNorm
    statistics recomputed over the train split. The weights are initialised from ``seed``
    without touching the global RNG, so a seed gives the same weights on the same machine.
    Returns the extractor and a report: accuracy on the train and val splits (val is None
    when the val split is empty), sample counts, settings, time.
    """
    shard_root = Path(shard_root)
    table = read_manifest(shard_root, columns=["split", "label"])
    classes = manifest_metadata(table)["classes"]
    labels = {
        split: table.filter(pc.equal(table["split"], split))["label"] for split in ("train", "val")
    }
    train_labels = labels["train"].drop_null()
    if len(train_labels) == 0:
        raise GanlibError(
            "featurize.kind: classifier needs labelled data; the shards have none; "
            "use random or inception"
        )
    if len(labels["train"]) < batch_size:
        raise GanlibError(
            f"featurize.batch_size: {batch_size} exceeds the {len(labels['train'])} train "
            "samples; lower it"
        )
    num_classes = len(classes) if classes else int(pc.max(train_labels).as_py()) + 1
    if num_classes < 2:
        raise GanlibError(
            "featurize.kind: classifier needs at least 2 classes, the shards have 1; "
            "use random or inception"
        )
    image = next(iter_split(shard_root, "train", 1))["image"]  # [1, C, R, R]
    channels, resolution = image.shape[1], image.shape[2]
    config = {"channels": channels, "resolution": resolution, "num_classes": num_classes}

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ClassifierNet(**config).to(device)
    loader = ShardLoader(
        shard_root, batch_size=batch_size, rank=0, world_size=1, num_workers=0, seed=seed
    )
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    t0 = time.perf_counter()
    net.train()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            x, y = batch["image"].to(device), batch["label"].to(device)  # [B, C, R, R], [B]
            if (y >= 0).any():  # unlabelled samples (label -1) are ignored
                loss = F.cross_entropy(net(x)[1], y, ignore_index=-1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
    _recompute_batchnorm(net, shard_root, batch_size, device)
    train_s = time.perf_counter() - t0

    extractor = Extractor("classifier", net, config, classes=classes)
    report = {
        "train_accuracy": _accuracy(extractor, shard_root, "train"),
        "val_accuracy": _accuracy(extractor, shard_root, "val") if len(labels["val"]) else None,
        "train_samples": len(labels["train"]),
        "val_samples": len(labels["val"]),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "train_s": round(train_s, 2),
    }
    return extractor, report


@torch.no_grad()
def _recompute_batchnorm(net: nn.Module, shard_root: Path, batch_size: int, device) -> None:
    """Replace BatchNorm's running statistics by their average over the train split.

    The running averages (momentum 0.1) lag behind the weights and need many steps to
    settle: after 35 steps on 230 digits, eval-mode accuracy was 0.48 with them and 0.96
    with recomputed ones. One forward pass over the data fixes that for any training length.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    net.train()
    for batch in iter_split(shard_root, "train", batch_size):
        net(batch["image"].to(device))
    for m in norms:
        m.momentum = 0.1  # BatchNorm2d's default, as a rebuilt network has
    net.eval()


def _accuracy(extractor: Extractor, shard_root: Path, split: str) -> float | None:
    """Top-1 accuracy on the labelled samples of ``split`` (None if it has none)."""
    correct = total = 0
    for batch in iter_split(shard_root, split, BATCH_SIZES["classifier"]):
        y = batch["label"]  # [B]
        pred = extractor.probs(batch["image"]).argmax(dim=1).cpu()  # [B]
        known = y >= 0
        correct += int((pred[known] == y[known]).sum())
        total += int(known.sum())
    return round(correct / total, 4) if total else None


# -- saving and loading ----------------------------------------------------------------------


def save_extractor(extractor: Extractor, meta: Mapping[str, Any], directory: Path) -> dict:
    """Write ``extractor.pt`` (the state dict) and ``extractor.json``; return the json's dict.

    ``meta`` adds fields of the caller's (e.g. ``{"report": ...}`` from
    :func:`train_classifier`); it may not override the fields written here.

    Inception weights are copied into ``extractor.pt`` like the others', rather than pointed
    to by path: the directory is then self-contained (a DVC out that another machine or a Ray
    worker can pull), and DVC's content-addressed cache stores the 91 MiB file once.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = extractor.net.state_dict()
    info = {
        "format": FORMAT_VERSION,
        "kind": extractor.kind,
        "config": extractor.config,
        "weights_sha256": extractor.weights_sha256,
        "state_sha256": state_sha256(state),
        "weights_source": extractor.source,
        "channels": extractor.channels,
        "resolution": extractor.resolution,
        "feature_dim": extractor.feature_dim,
        "num_classes": extractor.num_classes,
        "classes": extractor.classes,
    }
    clash = sorted(set(meta) & set(info))
    if clash:
        raise ValueError(f"meta may not set {', '.join(clash)}")
    info.update(meta)
    torch.save(state, directory / EXTRACTOR_WEIGHTS)
    (directory / EXTRACTOR_META).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def load_extractor(directory: Path) -> tuple[Extractor, dict[str, Any]]:
    """Rebuild a saved extractor from data (no pickled code); returns it and its json dict.

    Raises :class:`GanlibError` when the files are missing, of an unknown format, or the
    weights do not hash to what ``extractor.json`` recorded.
    """
    directory = Path(directory)
    meta_path, weights = directory / EXTRACTOR_META, directory / EXTRACTOR_WEIGHTS
    if not (meta_path.is_file() and weights.is_file()):
        raise GanlibError(
            f"{directory}: no saved extractor ({EXTRACTOR_META} + {EXTRACTOR_WEIGHTS}); "
            "run the featurize stage first"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT_VERSION or meta.get("kind") not in NETS:
        raise GanlibError(
            f"{meta_path}: format {meta.get('format')} / kind {meta.get('kind')!r} is not "
            f"known to this ganlib (format {FORMAT_VERSION}); re-run the featurize stage"
        )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if state_sha256(state) != meta["state_sha256"]:
        raise GanlibError(
            f"{weights}: weights differ from what {EXTRACTOR_META} recorded; "
            "re-run the featurize stage"
        )
    kind = meta["kind"]
    net = NETS[kind](**meta["config"])
    net.load_state_dict(state)
    extractor = Extractor(
        kind,
        net,
        meta["config"],
        classes=meta["classes"],
        weights_sha256=meta["weights_sha256"],
        source=meta["weights_source"],
    )
    return extractor, meta


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


# -- reference statistics --------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """Reference statistics of real images, as :func:`save_reference` stores them."""

    features: np.ndarray  # [M, D] float32, a deterministic subset of at most max_samples
    mu: np.ndarray  # [D] float64, mean of all N features
    sigma: np.ndarray  # [D, D] float64, covariance of all N features
    probs: np.ndarray | None  # [M, K] float32 class probabilities of the same M, or None
    num_samples: int  # N, the number of images the statistics describe


def compute_outputs(
    extractor: Extractor, batches: Iterable[Tensor]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features ``[N, D]`` and class probabilities ``[N, K]`` (or None) of image batches.

    ``batches`` yields ``[B, C, H, W]`` tensors in [-1, 1], e.g.
    ``(b["image"] for b in iter_split(root, "val", 256))``. Both arrays are float32.
    """
    feats, probs = [], []
    for x in batches:
        f, p = extractor.outputs(x)
        feats.append(f.cpu().numpy())
        if p is not None:
            probs.append(p.cpu().numpy())
    if not feats:
        raise GanlibError("no images to compute features of: the split is empty")
    return np.concatenate(feats), np.concatenate(probs) if probs else None


def compute_features(extractor: Extractor, batches: Iterable[Tensor]) -> np.ndarray:
    """Features ``[N, D]`` (float32) of image batches; see :func:`compute_outputs`."""
    return compute_outputs(extractor, batches)[0]


def save_reference(
    path: Path,
    features: np.ndarray,
    probs: np.ndarray | None = None,
    *,
    max_samples: int | None = None,
    seed: int = 0,
) -> Reference:
    """Write the reference statistics of real ``features`` [N, D] (and ``probs`` [N, K]).

    ``mu`` and ``sigma`` describe all N features; the stored features (and probs), which
    KID, precision/recall and density/coverage compare against, are capped at
    ``max_samples``, a subset drawn from ``seed`` and kept in order. The ``.npz`` file is
    byte-identical for the same input.
    """
    features = np.asarray(features)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be [N >= 2, D], got {list(features.shape)}")
    if probs is not None and len(probs) != len(features):
        raise ValueError(f"probs has {len(probs)} rows, features {len(features)}")
    n = len(features)
    mu, sigma = mean_cov(features)
    keep = np.arange(n)
    if max_samples is not None and n > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))
    arrays = {
        "features": features[keep].astype(np.float32),
        "mu": mu,
        "sigma": sigma,
        "num_samples": np.int64(n),
    }
    if probs is not None:
        arrays["probs"] = np.asarray(probs)[keep].astype(np.float32)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return Reference(
        features=arrays["features"],
        mu=mu,
        sigma=sigma,
        probs=arrays.get("probs"),
        num_samples=n,
    )


def load_reference(path: Path) -> Reference:
    """Read the statistics :func:`save_reference` wrote."""
    path = Path(path)
    if not path.is_file():
        raise GanlibError(f"{path}: no reference statistics; run the featurize stage first")
    with np.load(path, allow_pickle=False) as z:
        return Reference(
            features=z["features"],
            mu=z["mu"],
            sigma=z["sigma"],
            probs=z["probs"] if "probs" in z.files else None,
            num_samples=int(z["num_samples"]),
        )


# -- protocol card ---------------------------------------------------------------------------


def protocol_card(
    meta: Mapping[str, Any],
    *,
    split: str,
    num_real: int,
    num_fake: int,
    resolution: int,
    channels: int,
    seed: int,
) -> dict[str, Any]:
    """What a number was measured under; ``meta`` is the extractor's json dict.

    Two numbers may be compared only when their cards are equal (same :func:`protocol_hash`).
    """
    card = {
        "extractor": meta["kind"],
        "weights_sha256": meta["weights_sha256"],
        "feature_dim": int(meta["feature_dim"]),
        "reference_split": split,
        "num_real": int(num_real),
        "num_fake": int(num_fake),
        "resolution": int(resolution),
        "channels": int(channels),
        "seed": int(seed),
    }
    if meta["kind"] == "random":
        card["note"] = RANDOM_NOTE
    return card


def protocol_hash(card: Mapping[str, Any]) -> str:
    """16 hex chars of the sha256 of the card's canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(card, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
