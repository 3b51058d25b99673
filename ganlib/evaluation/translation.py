"""The evaluate stage for translation: a translator against the target domain, the ground
truth, and the identity baseline (output = input), which a translator must beat.

Measured on up to ``translation.eval_images`` val images per domain, a seeded subset in
manifest order; where the split holds pairs (pix2pix data, and the photos2art demo even for
CycleGAN: its shards keep each photo with its rendering) A and B are the same pairs.

- FID to the target domain, A -> B (the promotion metric): features of ``G(a)``, rounded to
  the 8 bits a user gets, against the featurize stage's reference, all the train split's B
  images (card: ``reference_split: train``, ``reference_field: b.png``). The train split
  rather than the val B images: its statistics rest on many more images, they are not the
  targets of the very inputs scored, and one reference serves every model of the same
  shards, pix2pix and CycleGAN alike. ``floor`` is the FID of the val B images themselves
  against it: about what a perfect translator scores.
- FID B -> A (CycleGAN): no reference of domain A is stored, so the val A images' own
  statistics serve; that number has its own card, ``protocol_BtoA`` (``reference_split:
  val``, ``reference_field: a.png``), and is compared only with numbers of that card.
- PSNR, SSIM and L1 against the ground truth, where pairs exist; cycle errors (CycleGAN);
  all from :func:`translation_metrics`.

The identity baseline gets the same numbers with the input as the output: its FID is that of
the inputs themselves (``a`` against real B), its PSNR/SSIM/L1 those of ``a`` to ``b``.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
from torch import Tensor, nn

from ganlib.artifacts import load_extractor
from ganlib.config import EvalConfig, Params, TranslationConfig
from ganlib.data.loader import BATCH_NAMES, iter_split
from ganlib.data.pixels import quantize
from ganlib.data.shards import manifest_metadata, read_manifest
from ganlib.errors import GanlibError
from ganlib.evaluation.common import load_task_generator
from ganlib.evaluation.generation import MIN_EVAL_IMAGES, _scale
from ganlib.grid import save_grid
from ganlib.metrics.extractors import Extractor, check_compatible
from ganlib.metrics.fidelity import image_scores, l1
from ganlib.metrics.generation import fid_to_features, mean_cov
from ganlib.metrics.protocol import protocol_card, protocol_hash
from ganlib.metrics.reference import REFERENCE, load_reference
from ganlib.tasks.translation import TASK, translate, translators

SHEET_ROWS = 8  # rows of eval/sheets/translation.png
GRID_IMAGES = 64  # outputs in eval/samples.png
SCORES = ("psnr", "ssim", "l1")  # against the ground truth, where pairs exist
VALUE_RANGE = (-1.0, 1.0)  # the loader's images


def evaluate_translator(
    generator_dir: Path,
    shards: str | Path,
    featurize_dir: Path,
    task_cfg: TranslationConfig,
    eval_cfg: EvalConfig,
    *,
    seed: int,
    out: Path,
) -> dict[str, Any]:
    """Measure the exported translator; writes ``out/samples.png`` (outputs G(a)) and
    ``out/sheets/translation.png`` (input / output / target rows, a B -> A block beside them
    for CycleGAN) and returns ``eval/metrics.json``:

    ``ganlib`` and ``identity``: ``AtoB/fid`` and, where pairs exist, ``AtoB/psnr``,
    ``AtoB/ssim``, ``AtoB/l1``; for CycleGAN the same for ``BtoA/`` and (ganlib only)
    ``cycle/A``, ``cycle/B``. ``floor``: ``{"fid"}`` of the val B images. ``counts``: images
    scored per domain and pairs. ``protocol``/``protocol_hash``: the card of the A -> B FID;
    ``protocol_BtoA`` for CycleGAN. ``promotion``: ``{"metric": "fid", "value"}``, lower is
    better. Flat floats for trackers: ``fid``, ``psnr``, ``ssim``, ``l1`` (ganlib, A -> B),
    ``identity_fid``, ``identity_psnr``, ``identity_ssim``, ``identity_l1``, ``floor_fid``,
    and for CycleGAN ``fid_BtoA``, ``identity_fid_BtoA``, ``cycle_A``, ``cycle_B``; the
    scores against the ground truth only where pairs exist.
    """
    G, gmeta, info = load_task_generator(generator_dir, shards, TASK.name, "a translator")
    _check_mode(gmeta, task_cfg, generator_dir)
    nets = translators(G)  # {"AtoB": G_AB} or {"AtoB": G_AB, "BtoA": G_BA}
    extractor, emeta = load_extractor(featurize_dir)
    check_compatible(emeta, channels=info["channels"], resolution=info["resolution"])
    if emeta.get("reference_field") != "b.png":
        raise GanlibError(
            f"{featurize_dir}: the reference features are not of domain B (b.png) of "
            "translation shards; re-run the featurize stage"
        )
    ref = load_reference(featurize_dir / REFERENCE)

    # -- the val images, the translations, and their features -----------------------------
    val, paired = _val_images(shards, task_cfg.eval_images, seed, eval_cfg.batch_size)
    batches = _batches(val, paired, eval_cfg.batch_size)
    keep_a, keep_b = _spread(len(val["a"]), GRID_IMAGES), _spread(len(val["b"]), GRID_IMAGES)
    seen = _Collector(extractor, {"a": keep_a, "fake_b": keep_a, "b": keep_b, "fake_a": keep_b})
    scores = translation_metrics(batches, nets["AtoB"], nets.get("BtoA"), on_batch=seen)
    feats = {name: np.concatenate(f) for name, f in seen.features.items()}  # name -> [N, D]

    def fid(stats: tuple[np.ndarray, np.ndarray], name: str) -> float:
        return fid_to_features(*stats, feats[name])["fid"]

    b_stats = ref.mu, ref.sigma  # the train split's B images
    ganlib, identity = {"AtoB/fid": fid(b_stats, "fake_b")}, {"AtoB/fid": fid(b_stats, "a")}
    directions = ["AtoB"]
    if "BtoA" in nets:
        a_stats = mean_cov(feats["a"])  # the val A images
        ganlib["BtoA/fid"] = fid(a_stats, "fake_a")
        identity["BtoA/fid"] = fid(a_stats, "b")
        directions.append("BtoA")
    for direction in directions:  # identity/*: symmetric metrics, one baseline for both
        for name in SCORES:
            if f"{direction}/{name}" in scores:
                ganlib[f"{direction}/{name}"] = scores[f"{direction}/{name}"]
                identity[f"{direction}/{name}"] = scores[f"identity/{name}"]
    ganlib |= {k: v for k, v in scores.items() if k.startswith("cycle/")}
    floor = {"fid": fid(b_stats, "b")}

    fmt = {"resolution": info["resolution"], "channels": info["channels"], "seed": seed}
    n_a, n_b = len(val["a"]), len(val["b"])
    card = protocol_card(emeta, split="train", num_real=ref.num_samples, num_fake=n_a, **fmt)
    card["reference_field"] = "b.png"  # the target domain's real images
    result: dict[str, Any] = {
        "task": "translation",
        "mode": task_cfg.mode,
        "ganlib": ganlib,
        "identity": identity,
        "floor": floor,
        "counts": {"A": n_a, "B": n_b, "pairs": int(scores["n/pairs"])},
        "protocol": card,
        "protocol_hash": protocol_hash(card),
        "promotion": {"metric": TASK.promotion_metric, "value": ganlib["AtoB/fid"]},
        "generator_step": gmeta["step"],
        **_flat(ganlib, identity, floor),
    }
    if "BtoA" in nets:  # the val A images are the reference
        card_ba = protocol_card(emeta, split="val", num_real=n_a, num_fake=n_b, **fmt)
        card_ba["reference_field"] = "a.png"
        result |= {"protocol_BtoA": card_ba, "protocol_hash_BtoA": protocol_hash(card_ba)}

    # -- sheets ---------------------------------------------------------------------------
    out.mkdir(parents=True, exist_ok=True)
    scale = _scale(info["resolution"])
    images = seen.images  # GRID_IMAGES spread over the val images, each name
    save_grid(images["fake_b"], out / "samples.png", scale=scale)
    sheets = out / "sheets"
    shutil.rmtree(sheets, ignore_errors=True)
    sheets.mkdir()
    _translation_sheet(images, directions, paired, sheets / "translation.png", scale)
    return result


@torch.no_grad()
def translation_metrics(
    batches: Iterable[dict[str, Any]],
    G_AB: nn.Module,
    G_BA: nn.Module | None = None,
    *,
    value_range: tuple[float, float] = VALUE_RANGE,
    on_batch: Callable[[dict[str, Tensor]], None] | None = None,
) -> dict[str, float]:
    """Means over every image of ``batches`` (loader batches with ``"a"`` and/or ``"b"``).

    ``G_AB`` (and ``G_BA`` for CycleGAN) are used as given: pass them in eval mode, on the
    device the batches should go to. A batch with both ``"a"`` and ``"b"`` is a batch of
    true pairs (pix2pix data, or the hidden ground truth of an unpaired demo); one with a
    single domain (``iter_split(..., fields=("a.png",))`` of unpaired shards) gives the cycle
    error only. ``on_batch`` receives each batch's images on the CPU, ``{"a", "fake_b",
    "b", "fake_a"}`` as far as they exist, e.g. to collect features for FID.

    Returns ``{"AtoB/psnr", "AtoB/ssim", "AtoB/l1", "BtoA/...", "identity/...", "cycle/A",
    "cycle/B"}`` as far as the batches and models allow, plus the image counts ``n/pairs``,
    ``n/A`` and ``n/B``.
    """
    device = next(G_AB.parameters()).device
    values: dict[str, list[Tensor]] = defaultdict(list)  # name -> per-image values, [B] each
    counts = {"n/pairs": 0, "n/A": 0, "n/B": 0}

    def add(prefix: str, scores: dict[str, Tensor]) -> None:
        for name, v in scores.items():
            values[f"{prefix}/{name}"].append(v)

    for batch in batches:
        a, b = batch.get("a"), batch.get("b")
        a = None if a is None else a.to(device)
        b = None if b is None else b.to(device)
        images: dict[str, Tensor] = {}
        if a is not None:
            counts["n/A"] += a.shape[0]
            images["a"] = a
            images["fake_b"] = fake_b = translate(G_AB, a)  # [B, C, H, W]
            if G_BA is not None:
                rec_a = translate(G_BA, fake_b)
                values["cycle/A"].append(l1(rec_a, a, value_range=value_range).cpu())
        if b is not None:
            counts["n/B"] += b.shape[0]
            images["b"] = b
            if G_BA is not None:
                images["fake_a"] = fake_a = translate(G_BA, b)
                rec_b = translate(G_AB, fake_a)
                values["cycle/B"].append(l1(rec_b, b, value_range=value_range).cpu())
        if a is not None and b is not None:
            counts["n/pairs"] += a.shape[0]
            add("identity", image_scores(a, b, value_range=value_range))
            add("AtoB", image_scores(images["fake_b"], b, value_range=value_range))
            if G_BA is not None:
                add("BtoA", image_scores(images["fake_a"], a, value_range=value_range))
        if on_batch is not None:
            on_batch({k: v.cpu() for k, v in images.items()})
    means = {name: torch.cat(v).mean().item() for name, v in sorted(values.items())}
    return means | {k: float(n) for k, n in counts.items()}


def _check_mode(gmeta: dict[str, Any], task_cfg: TranslationConfig, directory: Path) -> None:
    """Raise unless the translator was trained in ``task_cfg.mode``."""
    mode = gmeta["task_config"].get("mode")
    if mode != task_cfg.mode:
        raise GanlibError(
            f"{directory}: trained with translation.mode: {mode}, but params.yaml says "
            f"{task_cfg.mode}; re-run the train stage"
        )


def _val_images(
    shards: str | Path, max_images: int, seed: int, batch_size: int
) -> tuple[dict[str, Tensor], bool]:
    """``({"a": [N_A, C, H, W], "b": [N_B, C, H, W]}, paired)``: up to ``max_images`` val
    images of each domain in [-1, 1], a subset drawn from ``seed``, in manifest order.

    ``paired``: every val sample holds both images (then ``a[i]`` and ``b[i]`` are a pair,
    the same subset); otherwise the domains are drawn independently and nothing is paired.
    """
    table = read_manifest(shards, columns=["key", "split", "offset", "offset_b"])
    if manifest_metadata(table)["fields"] != ["a.png", "b.png"]:
        raise GanlibError(
            f"{shards}: the shards hold single images, not translation domains A and B; "
            "re-run the shard stage with a paired or unpaired data.source"
        )
    val = table.filter(pc.equal(table["split"], "val"))
    keys = {  # the val keys holding each domain's image, in manifest order
        "a": val.filter(pc.is_valid(val["offset"]))["key"].to_pylist(),
        "b": val.filter(pc.is_valid(val["offset_b"]))["key"].to_pylist(),
    }
    for name, domain_keys in keys.items():
        if len(domain_keys) < MIN_EVAL_IMAGES:
            raise GanlibError(
                f"the val split holds {len(domain_keys)} images of domain {name.upper()}, "
                f"fewer than {MIN_EVAL_IMAGES}; raise data.val_fraction"
            )
    paired = keys["a"] == keys["b"]
    rng = np.random.default_rng(seed)
    keep = {"a": _subset(keys["a"], max_images, rng)}
    keep["b"] = keep["a"] if paired else _subset(keys["b"], max_images, rng)
    images = {}
    for field in ("a.png", "b.png"):
        name = BATCH_NAMES[field]
        parts = []
        for batch in iter_split(shards, "val", batch_size, fields=(field,)):
            rows = [i for i, key in enumerate(batch["key"]) if key in keep[name]]
            parts.append(batch[name][torch.tensor(rows, dtype=torch.long)])
        images[name] = torch.cat(parts)  # [N, C, H, W]
    return images, paired


def _subset(keys: list[str], n: int, rng: np.random.Generator) -> set[str]:
    if len(keys) <= n:
        return set(keys)
    return {keys[i] for i in rng.choice(len(keys), n, replace=False)}


def _batches(val: dict[str, Tensor], paired: bool, batch_size: int) -> list[dict[str, Tensor]]:
    """Batches for :func:`translation_metrics`: of pairs, or of each domain on its own."""
    if paired:
        return [
            {"a": a, "b": b}
            for a, b in zip(val["a"].split(batch_size), val["b"].split(batch_size), strict=True)
        ]
    return [{name: x} for name in ("a", "b") for x in val[name].split(batch_size)]


def _spread(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` indices spread evenly over ``range(n)``: a sheet that shows all the data,
    not the first photo's patches only (val samples come in key order)."""
    return np.linspace(0, n - 1, min(n, k)).round().astype(np.int64)


