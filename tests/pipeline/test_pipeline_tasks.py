"""End to end, per task: `dvc exp run -S task=...` on a temporary copy runs every stage for
inpainting, pix2pix and CycleGAN, registers a champion, and the CLI uses it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import copy_project
from tests.pipeline.test_pipeline import BIN, sh

TINY_TRAIN = {
    "steps": 6, "width": 8, "batch_size": 8, "ckpt_every": 3, "log_every": 3, "sample_every": 6,
}  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A committed copy whose task profiles train tiny models on 32-pixel images."""
    p = copy_project(tmp_path_factory.mktemp("tasks"))
    path = p / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for task in ("inpainting", "translation"):
        params[task]["data"]["resolution"] = 32
        params[task]["train"].update(TINY_TRAIN)
        params[task]["eval_images"] = 24
    params["translation"]["unpaired"]["train"].update(TINY_TRAIN)
    params["tune"].update(num_samples=2, steps=6, report_every=3, grace_period=3, probe_fakes=16)
    params["translation"]["n_blocks"] = 1
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    assert sh(p, "git", "add", "-A").returncode == 0
    who = ("-c", "user.name=ganlib", "-c", "user.email=ganlib@example.com")
    assert sh(p, "git", *who, "commit", "-qm", "tiny tasks").returncode == 0
    return p


def exp_run(project, *sets):
    args = [a for s in sets for a in ("-S", s)]
    result = sh(project, str(BIN / "dvc"), "exp", "run", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def photo(project, name, size=(40, 36)) -> str:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(project / name)
    return name


def test_inpainting_pipeline(project):
    exp_run(project, "task=inpainting", "inpainting.tune.enabled=true")
    best = yaml.safe_load((project / "tune/best.yaml").read_text())
    assert best["metric"] == "l1_hole" and 0 < best["l1_hole"] < 1  # ASHA ranked by hole L1
    metrics = json.loads((project / "eval/metrics.json").read_text())
    assert metrics["task"] == "inpainting"
    bins = ("0-10", "10-20", "20-30", "30-40", "40-50", "50-100")
    for method in ("ganlib", "biharmonic", "mean_fill"):
        assert set(bins) <= set(metrics["table"][method])
        for row in metrics["table"][method].values():
            assert 0 <= row["l1_hole"] < 1 and row["n"] > 0
    record = json.loads((project / "register/model.json").read_text())
    assert (record["name"], record["alias"], record["metric"]) == (
        "ganlib-inpaint",
        "champion",
        "l1_hole",
    )
    assert record["score"] == pytest.approx(metrics["promotion"]["value"])
    assert (project / "eval/sheets/inpainting.png").is_file()
    out = sh(
        project, str(BIN / "ganlib"), "inpaint", "--model", "models:/ganlib-inpaint@champion",
        "--image", photo(project, "in.png"), "--mask", "random", "--out", "out.png",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert np.asarray(Image.open(project / "out.png")).shape == (40, 36, 3)
    wrong = sh(
        project, str(BIN / "ganlib"), "translate", "--model", "models/generator",
        "--image", "in.png", "--out", "x.png",
    )  # fmt: skip
    assert wrong.returncode == 2 and "is a inpainting model" in wrong.stderr.replace("an ", "a ")


@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_translation_pipeline(project, mode):
    exp_run(project, "task=translation", f"translation.mode={mode}")
    metrics = json.loads((project / "eval/metrics.json").read_text())
    assert (metrics["task"], metrics["mode"]) == ("translation", mode)
    for key in ("fid", "identity_fid", "psnr", "identity_psnr"):
        assert np.isfinite(metrics[key])
    if mode == "unpaired":
        assert np.isfinite(metrics["cycle_A"]) and np.isfinite(metrics["fid_BtoA"])
    name = {"paired": "ganlib-pix2pix", "unpaired": "ganlib-cyclegan"}[mode]
    record = json.loads((project / "register/model.json").read_text())
    assert (record["name"], record["alias"], record["metric"]) == (name, "champion", "fid")
    direction = ["--direction", "BtoA"] if mode == "unpaired" else []
    out = sh(
        project, str(BIN / "ganlib"), "translate", "--model", f"models:/{name}@champion",
        "--image", photo(project, "a.png", (50, 70)), "--out", "b.png", *direction,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert np.asarray(Image.open(project / "b.png")).shape == (50, 70, 3)
    if mode == "paired":
        bad = sh(
            project, str(BIN / "ganlib"), "translate", "--model", f"models:/{name}@champion",
            "--image", "a.png", "--out", "c.png", "--direction", "BtoA",
        )  # fmt: skip
        assert bad.returncode == 2 and "AtoB only" in bad.stderr
        assert "Traceback" not in bad.stderr
