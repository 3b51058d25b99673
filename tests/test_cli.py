"""``ganlib sample``: the same pixels from a registered model, an exported generator and a
checkpoint; where the tracking URI comes from; one-line errors. (``ganlib shards info`` is
tested in tests/test_repo.py; damaged exports in tests/hostile/test_exports.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ganlib.artifacts import save_checkpoint
from ganlib.cli import main
from tests.test_registry import Store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """A store whose ``uncond`` model's champion is the exported ``store.uncond``."""
    store = Store(tmp_path_factory.mktemp("mlflow"))
    store.register("uncond", fid=10.0)
    return store


@pytest.fixture
def no_env_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def sample(tmp_path, model, *args) -> np.ndarray:
    out = tmp_path / f"{len(list(tmp_path.glob('*.npy')))}.npy"
    assert main(["sample", "--model", str(model), "--out", str(out), *args]) == 0
    return np.load(out)


def test_registry_export_and_checkpoint_give_the_same_pixels(store, tmp_path, no_env_uri):
    local = sample(tmp_path, store.uncond, "-n", "5", "--seed", "3")
    assert local.shape == (5, 32, 32, 1) and local.dtype == np.uint8
    registered = sample(
        tmp_path, "models:/uncond@champion", "-n", "5", "--seed", "3", "--tracking-uri", store.uri
    )
    assert np.array_equal(registered, local)
    assert np.array_equal(sample(tmp_path, "models:/uncond/1", "-n", "1", "--seed", "4",
                                 "--tracking-uri", store.uri)[0], local[1])  # fmt: skip
    # a training checkpoint holding the same G_ema
    weights = torch.load(store.uncond / "generator.pt", weights_only=True)
    config = json.loads((store.uncond / "config.json").read_text())
    save_checkpoint({"G_ema": weights, **config}, tmp_path / "ckpt")
    assert np.array_equal(sample(tmp_path, tmp_path / "ckpt", "-n", "5", "--seed", "3"), local)


def test_png_grid(store, tmp_path, capsys):
    out = tmp_path / "sub" / "grid.png"
    argv = ["sample", "--model", str(store.uncond), "-n", "6", "--nrow", "4", "--out", str(out)]
    assert main(argv) == 0
    image = Image.open(out)
    assert image.size == (4 * 34 + 2, 2 * 34 + 2) and image.mode == "L"  # 32 px + 2 px pad
    assert "6 images 32x32x1" in capsys.readouterr().out


def test_tracking_uri_comes_from_env_then_params_yaml(
    store, tmp_path, monkeypatch, capsys, no_env_uri
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"mlflow": {"tracking_uri": store.uri}}))
    assert sample(tmp_path, "models:/uncond@champion", "-n", "2").shape == (2, 32, 32, 1)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the env var wins
    assert main(["sample", "--model", "models:/uncond@champion", "--out", "x.npy"]) == 2
    assert "http://127.0.0.1:9 is unreachable" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "models:/nope@champion"], "models:/nope@champion: Registered Model"),
        (["--model", "models:/uncond@nope"], "alias nope not found"),
        (["--model", "models:/uncond/7"], "Model Version (name=uncond, version=7) not found"),
        (["--model", "missing-dir"], "--model: missing-dir is not models:/NAME@ALIAS"),
        (["-n", "0"], "-n: must be at least 1, got 0"),
        (["--nrow", "0"], "--nrow: must be at least 1, got 0"),
        (["--out", "grid.jpg"], "--out: grid.jpg must be a file ending in .png"),
        (["--out", "."], "--out: . must be a file ending in .png"),
        (["-n", "1000000000"], "-n: at most 65536 images per call, got 1000000000"),
        (["--seed", str(2**64)], "--seed: seeds must be in [0, 2**63)"),
        (["--seed", "-1"], "--seed: seeds must be in [0, 2**63)"),
        (["--label", "1"], "label: this generator is unconditional"),
        (["--model", "models:/uncond@champion", "--label", "1"], "generator is unconditional"),
    ],
)
def test_errors_are_one_line_and_exit_2(store, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    argv = ["sample", "--model", str(store.uncond), "--out", "x.npy", "--tracking-uri", store.uri]
    assert main(argv + args) == 2  # the later --model / --out win
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npy").exists()
