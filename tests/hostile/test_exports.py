"""Hostile exports and registry entries (issue 17), through ``ganlib sample`` and ``ganlib
inpaint``: damaged ``models/generator`` directories (weights cut short, config not JSON or
without ``model_config``, an unknown arch, weights of another width, a width that would ask
for gigabytes), an export of another task, bad ``--out``/``--seed``/``-n``, and a registered
version whose artifacts are gone. Each is one line and exit 2, and writes no output.
"""

# The tables keep one row per line, however long its expected message.
# ruff: noqa: E501

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile.harness import cli, expect, row
from tests.test_registry import Store, export_image_model
from tests.test_sampling import export_tiny


def _truncate(d: Path) -> None:
    (d / "generator.pt").write_bytes((d / "generator.pt").read_bytes()[:100])


def _config(change: Callable[[dict], dict]) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps(change(cfg)))

    return damage


def _model_config(**values) -> Callable[[Path], None]:
    return _config(lambda c: {**c, "model_config": {**c["model_config"], **values}})


def _nothing(d: Path) -> None:
    pass


EXPORTS = [
    row(_nothing, 0, None, id="good export"),
    row(_truncate, 2, r"^error: .*generator.pt: not a readable state dict", id="weights cut short"),
    row(lambda d: (d / "config.json").write_text("{oops"), 2, r"^error: .*config.json: not valid JSON", id="config not JSON"),
    row(_config(lambda c: {k: v for k, v in c.items() if k != "model_config"}), 2, r"^error: .*config.json: no model_config mapping", id="config without model_config"),
    row(_model_config(arch="stylegan9"), 2, r"^error: .*config.json: model_config does not build a generator \(unknown arch 'stylegan9'", id="unknown arch"),
    row(_model_config(width=8), 2, r"^error: .*generator.pt: does not match .*config.json \(.*in the weights, .* by the config\)", id="weights of another width"),
    row(_model_config(width=200_000), 2, r"^error: .*generator.pt: does not match .*config.json", id="a width asking for gigabytes"),
    row(lambda d: (d / "generator.pt").unlink(), 2, r"^error: .*not an exported generator \(needs config.json \+ .pt\)", id="weights missing"),
]  # fmt: skip


@pytest.mark.parametrize(("damage", "code", "line"), EXPORTS)
def test_damaged_exports(tmp_path, damage, code, line):
    gen = export_tiny(tmp_path / "gen")
    damage(gen)
    out = tmp_path / "x.npy"
    expect(cli("sample", "--model", str(gen), "-n", "2", "--out", str(out)), code, line)
    assert out.exists() == (code == 0)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    return {
        "generation": export_tiny(root / "gen"),
        "inpainting": export_image_model(root / "inpaint", "inpainting"),
        "pix2pix": export_image_model(root / "p2p", "translation", "paired"),
    }


ARGS = [
    row("generation", ["-n", "3"], 0, None, id="good sample"),
    row("inpainting", [], 2, r"^error: --model: .* is an export of task inpainting; `ganlib sample` draws from generation .*`ganlib inpaint`", id="inpainting export to sample"),
    row("pix2pix", [], 2, r"^error: --model: .* is an export of task translation; `ganlib sample` draws from generation .*`ganlib translate`", id="pix2pix export to sample"),
    row("generation", ["-n", "1000000000"], 2, r"^error: -n: at most 65536 images per call, got 1000000000", id="n 1e9"),
    row("generation", ["-n", "0"], 2, r"^error: -n: must be at least 1, got 0$", id="n 0"),
    row("generation", ["--seed", str(2**64)], 2, r"^error: --seed: seeds must be in \[0, 2\*\*63\)", id="seed 2**64"),
    row("generation", ["--seed", "-1"], 2, r"^error: --seed: seeds must be in \[0, 2\*\*63\)", id="seed -1"),
    row("generation", ["--out", "DIR"], 2, r"^error: --out: .* must be a file ending in .png \(a grid\) or .npy", id="out is a directory"),
    row("generation", ["--label", "1"], 2, r"^error: label: this generator is unconditional", id="label for an unconditional G"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "args", "code", "line"), ARGS)
def test_sample_arguments(exports, tmp_path, kind, args, code, line):
    out = tmp_path / "x.npy"
    args = [str(tmp_path) if a == "DIR" else a for a in args]
    outcome = cli("sample", "--model", str(exports[kind]), "--out", str(out), *args)
    expect(outcome, code, line)
    assert out.exists() == (code == 0)


def test_inpaint_with_a_random_mask_refuses_a_negative_seed(exports, tmp_path):
    from PIL import Image

    image = tmp_path / "in.png"
    Image.new("RGB", (32, 32)).save(image)
    out = tmp_path / "out.png"
    argv = [
        "inpaint",
        "--model",
        str(exports["inpainting"]),
        "--image",
        str(image),
        "--out",
        str(out),
    ]
    expect(cli(*argv, "--mask", "random", "--seed", "-1"), 2, r"^error: --seed: .*\[0, 2\*\*63\)")
    assert not out.exists()
    expect(cli(*argv, "--mask", "random", "--seed", "3"), 0)
    assert out.is_file()


def test_a_registered_version_whose_artifacts_are_gone(tmp_path):
    """The registry names a model whose files were deleted (a cleaned artifact store): one
    line naming the model and what to do, nothing written."""
    store = Store(tmp_path / "mlflow")
    info = store.register("gone", fid=1.0)
    model_id = info["logged_model_uri"].removeprefix("models:/")
    location = store.client.get_logged_model(model_id).artifact_location
    shutil.rmtree(location.removeprefix("file://"))
    out = tmp_path / "x.npy"
    argv = [
        "sample",
        "--model",
        "models:/gone@champion",
        "--tracking-uri",
        store.uri,
        "--out",
        str(out),
    ]
    expect(cli(*argv), 2, r"^error: models:/gone@champion: .*register it again")
    assert not out.exists()