class _Collector:
    """translation_metrics' ``on_batch``: the features of every image it hands over
    (rounded to 8 bits first, as stored and served images are), and the images at the
    positions ``keep[name]`` of each stream (``fake_b`` follows ``a``, ``fake_a`` ``b``)."""

    def __init__(self, extractor: Extractor, keep: dict[str, np.ndarray]) -> None:
        self.extractor = extractor
        self.keep = keep
        self.seen: dict[str, int] = defaultdict(int)  # images of each name so far
        self.features: dict[str, list[np.ndarray]] = defaultdict(list)  # name -> [B, D] each
        self.kept: dict[str, list[Tensor]] = defaultdict(list)  # name -> [C, H, W] each

    def __call__(self, images: dict[str, Tensor]) -> None:
        for name, x in images.items():
            x = quantize(x)  # [B, C, H, W]
            self.features[name].append(self.extractor.features(x).cpu().numpy())
            start = self.seen[name]
            self.seen[name] += len(x)
            rows = self.keep[name][(self.keep[name] >= start) & (self.keep[name] < start + len(x))]
            self.kept[name] += list(x[torch.from_numpy(rows - start)])

    @property
    def images(self) -> dict[str, Tensor]:
        """The kept images, ``[n, C, H, W]`` per name."""
        return {name: torch.stack(x) for name, x in self.kept.items()}


