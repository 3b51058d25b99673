"""What a task is: the one record that the loop, the stages, the registry and the CLI ask.

A task (noise -> image, image + mask -> image, image A -> image B) is a :class:`Task`: one
instance per task module (:mod:`ganlib.tasks.generation`, :mod:`~ganlib.tasks.inpainting`,
:mod:`~ganlib.tasks.translation`), collected in :data:`ganlib.tasks.TASKS`, the only place a
task's name is looked up. Everything that differs between tasks is a method or an attribute
here; nothing outside ``ganlib/tasks/`` compares a task's name. Within its own module a task
decides its own variants (translation: pix2pix or CycleGAN, by ``translation.mode``).

The heavy parts (the evaluators, MLflow's schema types) are imported inside the methods that
need them, so that training and serving import only what they run.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from ganlib.config import Params, TrainConfig
from ganlib.errors import GanlibError
from ganlib.training.step import StepContext, TaskStep

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow.models import ModelSignature

Probe = Callable[[nn.Module], float]  # probe(G_ema) -> value, lower is better


@dataclass(frozen=True)
class Limits:
    """The most one ``predict`` call takes: the registered model's per-request bounds.

    Stored with the logged model (its pyfunc ``model_config``, set at registration) and read
    at load time; without them a task's :attr:`Task.limits` apply. ``max_rows``: rows per
    request (default 1,024 seeds for generation, 64 images for the image tasks);
    ``max_pixels``: pixels of each input image (2048 x 2048), checked from its header
    before it is decoded; ``max_total_pixels``: pixels of all the images a request returns
    (4096 x 4096, e.g. 4 images of 2048 x 2048, or 1,024 of a 128-pixel generator). Over a
    bound, a request is one line (HTTP 400 from ``mlflow models serve``).
    """

    max_rows: int
    max_pixels: int = 2048 * 2048
    max_total_pixels: int = 4096 * 4096

    def override(self, overrides: Mapping[str, Any] | None) -> Limits:
        """These limits with ``overrides`` (a subset of the fields, positive ints); a one-line
        GanlibError for an unknown key or a bad value."""
        overrides = dict(overrides or {})
        known = [f.name for f in dataclasses.fields(self)]
        for key, value in overrides.items():
            if key not in known:
                raise GanlibError(f"limits: unknown key {key!r}; known: {', '.join(known)}")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GanlibError(f"limits: {key} must be a positive integer, got {value!r}")
        return dataclasses.replace(self, **overrides)

    def check_rows(self, rows: int) -> None:
        """Refuse a request of more than ``max_rows`` rows."""
        if rows > self.max_rows:
            raise GanlibError(
                f"{rows} rows in one request, more than the {self.max_rows} this model takes; "
                f"send at most {self.max_rows} per request"
            )

    def check_total(self, pixels: int, images: int) -> None:
        """Refuse a request whose ``images`` images have more than ``max_total_pixels``."""
        if pixels > self.max_total_pixels:
            raise GanlibError(
                f"{pixels} pixels in the request's {images} images, more than the "
                f"{self.max_total_pixels} per request this model takes; send fewer or smaller "
                "images per request"
            )


class Task:
    """One task's record. Subclasses set the attributes and implement the methods."""

    name: ClassVar[str]  # the value of ``task`` in params.yaml
    section: ClassVar[str | None] = None  # the params section it owns (``Params.<section>``)
    fields: ClassVar[tuple[str, ...]]  # the shards' image fields it trains on
    probe_metric: ClassVar[str]  # the in-training probe's name (MLflow, ASHA); lower is better
    promotion_metric: ClassVar[str]  # the eval/metrics.json number the registry ranks by
    metric_label: ClassVar[str]  # how the promotion metric reads in messages ("FID")
    summary: ClassVar[str]  # what its models do, in a few words ("noise -> image")
    example_call: ClassVar[str]  # the pyfunc model's predict on an example frame, as Python
    limits: ClassVar[Limits]  # the registered model's default per-request bounds
    # The evaluate stage's module for the task, named rather than imported: DVC re-runs a stage
    # when a file it imports changes, and training must not depend on evaluation code (the
    # evaluate stage imports every evaluator through ganlib.evaluation).
    evaluator: ClassVar[str]

    # -- configuration ---------------------------------------------------------------------

    def config(self, params: Params) -> Any:
        """The task's own params section (``None`` for a task without one)."""
        return getattr(params, self.section) if self.section else None

    def check(self, cfg: TrainConfig, task_cfg: Any, info: Mapping[str, Any]) -> None:
        """Raise a one-line GanlibError unless the train settings, the task's section and the
        shards (``dataset_info``) fit together: the train stage's checks before Ray starts."""
        raise NotImplementedError

    # -- training --------------------------------------------------------------------------

    def model_config(self, cfg: TrainConfig, task_cfg: Any, info: Mapping[str, Any]) -> dict:
        """G's saved config for this run (what checkpoints and ``models/generator`` store)."""
        raise NotImplementedError

    def build_models(
        self, cfg: TrainConfig, task_cfg: Any, mcfg: dict, info: Mapping[str, Any]
    ) -> tuple[nn.Module, dict[str, nn.Module]]:
        """A fresh ``G`` and its discriminators ``{name: D}`` (seed the global RNG first)."""
        raise NotImplementedError

    def make_step(self, ctx: StepContext) -> TaskStep:
        """The task's training step over the loop's models and optimisers."""
        raise NotImplementedError

    def unpaired(self, task_cfg: Any) -> bool:
        """Whether the loader draws the A and B images of a batch independently."""
        return False

    def grid_inputs(
        self, first_batch: Callable[[int], dict[str, Any]], seed: int, cfg: TrainConfig, task_cfg
    ) -> dict[str, Tensor]:
        """The fixed inputs of the sample grid (stored in checkpoints); ``first_batch(n)``
        gives the first ``n`` train samples of epoch 0, for tasks that show inputs."""
        raise NotImplementedError

    def grid_images(self, G: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """The sample grid's images, ``[N, C, H, W]`` on the CPU in [-1, 1]."""
        raise NotImplementedError

    def make_probe(
        self, task_cfg: Any, featurize_dir: Path, shards: str | Path, num_images: int, seed: int
    ) -> Probe:
        """The in-training probe on ``num_images`` images (see :mod:`ganlib.training.probe`)."""
        raise NotImplementedError

    # -- evaluation ------------------------------------------------------------------------

    def evaluate(
        self,
        generator_dir: Path,
        shards: str | Path,
        featurize_dir: Path,
        params: Params,
        out: Path,
    ) -> dict[str, Any]:
        """The evaluate stage: ``eval/metrics.json`` (with ``protocol``, ``protocol_hash``,
        ``generator_step`` and ``promotion``, the :attr:`promotion_metric`'s value); writes
        ``out/samples.png`` and ``out/sheets/``. Runs :attr:`evaluator`'s ``evaluate``.
        ``shards`` is a local shard root or a URL (the published set)."""
        module = importlib.import_module(self.evaluator)
        return module.evaluate(generator_dir, shards, featurize_dir, params, out)

    def headline(self, metrics: Mapping[str, Any]) -> str:
        """The evaluation in one line."""
        raise NotImplementedError

    def versus(self, metrics: Mapping[str, Any]) -> str:
        """The headline numbers next to their baseline or floor, in words (the registered
        version's description)."""
        raise NotImplementedError

    def usage(self, model_uri: str) -> str:
        """How to call the registered model, as a Python snippet (:attr:`example_call`)."""
        return f'model = mlflow.pyfunc.load_model("{model_uri}")\n{self.example_call}'

    # -- the registered model --------------------------------------------------------------

    def signature(self, meta: Mapping[str, Any]) -> ModelSignature:
        """The pyfunc's input and output schema (``meta`` of the exported generator)."""
        raise NotImplementedError

    def input_example(self, meta: Mapping[str, Any]) -> pd.DataFrame:
        """A two-row example request."""
        raise NotImplementedError

    def predict(
        self,
        G: nn.Module,
        meta: Mapping[str, Any],
        frame: pd.DataFrame,
        limits: Limits | None = None,
    ) -> np.ndarray:
        """The pyfunc's and CLI's ``predict``: ``uint8 [N, H, W, C]``; one-line GanlibErrors
        for bad input and for requests over ``limits`` (by default :attr:`limits`)."""
        raise NotImplementedError


class ImageTask(Task):
    """What the image-to-image tasks share: their checks (no generation-only settings; a
    PatchGAN needs 24 pixels) and an example request of PNG images."""

    wrong_fields: ClassVar[str]  # the one-line error for shards of other fields
    limits = Limits(max_rows=64)

    def check(self, cfg: TrainConfig, task_cfg: Any, info: Mapping[str, Any]) -> None:
        for key in ("augment", "r1_gamma", "r2", "gp_weight", "conditional", "schedule"):
            default = getattr(TrainConfig(), key)
            if getattr(cfg, key) != default:
                raise GanlibError(f"train.{key}: applies to task: generation only; remove it")
        if cfg.loss == "rpgan":
            raise GanlibError(
                "train.loss: rpgan pairs real and generated images of generation; use "
                "nonsaturating, hinge, lsgan or wgan"
            )
        if cfg.d_steps != 1:
            raise GanlibError(
                "train.d_steps: image-to-image tasks take one D step per G step; set 1"
            )
        if info["resolution"] < 24:
            raise GanlibError(
                f"data.resolution: {info['resolution']} is too small for the PatchGAN "
                "discriminator of image-to-image tasks; use at least 24 (64 recommended)"
            )
        if tuple(info["fields"]) != self.fields:
            raise GanlibError(self.wrong_fields)

    def example_image(self, meta: Mapping[str, Any]) -> bytes:
        """A ``resolution``-sided ramp as PNG bytes, the example requests' image."""
        import numpy as np

        from ganlib.data.images import encode_png

        R, C = int(meta["resolution"]), int(meta["channels"])
        ramp = np.linspace(0, 255, R * R * C).astype(np.uint8).reshape(R, R, C)
        return encode_png(ramp)
