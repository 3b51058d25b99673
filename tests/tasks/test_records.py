"""The task records (ganlib.tasks.TASKS): one per value of ``task``, each owning its section,
its metric names and its evaluator."""

from __future__ import annotations

import dataclasses
import importlib
import typing
from pathlib import Path

import pytest
import torch

from ganlib.config import InpaintingConfig, Params, TrainConfig, TranslationConfig
from ganlib.errors import GanlibError
from ganlib.tasks import TASKS, get_task
from ganlib.training.loop import plain_step
from ganlib.training.step import TaskStep

VARIANTS = {  # every task variant with a tiny training config
    "generation": (TrainConfig(width=8, z_dim=8, batch_size=4), None),
    "inpainting": (TrainConfig(width=4, batch_size=2), InpaintingConfig()),
    "pix2pix": (TrainConfig(width=4, batch_size=2), TranslationConfig(mode="paired")),
    "cyclegan": (
        TrainConfig(width=4, batch_size=2),
        TranslationConfig(mode="unpaired", n_blocks=1, pool_size=2),
    ),
}


def task_of(variant: str):
    return get_task({"pix2pix": "translation", "cyclegan": "translation"}.get(variant, variant))


def test_every_task_value_has_a_record_and_its_section():
    names = typing.get_args(typing.get_type_hints(Params)["task"])
    assert set(names) == set(TASKS)
    sections = {f.name for f in dataclasses.fields(Params)}
    for name, task in TASKS.items():
        assert task.name == name
        assert task.section is None or task.section in sections
        params = Params.from_dict({"task": name})
        assert task.config(params) is (getattr(params, task.section) if task.section else None)
    with pytest.raises(GanlibError, match="unknown task 'superres'"):
        get_task("superres")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_record_says_how_to_call_its_registered_model(name):
    """The snippet of the version description is Python that loads the model and predicts."""
    snippet = TASKS[name].usage("models:/m/3")
    compile(snippet, "usage", "exec")
    assert 'mlflow.pyfunc.load_model("models:/m/3")' in snippet and "model.predict(" in snippet
    assert TASKS[name].summary


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_step_logs_no_name_of_the_probe(variant):
    """One metric name, one quantity: what a step logs (history rows, MLflow metrics at every
    logged step) never takes the probe's name, which MLflow gets at the same steps."""
    task, (cfg, task_cfg) = task_of(variant), VARIANTS[variant]
    channels = 1 if variant == "generation" else 3
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.rand(cfg.batch_size, channels, 32, 32, generator=g) * 2 - 1
             for k in ("image", "a", "b")}  # fmt: skip
    batch["label"] = torch.zeros(cfg.batch_size, dtype=torch.long)
    info = {"resolution": 32, "channels": channels, "classes": None}
    step = plain_step(task.name, cfg, task_cfg, info, lambda: batch)
    assert isinstance(step, TaskStep)
    stats = step.step(1, want_log=True)
    assert {"loss_D", "loss_G", "D_real", "D_fake"} <= set(stats)
    assert task.probe_metric not in stats, (task.probe_metric, sorted(stats))
    assert all(torch.isfinite(v) for v in stats.values())


@pytest.mark.parametrize("name", list(TASKS))
def test_each_evaluator_is_imported_by_the_evaluate_stage(name):
    """The record names its evaluator module (training code must not import it); the evaluate
    stage imports every one, so that its DVC deps follow them."""
    from tests.test_repo import ROOT, _closure

    module = importlib.import_module(TASKS[name].evaluator)
    assert callable(module.evaluate)
    assert Path(module.__file__).resolve() in _closure(ROOT / "pipeline" / "evaluate.py")
    assert Path(module.__file__).resolve() not in _closure(ROOT / "pipeline" / "train.py")
