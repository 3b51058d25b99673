"""Featurize and evaluate for translation on tiny real shards: the target-domain reference,
the identity baseline, both CycleGAN directions, data without pairs, and bad inputs."""

import itertools
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ganlib.artifacts import export_generator, load_extractor
from ganlib.config import DataConfig, EvalConfig, FeaturizeConfig, TranslationConfig
from ganlib.data.loader import iter_split
from ganlib.data.pixels import quantize
from ganlib.data.records import Sample
from ganlib.data.shards import write_shards
from ganlib.data.sources import open_source
from ganlib.errors import GanlibError
from ganlib.evaluation.translation import evaluate_translator, translation_metrics
from ganlib.featurize import featurize
from ganlib.metrics.fidelity import image_scores
from ganlib.metrics.generation import fid_from_stats, mean_cov
from ganlib.metrics.reference import compute_features, load_reference
from ganlib.models.cyclegan import CycleGenerators
from ganlib.models.unet import UNetGenerator

R = 32  # pixels
EVAL = EvalConfig(batch_size=16)
ALL = 10_000  # eval_images above any val split here: every val image is scored


def demo_samples(n: int):
    return itertools.islice(
        open_source(DataConfig(source="builtin:photos2art", resolution=R, channels=3)), n
    )


def shards_of(samples, root):
    write_shards(samples, root, shard_size=64, val_fraction=0.3, classes=None, progress=False)
    return root


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """About 45 val pairs of the photos2art demo, and their featurize directory."""
    root = tmp_path_factory.mktemp("paired")
    shards = shards_of(demo_samples(150), root / "shards")
    featurize(FeaturizeConfig(kind="random"), shards, root / "featurize", seed=0)
    return shards, root / "featurize"


@pytest.fixture(scope="module")
def unpaired(tmp_path_factory):
    """Two independent domains, as unpaired folders give: each sample holds one image."""
    root = tmp_path_factory.mktemp("unpaired")
    samples = [
        Sample(f"{'AB'[i % 2]}-{s.key}", {f"{'ab'[i % 2]}.png": s.images[f"{'ab'[i % 2]}.png"]},
               None, s.origin)
        for i, s in enumerate(demo_samples(240))
    ]  # fmt: skip
    shards = shards_of(samples, root / "shards")
    featurize(FeaturizeConfig(kind="random"), shards, root / "featurize", seed=0)
    return shards, root / "featurize"


def export_translator(directory, mode: str, resolution: int = R):
    torch.manual_seed(0)
    G = UNetGenerator(3, 3, width=4, resolution=resolution) if mode == "paired" else (
        CycleGenerators(3, width=4, n_blocks=1))  # fmt: skip
    state = {"G_ema": G.state_dict(), "model_config": G.config, "task": "translation",
             "task_config": {"mode": mode}, "resolution": resolution, "channels": 3,
             "classes": None, "step": 7, "identity": "test"}  # fmt: skip
    return G.eval(), export_generator(state, directory)


def val_domain(shards, field):
    return torch.cat([b[field[0]] for b in iter_split(shards, "val", 64, fields=(field,))])


# -- featurize: the reference is the target domain ----------------------------------------------


def test_featurize_of_translation_shards_references_domain_b(paired, unpaired):
    for shards, featurize_dir in (paired, unpaired):
        meta = json.loads((featurize_dir / "extractor.json").read_text())
        assert meta["reference_field"] == "b.png"
        extractor, _ = load_extractor(featurize_dir)
        ref = load_reference(featurize_dir / "reference.npz")
        train_b = [b["b"] for b in iter_split(shards, "train", 64, fields=("b.png",))]
        train_a = [b["a"] for b in iter_split(shards, "train", 64, fields=("a.png",))]
        feats_b = compute_features(extractor, train_b)
        assert ref.num_samples == len(feats_b)
        np.testing.assert_allclose(ref.mu, feats_b.mean(axis=0), rtol=1e-5)
        assert not np.allclose(ref.mu, compute_features(extractor, train_a).mean(axis=0))


