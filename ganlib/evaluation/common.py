"""What the evaluators share: loading the exported generator and checking that it fits the
task and the shards before anything is measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ganlib.artifacts import load_generator
from ganlib.data.shards import dataset_info
from ganlib.errors import GanlibError


def load_task_generator(
    generator_dir: Path, shards: str | Path, task: str, what: str
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """``(G, meta, dataset info)`` of the generator ``task`` (a name of
    :data:`ganlib.tasks.TASKS`) evaluates; one-line errors for a generator of another task
    (``what`` names the expected kind, e.g. "an inpainting one") or of other channels or
    resolution."""
    G, meta = load_generator(generator_dir)
    if meta["task"] != task:
        raise GanlibError(
            f"{generator_dir}: a {meta['task']} generator, not {what}; "
            f"re-run the train stage with task: {task}"
        )
    info = dataset_info(shards)
    if (meta["channels"], meta["resolution"]) != (info["channels"], info["resolution"]):
        raise GanlibError(
            f"{generator_dir}: the generator was trained on {meta['channels']}-channel "
            f"{meta['resolution']}px images, the shards hold {info['channels']}-channel "
            f"{info['resolution']}px; re-run the train stage"
        )
    return G, meta, info