def _flat(ganlib: dict, identity: dict, floor: dict) -> dict[str, float]:
    """The top-level floats: A -> B unprefixed, identity_ and _BtoA marked."""
    flat = {"floor_fid": floor["fid"]}
    for method, values in (("", ganlib), ("identity_", identity)):
        for key, value in values.items():
            direction, name = key.split("/")
            if direction == "AtoB":
                flat[f"{method}{name}"] = value
            elif direction == "BtoA" and name == "fid":
                flat[f"{method}fid_BtoA"] = value
            elif direction == "cycle":
                flat[f"cycle_{name}"] = value
    return {k: float(v) for k, v in flat.items()}


def _translation_sheet(
    images: dict[str, Tensor], directions: list[str], paired: bool, path: Path, scale: int
) -> None:
    """Rows of (input, output, target) A -> B, and for CycleGAN (input, output, target)
    B -> A beside them; a black target where the val split holds no pairs."""
    triples = {"AtoB": ("a", "fake_b", "b"), "BtoA": ("b", "fake_a", "a")}
    n = min(len(x) for x in images.values())
    blank = torch.full_like(images["a"][0], -1.0)
    tiles = []
    for i in _spread(n, SHEET_ROWS):
        for direction in directions:
            source, output, target = triples[direction]
            tiles += [images[source][i], images[output][i], images[target][i] if paired else blank]
    save_grid(torch.stack(tiles), path, nrow=3 * len(directions), scale=scale)


def evaluate(
    generator_dir: Path, shards: str | Path, featurize_dir: Path, params: Params, out: Path
) -> dict[str, Any]:
    """The evaluate stage's entry (:meth:`ganlib.tasks.base.Task.evaluate`)."""
    return evaluate_translator(
        generator_dir,
        shards,
        featurize_dir,
        params.translation,
        params.eval,
        seed=params.seed,
        out=out,
    )
