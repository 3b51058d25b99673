"""Hostile input for the served model (issue 17): seeds that are not integers in [0, 2**63),
requests over the model's per-request bounds (rows, pixels per image, pixels per request) and
images whose header declares more pixels than the model takes, through the pyfunc the scoring
server runs (400) and ``ganlib sample|inpaint|translate`` (exit 2).

The models are the tiny ones of tests/test_registry.py, logged (two registered) once for the
module on a real MLflow store. Oversized images are PNG headers without pixels: a request
refused from the headers costs nothing, and one decoded anyway would fail another way
("truncated").
"""

# The tables keep one row per line, however long its expected message.
# ruff: noqa: E501

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.pyfunc.scoring_server import infer_and_parse_data

from ganlib.artifacts import load_generator
from ganlib.errors import GanlibError
from ganlib.registry import log_generator, register_generator
from ganlib.sampling import generate
from tests.data.test_images import png_header_only
from tests.hostile.harness import cli, expect, predict, row
from tests.test_registry import P1, Store, export_image_model, png
from tests.test_sampling import tiny_generator

SMALL = {"max_rows": 3, "max_pixels": 40 * 40, "max_total_pixels": 3100}  # "small" models' limits
BOUND = r"pixels, more than the 4194304 per image this model takes; downscale it"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory) -> dict[str, Path]:
    """Exported generator directories: ``uncond``, ``cond`` (3 classes), ``inpaint``, ``p2p``."""
    root = tmp_path_factory.mktemp("exported")
    return {
        "uncond": store.uncond,
        "cond": store.cond,
        "inpaint": export_image_model(root / "inpaint", "inpainting"),
        "p2p": export_image_model(root / "p2p", "translation", "paired"),
    }


@pytest.fixture(scope="module")
def models(store, exported) -> dict[str, object]:
    """Their pyfuncs with the default limits; ``uncond-small`` registered under :data:`SMALL`,
    ``p2p-small`` the logged ``p2p`` loaded with them (the pyfunc's ``model_config`` either
    way). Only the models that CLI rows name as ``models:/`` are registered; the rest logged."""

    def load(logged_uri: str, **kwargs):
        model_id = logged_uri.removeprefix("models:/")
        location = store.client.get_logged_model(model_id).artifact_location
        return mlflow.pyfunc.load_model(location, **kwargs)

    out = {}
    for name, directory in [*exported.items(), ("uncond-small", exported["uncond"])]:
        if name in ("inpaint", "uncond-small"):
            uri = register_generator(
                store.client, store.run_id, directory, model_name=name, score=1.0,
                protocol_hash=P1, limits=SMALL if name == "uncond-small" else None,
            )["logged_model_uri"]  # fmt: skip
        else:
            uri = log_generator(store.client, store.run_id, directory)
        out[name] = load(uri)
        if name == "p2p":
            out["p2p-small"] = load(uri, model_config=SMALL)
    return out


# -- the pyfunc: what the scoring server answers ----------------------------------------------


def seeds(*values) -> Callable:
    return lambda model: pd.DataFrame({"seed": list(values)})


def labelled(seed_values, label_values) -> Callable:
    return lambda model: pd.DataFrame({"seed": seed_values, "label": label_values})


def served(columns: list[str], data: list[list]) -> Callable:
    """The frame ``mlflow models serve`` makes of a JSON body, with MLflow's own parser."""
    body = {"dataframe_split": {"columns": columns, "data": data}}
    return lambda model: infer_and_parse_data(body, model.metadata.get_input_schema())


def image(side: tuple[int, int] = (32, 32), channels: int = 3) -> bytes:
    return png(np.random.default_rng(side).integers(0, 256, (*side, channels), dtype=np.uint8))