# -- evaluate ---------------------------------------------------------------------------------


def test_pix2pix_is_scored_against_the_target_domain_and_the_identity(paired, tmp_path):
    shards, featurize_dir = paired
    G, gen = export_translator(tmp_path / "generator", "paired")
    cfg = TranslationConfig(mode="paired", eval_images=ALL)
    m = evaluate_translator(gen, shards, featurize_dir, cfg, EVAL, seed=0, out=tmp_path)
    a, b = val_domain(shards, "a.png"), val_domain(shards, "b.png")
    n = len(a)
    assert m["counts"] == {"A": n, "B": n, "pairs": n} and n >= 20
    assert (m["task"], m["mode"], m["generator_step"]) == ("translation", "paired", 7)
    # The identity baseline: the metrics module's numbers for output = input.
    extractor, _ = load_extractor(featurize_dir)
    ref = load_reference(featurize_dir / "reference.npz")
    scores = {k: v.mean().item() for k, v in image_scores(a, b, value_range=(-1, 1)).items()}
    fid_a = fid_from_stats(ref.mu, ref.sigma, *mean_cov(compute_features(extractor, [a])))
    # (rel 1e-5: the stage takes the exact low-rank route, sqrtm rounds at about 1e-6)
    assert m["identity"] == pytest.approx({"AtoB/fid": fid_a["fid"]} | {
        f"AtoB/{k}": v for k, v in scores.items()}, rel=1e-5)  # fmt: skip
    # The translator: translation_metrics on the same pairs, FID of G(a) rounded to 8 bits.
    direct = translation_metrics([{"a": a, "b": b}], G)
    fake_b = quantize(G(a))
    fid_g = fid_from_stats(ref.mu, ref.sigma, *mean_cov(compute_features(extractor, [fake_b])))
    assert m["ganlib"] == pytest.approx({"AtoB/fid": fid_g["fid"]} | {
        f"AtoB/{k}": direct[f"AtoB/{k}"] for k in ("psnr", "ssim", "l1")}, rel=1e-4)  # fmt: skip
    # Flat numbers, the floor (real val B) and the promotion metric.
    assert (m["fid"], m["psnr"], m["identity_fid"]) == (
        m["ganlib"]["AtoB/fid"], m["ganlib"]["AtoB/psnr"], m["identity"]["AtoB/fid"])  # fmt: skip
    assert m["promotion"] == {"metric": "fid", "value": m["fid"]}
    assert 0 < m["floor_fid"] == m["floor"]["fid"] < m["identity_fid"] < m["fid"]
    assert not any("BtoA" in k or "cycle" in k for k in m) and "protocol_BtoA" not in m
    card = m["protocol"]
    assert card["reference_field"] == "b.png" and card["reference_split"] == "train"
    assert (card["num_fake"], card["num_real"]) == (n, ref.num_samples)
    assert len(m["protocol_hash"]) == 16
    json.dumps(m)  # eval/metrics.json
    # Sheets: 8 rows of (input, output, target) at 4x; every output (n < 64), 8 a row.
    assert Image.open(tmp_path / "sheets" / "translation.png").size == (
        (3 * 34 + 2) * 4, (8 * 34 + 2) * 4)  # fmt: skip
    rows = math.ceil(n / 8)
    assert Image.open(tmp_path / "samples.png").size == ((8 * 34 + 2) * 4, (rows * 34 + 2) * 4)


