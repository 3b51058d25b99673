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

# What each task's probe measures (lower is better): what ASHA ranks and train logs.
PROBE_METRICS = {"generation": "fid", "inpainting": "l1_hole", "translation": "fid"}
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


class _GenerationProbe:
    """:class:`FidProbe` as a task probe: ``probe(G) -> FID``."""

    metric = "fid"

    def __init__(self, featurize_dir: str | Path, num_fake: int, seed: int):
        self.fid = FidProbe(featurize_dir, num_fake=num_fake, seed=seed)

    def __call__(self, G: nn.Module) -> float:
        return self.fid(G, G.config["num_classes"])


def _probe_images(shards: str | Path, field: str, n: int) -> tuple[torch.Tensor, list[str]]:
    """The first ``n`` val images of ``field`` (the train split's when val is empty):
    ``[n', C, H, W]`` in [-1, 1], and their keys."""
    from ganlib.data.loader import iter_split

    for split in ("val", "train"):
        images, keys = [], []
        try:
            for batch in iter_split(Path(shards), split, _BATCH, fields=(field,)):
                images.append(batch[{"png": "image", "a.png": "a", "b.png": "b"}[field]])
                keys += batch["key"]
                if len(keys) >= n:
                    break
        except FileNotFoundError:
            continue
        if keys:
            return torch.cat(images)[:n], keys[:n]
    raise ValueError(f"{shards}: no images to probe with")


class HoleL1Probe:
    """Inpainting: mean hole L1 (a fraction of the value range) of G's repairs of the first
    val images under fixed masks (seeded by key, the training area range)."""

    metric = "l1_hole"

    def __init__(self, shards: str | Path, task_cfg, num_images: int, seed: int):
        from ganlib.data.masks import eval_masks

        self.images, keys = _probe_images(shards, "png", num_images)  # [N, C, H, W]
        area = (task_cfg.min_area, task_cfg.max_area)
        self.masks = eval_masks(
            keys,
            tuple(self.images.shape[-2:]),
            kind=task_cfg.mask_kind,
            area_range=area,
            seed=seed,
        )  # [N, 1, H, W]

    @torch.no_grad()
    def __call__(self, G: nn.Module) -> float:
        from ganlib.tasks.inpainting import inpaint, masked_l1

        if isinstance(G, DistributedDataParallel):
            G = G.module
        device = next(G.parameters()).device
        was_training = G.training
        G.eval()
        try:
            out = torch.cat(
                [
                    inpaint(G, x.to(device), m.to(device)).cpu()
                    for x, m in zip(
                        self.images.split(_BATCH), self.masks.split(_BATCH), strict=True
                    )
                ]
            )
        finally:
            G.train(was_training)
        return masked_l1(out, self.images, self.masks).item() / 2  # over the range [-1, 1]


class TranslationProbe:
    """Translation: FID of ``G_AB`` applied to the first val images of domain A, against the
    featurize stage's reference (domain B)."""

    metric = "fid"

    def __init__(self, featurize_dir: str | Path, shards: str | Path, num_images: int):
        featurize_dir = Path(featurize_dir)
        self.extractor, _ = load_extractor(featurize_dir)
        ref = load_reference(featurize_dir / REFERENCE)
        self.mu, self.sigma = ref.mu, ref.sigma
        self.images, _ = _probe_images(shards, "a.png", num_images)

    @torch.no_grad()
    def __call__(self, G: nn.Module) -> float:
        from ganlib.tasks.translation import translate

        if isinstance(G, DistributedDataParallel):
            G = G.module
        G_AB = G.generator("AtoB") if hasattr(G, "generator") else G
        device = next(G.parameters()).device
        self.extractor.to(device)
        was_training = G.training
        G.eval()
        try:
            feats = [
                self.extractor.features(quantize(translate(G_AB, x.to(device)))).cpu()
                for x in self.images.split(_BATCH)
            ]
        finally:
            G.train(was_training)
        return fid_from_stats(self.mu, self.sigma, *mean_cov(torch.cat(feats).numpy()))["fid"]


def task_probe(task: str, task_cfg, featurize_dir, shards, num_images: int, seed: int):
    """The in-training probe of ``task``: ``probe(G) -> float`` (lower is better), its name
    in ``probe.metric``: ``fid`` for generation and translation, ``l1_hole`` for inpainting."""
    if task == "generation":
        return _GenerationProbe(featurize_dir, num_images, seed)
    if task == "inpainting":
        return HoleL1Probe(shards, task_cfg, num_images, seed)
    return TranslationProbe(featurize_dir, shards, num_images)