def hole(side: tuple[int, int] = (32, 32)) -> bytes:
    mask = np.zeros((*side, 1), np.uint8)
    mask[side[0] // 4 : side[0] // 2, side[1] // 4 : side[1] // 2] = 255
    return png(mask)


def pairs(images: list[bytes], masks: list[bytes] | None = None) -> Callable:
    return lambda model: pd.DataFrame({"image": images, "mask": masks or [hole()] * len(images)})


def pictures(images: list[bytes]) -> Callable:
    return lambda model: pd.DataFrame({"image": images})


HEADER_5000 = png_header_only(5000, 5000)  # 25 Mpx: over the default 2048 x 2048
HEADER_2048 = png_header_only(2048, 2048)  # at the bound, but 5 of them are over the total

PREDICT_ROWS = [
    # seeds: integers in [0, 2**63), each its own noise
    row("uncond", seeds(0, 1), 0, None, id="seeds"),
    row("uncond", seeds(2**63 - 1), 0, None, id="largest-seed"),
    row("uncond", seeds(2**32, 2**32 + 1), 0, None, id="seeds-past-2**32"),
    row("uncond", seeds(2.0), 0, None, id="integral-float-seed"),
    row("uncond", seeds(), 0, None, id="no-rows"),
    row("uncond", lambda m: pd.DataFrame({"seed": np.array([2**63], dtype=np.uint64)}), 400, r"^seed: row 0 is 9223372036854775808, outside \[0, 2\*\*63\)$", id="seed-2**63"),
    row("uncond", seeds(-1), 400, r"^seed: row 0 is -1, outside \[0, 2\*\*63\)$", id="negative-seed"),
    row("uncond", seeds(1.5), 400, r"^seed: row 0 is 1.5 \(float\), not an integer; seeds are integers in \[0, 2\*\*63\)$", id="fractional-seed"),
    row("uncond", seeds("5"), 400, r"^seed: row 0 is '5' \(str\), not an integer", id="string-seed"),
    row("uncond", seeds(True), 400, r"^seed: row 0 is True \(bool\), not an integer", id="bool-seed"),
    row("uncond", seeds(0, float("nan")), 400, r"^seed: row 1 is nan \(float\), not an integer", id="nan-seed"),
    row("uncond", seeds(float(2**60)), 400, r"^seed: row 0 is 1.152921504606847e\+18, a float too large to be an exact integer", id="huge-float-seed"),
    # the same values as the scoring server parses them from JSON (it casts a long column:
    # 2**63 became -2**63, 1.5 became 1; the column is Any, so they arrive as sent)
    row("uncond", served(["seed"], [[2**63 - 1]]), 0, None, id="json-largest-seed"),
    row("uncond", served(["seed"], [[2**63]]), 400, r"^seed: row 0 is 9223372036854775808, outside", id="json-seed-2**63"),
    row("uncond", served(["seed"], [[2**64]]), 400, r"^seed: row 0 is 18446744073709551616, outside", id="json-seed-2**64"),
    row("uncond", served(["seed"], [[1.5]]), 400, r"^seed: row 0 is 1.5 \(float\), not an integer", id="json-fractional-seed"),
    row("uncond", served(["seed"], [["5"]]), 400, r"^seed: row 0 is '5' \(str\), not an integer", id="json-string-seed"),
    row("uncond", served(["seed"], [[True]]), 400, r"^seed: row 0 is True \(bool\), not an integer", id="json-bool-seed"),
    row("uncond", served(["seed"], [[3], [None]]), 400, r"^seed: row 1 is nan \(float\), not an integer", id="json-missing-seed"),
    row("cond", served(["seed", "label"], [[0, 1.5]]), 400, r"^label: row 0 is 1.5 \(float\), not an integer; labels are classes 0..2$", id="json-fractional-label"),
    row("cond", labelled([0], [True]), 400, r"^label: row 0 is True \(bool\), not an integer", id="bool-label"),
    row("cond", labelled([0, 1], [2, 0]), 0, None, id="labels"),
    # rows per request
    row("uncond", seeds(*range(1025)), 400, r"^1025 rows in one request, more than the 1024 this model takes; send at most 1024 per request$", id="1025-seeds"),
    row("uncond-small", seeds(0, 1, 2), 0, None, id="small-3-seeds"),
    row("uncond-small", seeds(0, 1, 2, 3), 400, r"^4 rows in one request, more than the 3 this model takes", id="small-4-seeds"),
    row("inpaint", pairs([image()] * 65), 400, r"^65 rows in one request, more than the 64 this model takes", id="inpaint-65-rows"),
    row("p2p", pictures([image()] * 65), 400, r"^65 rows in one request, more than the 64 this model takes", id="translate-65-rows"),
    # pixels per image and per request, from the header
    row("inpaint", pairs([image(), image()]), 0, None, id="inpaint"),
    row("inpaint", pairs([HEADER_5000]), 400, rf"^row 0: image: 5000x5000 {BOUND}$", id="inpaint-5000x5000"),
    row("inpaint", pairs([image()], [HEADER_5000]), 400, rf"^row 0: mask: 5000x5000 {BOUND}$", id="inpaint-mask-5000x5000"),
    row("inpaint", pairs([image(), png_header_only(10_000, 10_000)]), 400, rf"^row 1: image: over 89478485 {BOUND}$", id="inpaint-pillow-bomb-warning"),
    row("inpaint", pairs([png_header_only(20_000, 20_000)]), 400, rf"^row 0: image: over 178956970 {BOUND}$", id="inpaint-pillow-bomb-error"),
    row("inpaint", pairs([HEADER_2048] * 5), 400, r"^20971520 pixels in the request's 5 images, more than the 16777216 per request this model takes; send fewer or smaller images per request$", id="inpaint-5x2048x2048"),
    row("p2p", pictures([image()]), 0, None, id="translate"),
    row("p2p", pictures([png_header_only(9000, 9000)] * 10), 400, rf"^image: row 0: 9000x9000 {BOUND}$", id="translate-10x9000x9000"),
    row("p2p", pictures([HEADER_2048] * 5), 400, r"^20971520 pixels in the request's 5 images, more than the 16777216 per request", id="translate-5x2048x2048"),
    row("p2p-small", pictures([image()] * 2), 0, None, id="small-2x32x32"),
    row("p2p-small", pictures([image((48, 48))]), 400, r"^image: row 0: 48x48 pixels, more than the 1600 per image this model takes", id="small-48x48"),
    row("p2p-small", pictures([image((40, 40))] * 2), 400, r"^3200 pixels in the request's 2 images, more than the 3100 per request", id="small-2x40x40"),
    row("p2p-small", pictures([image()] * 4), 400, r"^4 rows in one request, more than the 3 this model takes", id="small-4-rows"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "code", "line"), PREDICT_ROWS)
def test_pyfunc(models, name, make, code, line):
    model = models[name]
    expect(predict(model, make(model)), code, line)


def test_limits_are_stored_with_the_model_and_bad_ones_refused(models, store, exported):
    defaults = {"max_rows": 1024, "max_pixels": 2048 * 2048, "max_total_pixels": 4096 * 4096}
    assert models["uncond"].model_config == defaults
    assert models["inpaint"].model_config == {**defaults, "max_rows": 64}
    assert models["uncond-small"].model_config == SMALL
    before = store.client.get_run(store.run_id).outputs.model_outputs
    for limits, message in (({"rows": 5}, "limits: unknown key 'rows'; known: max_rows"),
                            ({"max_rows": 0}, "limits: max_rows must be a positive integer")):  # fmt: skip
        with pytest.raises(GanlibError, match=message):
            register_generator(
                store.client, store.run_id, exported["uncond"], model_name="bad", score=1.0,
                protocol_hash=P1, limits=limits,
            )  # fmt: skip
    assert store.client.get_run(store.run_id).outputs.model_outputs == before  # nothing logged


# -- seeds: distinct noise for every seed, and the images of old below 2**32 ------------------


def test_seeds_below_2_32_keep_their_images_and_larger_ones_are_their_own():
    G = tiny_generator(channels=3)
    with torch.no_grad():
        for seed in (0, 5, 2**32 - 1):  # torch's mt19937 seeded with the seed, as always
            z = torch.randn(1, 8, generator=torch.Generator().manual_seed(seed))
            old = ((G.eval()(z) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
            assert np.array_equal(generate(G, G.config, [seed]), old.numpy())
        big = 2**40 + 7  # numpy's PCG64 of the whole integer
        z = torch.from_numpy(np.random.default_rng(big).standard_normal(8, dtype=np.float32))
        new = ((G(z[None]) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert np.array_equal(generate(G, G.config, [big]), new.numpy())
    for s in (0, 5, 2**31, 2**62):
        a, b = generate(G, G.config, [s, s + 2**32])
        assert not np.array_equal(a, b), s  # torch alone gave one image
    assert not np.array_equal(*generate(G, G.config, [2**63 - 1, 2**32 - 1]))  # one, for torch


# -- the CLI -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("files")
    out = {
        "big": HEADER_5000,
        "small": image(),
        "mask": hole(),
        "bomb": png_header_only(20_000, 20_000),
    }
    for name, data in out.items():
        (root / f"{name}.png").write_bytes(data)
    return {name: str(root / f"{name}.png") for name in out}


CLI_ROWS = [
    row("sample", ["--model", "uncond", "--seed", str(2**63 - 1), "-n", "1"], 0, None, id="sample-largest-seed"),
    row("sample", ["--model", "uncond", "--seed", str(2**63 - 1), "-n", "2"], 2, r"^error: --seed: seeds must be in \[0, 2\*\*63\), got 9223372036854775807..9223372036854775808$", id="sample-past-2**63"),
    row("sample", ["--model", "uncond", "--seed", "-1"], 2, r"^error: --seed: seeds must be in \[0, 2\*\*63\), got -1..62$", id="sample-negative-seed"),
    row("sample", ["--model", "models:/uncond-small@champion", "-n", "7"], 0, None, id="sample-registered-past-max-rows"),
    row("inpaint", ["--model", "inpaint", "--image", "small", "--mask", "random"], 0, None, id="inpaint-random-mask"),
    row("inpaint", ["--model", "inpaint", "--image", "big", "--mask", "random"], 2, rf"^error: .*big.png: 5000x5000 {BOUND}$", id="inpaint-random-mask-5000x5000"),
    row("inpaint", ["--model", "inpaint", "--image", "bomb", "--mask", "random"], 2, rf"^error: .*bomb.png: over 178956970 {BOUND}$", id="inpaint-random-mask-bomb"),
    row("inpaint", ["--model", "inpaint", "--image", "big", "--mask", "mask"], 2, rf"^error: row 0: image: 5000x5000 {BOUND}$", id="inpaint-5000x5000"),
    row("inpaint", ["--model", "models:/inpaint@champion", "--image", "big", "--mask", "mask"], 2, rf"^error: models:/inpaint@champion: row 0: image: 5000x5000 {BOUND}$", id="inpaint-registered-5000x5000"),
    row("translate", ["--model", "p2p", "--image", "small"], 0, None, id="translate"),
    row("translate", ["--model", "p2p", "--image", "big"], 2, rf"^error: image: row 0: 5000x5000 {BOUND}$", id="translate-5000x5000"),
]  # fmt: skip


@pytest.mark.parametrize(("command", "args", "code", "line"), CLI_ROWS)
def test_cli(models, store, exported, files, tmp_path, command, args, code, line):
    names = {**{k: str(v) for k, v in exported.items()}, **files}
    argv = [command, *(names.get(a, a) for a in args), "--out", str(tmp_path / "out.png")]
    if any(a.startswith("models:/") for a in args):
        argv += ["--tracking-uri", store.uri]
    expect(cli(*argv), code, line)


def test_registered_sampling_past_max_rows_gives_the_images_of_one_request(models, store, tmp_path):
    out = tmp_path / "seeds.npy"
    argv = ["sample", "--model", "models:/uncond-small@champion", "-n", "7", "--seed", "40",
            "--out", str(out), "--tracking-uri", store.uri]  # fmt: skip
    expect(cli(*argv), 0)
    G, meta = load_generator(store.uncond)
    assert np.array_equal(np.load(out), generate(G, meta["model_config"], range(40, 47)))
