"""The ``classifier`` extractor: a small CNN trained on the labelled train split, whose
penultimate layer gives the features and whose softmax gives the class probabilities of the
classifier score and class coverage (:class:`ganlib.metrics.extractors.ClassifierNet`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import nn

from ganlib.data.loader import ShardLoader, iter_split
from ganlib.data.shards import manifest_metadata, read_manifest
from ganlib.errors import GanlibError
from ganlib.metrics.extractors import BATCH_SIZES, ClassifierNet, Extractor


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
    shard_root = str(shard_root)  # a path or a URL
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
def _recompute_batchnorm(net: nn.Module, shard_root: str | Path, batch_size: int, device) -> None:
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


def _accuracy(extractor: Extractor, shard_root: str | Path, split: str) -> float | None:
    """Top-1 accuracy on the labelled samples of ``split`` (None if it has none)."""
    correct = total = 0
    for batch in iter_split(shard_root, split, BATCH_SIZES["classifier"]):
        y = batch["label"]  # [B]
        pred = extractor.probs(batch["image"]).argmax(dim=1).cpu()  # [B]
        known = y >= 0
        correct += int((pred[known] == y[known]).sum())
        total += int(known.sum())
    return round(correct / total, 4) if total else None
