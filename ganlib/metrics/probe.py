"""A cheap FID during training: what Ray Tune's ASHA and the train stage report at each step.

:class:`FidProbe` loads the featurize stage's extractor and reference statistics once, then
scores a generator on the same fixed noise every call. Its FID (few fakes, the train-split
reference) is for ranking trials and watching progress; it is not comparable with the evaluate
stage's numbers, whose protocol card differs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ganlib.metrics.features import REFERENCE, load_extractor, load_reference, quantize
from ganlib.metrics.generation import fid_from_stats, mean_cov

# Generator batch: bounds the memory of one forward pass.
_BATCH = 250


class FidProbe:
    """``probe(G, num_classes) -> FID`` of ``num_fake`` images of G against the reference.

    ``featurize_dir`` holds the saved extractor and ``reference`` (statistics of real images).
    The noise ``z`` [num_fake, z_dim] is drawn on first use from a ``torch.Generator`` seeded
    by ``seed`` (never the global RNG) and reused by every call; conditional generators get
    the labels 0, 1, ..., K-1, 0, 1, ... in turn.
    """

    def __init__(
        self,
        featurize_dir: str | Path,
        *,
        num_fake: int = 500,
        seed: int = 0,
        reference: str = REFERENCE,
    ) -> None:
        if num_fake < 2:
            raise ValueError(f"num_fake must be >= 2, got {num_fake}")
        featurize_dir = Path(featurize_dir)
        self.extractor, self.meta = load_extractor(featurize_dir)
        ref = load_reference(featurize_dir / reference)
        self.mu, self.sigma = ref.mu, ref.sigma  # [D], [D, D]
        self.num_fake = num_fake
        self.seed = seed
        self._z: torch.Tensor | None = None  # [num_fake, z_dim] on the CPU

    def noise(self, z_dim: int) -> torch.Tensor:
        """The fixed noise ``[num_fake, z_dim]`` (CPU), the same for every call."""
        if self._z is None or self._z.shape[1] != z_dim:
            g = torch.Generator().manual_seed(self.seed)
            self._z = torch.randn(self.num_fake, z_dim, generator=g)
        return self._z

    @torch.no_grad()
    def __call__(self, G: nn.Module, num_classes: int = 0) -> float:
        """FID of G's images on the fixed noise; G runs in eval mode and gets its mode back.

        ``G`` is a ganlib generator (``G(z, labels=None)``, ``G.config["z_dim"]``); a DDP
        wrapper is unwrapped, since its forward would start collectives on this rank alone.
        """
        if isinstance(G, DistributedDataParallel):
            G = G.module
        device = next(G.parameters()).device
        self.extractor.to(device)
        z = self.noise(G.config["z_dim"])
        labels = torch.arange(self.num_fake) % num_classes if num_classes > 0 else None
        was_training = G.training
        G.eval()
        try:
            feats = []
            for i in range(0, self.num_fake, _BATCH):
                zb = z[i : i + _BATCH].to(device)  # [B, z_dim]
                lb = None if labels is None else labels[i : i + _BATCH].to(device)  # [B]
                fake = quantize(G(zb, lb))  # [B, C, R, R] in [-1, 1], on 256 levels
                feats.append(self.extractor.features(fake).cpu())
        finally:
            G.train(was_training)
        fake_feats = torch.cat(feats).numpy()  # [num_fake, D]
        return fid_from_stats(self.mu, self.sigma, *mean_cov(fake_feats))["fid"]
