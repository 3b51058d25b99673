"""What the in-training probes share: the featurize stage's FID, and fixed probe images.

A task's probe (:meth:`ganlib.tasks.base.Task.make_probe`) is a cheap number measured on
G_ema at every checkpoint: what Ray Tune's ASHA ranks trials by and what the train stage logs
(``probe(G) -> float``, lower is better, named by the task's ``probe_metric``). On few images
and the train-split reference, it is for ranking trials and watching progress, not comparable
with the evaluate stage's numbers, whose protocol card differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ganlib.artifacts import load_extractor
from ganlib.data.loader import BATCH_NAMES, iter_split
from ganlib.data.pixels import quantize
from ganlib.metrics.generation import fid_to_features
from ganlib.metrics.reference import REFERENCE, load_reference

# Images per forward pass: bounds the memory of one probe.
PROBE_BATCH = 250


def unwrap(G: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper: a probe on rank 0 alone must not start collectives."""
    return G.module if isinstance(G, DistributedDataParallel) else G


class ReferenceFid:
    """FID of images against the featurize stage's reference statistics (of the train split).

    ``featurize_dir`` holds the saved extractor and ``reference.npz``; both are loaded once.
    """

    def __init__(self, featurize_dir: str | Path) -> None:
        featurize_dir = Path(featurize_dir)
        self.extractor, self.meta = load_extractor(featurize_dir)
        ref = load_reference(featurize_dir / REFERENCE)
        self.mu, self.sigma = ref.mu, ref.sigma  # [D], [D, D]

    @torch.no_grad()
    def __call__(self, batches: Iterable[Tensor]) -> float:
        """FID of image batches ``[B, C, H, W]`` in [-1, 1] (rounded to 8 bits first, as stored
        images are), on the batches' device; each batch is featurized as it comes, so only
        features are kept."""
        feats = []
        for x in batches:
            self.extractor.to(x.device)
            feats.append(self.extractor.features(quantize(x)).cpu())
        return fid_to_features(self.mu, self.sigma, torch.cat(feats).numpy())["fid"]


def probe_images(shards: str | Path, field: str, n: int) -> tuple[Tensor, list[str]]:
    """The first ``n`` val images of ``field`` (the train split's when val is empty):
    ``[n', C, H, W]`` in [-1, 1], and their keys."""
    for split in ("val", "train"):
        images, keys = [], []
        try:
            for batch in iter_split(shards, split, PROBE_BATCH, fields=(field,)):
                images.append(batch[BATCH_NAMES[field]])
                keys += batch["key"]
                if len(keys) >= n:
                    break
        except FileNotFoundError:
            continue
        if keys:
            return torch.cat(images)[:n], keys[:n]
    raise ValueError(f"{shards}: no images to probe with")