def test_cyclegan_on_the_demo_is_scored_both_ways_against_the_hidden_pairs(paired, tmp_path):
    shards, featurize_dir = paired
    G, gen = export_translator(tmp_path / "generator", "unpaired")
    cfg = TranslationConfig(mode="unpaired", eval_images=ALL)
    m = evaluate_translator(gen, shards, featurize_dir, cfg, EVAL, seed=0, out=tmp_path)
    a, b = val_domain(shards, "a.png"), val_domain(shards, "b.png")
    direct = translation_metrics([{"a": a, "b": b}], G.G_AB, G.G_BA)
    for key in ("AtoB/psnr", "BtoA/psnr", "BtoA/ssim", "cycle/A", "cycle/B"):
        assert m["ganlib"][key] == pytest.approx(direct[key], rel=1e-4)
    assert (m["cycle_A"], m["cycle_B"]) == (m["ganlib"]["cycle/A"], m["ganlib"]["cycle/B"])
    # The metrics are symmetric: one identity number serves both directions.
    assert m["identity"]["BtoA/psnr"] == m["identity"]["AtoB/psnr"] == m["identity_psnr"]
    # B -> A is measured against the val A images, under its own card.
    extractor, _ = load_extractor(featurize_dir)
    a_stats = mean_cov(compute_features(extractor, [a]))
    fid_b = fid_from_stats(*a_stats, *mean_cov(compute_features(extractor, [b])))["fid"]
    assert m["identity_fid_BtoA"] == m["identity"]["BtoA/fid"] == pytest.approx(fid_b, rel=1e-5)
    assert m["fid_BtoA"] == m["ganlib"]["BtoA/fid"] > 0
    card = m["protocol_BtoA"]
    assert (card["reference_split"], card["reference_field"]) == ("val", "a.png")
    assert card["num_real"] == card["num_fake"] == len(a)
    assert m["protocol_hash_BtoA"] != m["protocol_hash"]
    # (input, output, target) for A -> B and B -> A side by side.
    assert Image.open(tmp_path / "sheets" / "translation.png").size[0] == (6 * 34 + 2) * 4


def test_unpaired_data_has_no_ground_truth_scores(unpaired, tmp_path):
    shards, featurize_dir = unpaired
    _, gen = export_translator(tmp_path / "generator", "unpaired")
    cfg = TranslationConfig(mode="unpaired", eval_images=21)
    m = evaluate_translator(gen, shards, featurize_dir, cfg, EVAL, seed=0, out=tmp_path)
    assert m["counts"] == {"A": 21, "B": 21, "pairs": 0}  # eval_images per domain
    assert sorted(m["ganlib"]) == ["AtoB/fid", "BtoA/fid", "cycle/A", "cycle/B"]
    assert sorted(m["identity"]) == ["AtoB/fid", "BtoA/fid"]
    assert "psnr" not in m and "identity_psnr" not in m and m["fid"] > 0
    again = evaluate_translator(gen, shards, featurize_dir, cfg, EVAL, seed=0, out=tmp_path)
    assert again == m  # the subset is drawn from the seed
    assert (tmp_path / "sheets" / "translation.png").is_file()


def test_bad_inputs_are_one_line_errors(paired, unpaired, tmp_path):
    shards, featurize_dir = paired
    _, gen = export_translator(tmp_path / "generator", "paired")
    cfg = TranslationConfig(mode="paired")

    def evaluate(gen=gen, shards=shards, featurize_dir=featurize_dir, cfg=cfg):
        return evaluate_translator(gen, shards, featurize_dir, cfg, EVAL, seed=0, out=tmp_path)

    with pytest.raises(GanlibError, match="trained with translation.mode: paired, but params"):
        evaluate(cfg=TranslationConfig(mode="unpaired"))
    _, big = export_translator(tmp_path / "big", "paired", resolution=64)
    with pytest.raises(GanlibError, match="trained on 3-channel 64px images, the shards hold"):
        evaluate(gen=big)
    # A featurize directory whose reference is not domain B (e.g. from before this task).
    stale = tmp_path / "stale"
    shutil.copytree(featurize_dir, stale)
    meta = json.loads((stale / "extractor.json").read_text())
    (stale / "extractor.json").write_text(json.dumps(meta | {"reference_field": None}))
    with pytest.raises(GanlibError, match="not of domain B .* re-run the featurize stage"):
        evaluate(featurize_dir=stale)
    tiny = shards_of(demo_samples(40), tmp_path / "tiny")
    with pytest.raises(GanlibError, match=r"holds \d+ images of domain A, fewer than 20"):
        evaluate(shards=tiny)
