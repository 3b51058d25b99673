"""The training loop on the image-to-image tasks: each trains, learns, checkpoints and resumes
exactly, in a plain process on tiny shards."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ganlib.artifacts import export_generator, load_checkpoint, load_generator
from ganlib.config import InpaintingConfig, TrainConfig, TranslationConfig
from ganlib.tasks.inpainting import inpaint
from ganlib.tasks.translation import translate
from ganlib.training.loop import RunSpec, train
from ganlib.training.session import LocalSession

TINY = TrainConfig(
    width=8, batch_size=8, steps=6, ckpt_every=3, log_every=2, sample_every=6, loss="hinge",
    lr_g=1e-3,
)  # fmt: skip
TASKS = {
    "inpainting": InpaintingConfig(),
    "pix2pix": TranslationConfig(mode="paired"),
    "cyclegan": TranslationConfig(mode="unpaired", n_blocks=1, pool_size=4),
}


def spec_for(name, shards, **overrides) -> RunSpec:
    task = "inpainting" if name == "inpainting" else "translation"
    cfg = dataclasses.replace(TINY, **overrides)
    return RunSpec(
        train=cfg, seed=1, shards=str(shards), identity=name, task=task, task_cfg=TASKS[name]
    )


def shards_for(name, request):
    return request.getfixturevalue("photo_shards" if name == "inpainting" else "pair_shards")


def last_state(path):
    return load_checkpoint(sorted(path.glob("checkpoint_*"))[-1])


@pytest.mark.parametrize("name", list(TASKS))
def test_trains_checkpoints_and_exports(name, request, tmp_path):
    shards = shards_for(name, request)
    out = train(spec_for(name, shards), LocalSession(tmp_path / "run", device="cpu"))
    assert out["step"] == 6 and out["diverged_at"] is None
    state = last_state(tmp_path / "run")
    assert state["task"] == ("inpainting" if name == "inpainting" else "translation")
    assert [row["step"] for row in state["history"]] == [2, 4, 6]
    extra = {"inpainting": "loss_l1_hole", "pix2pix": "l1", "cyclegan": "cycle_A"}[name]
    assert all(torch.isfinite(torch.tensor(row[extra])) for row in state["history"])
    # the exported generator is the task's model, and runs on an image of another size
    G, meta = load_generator(export_generator(state, tmp_path / "export"))
    assert meta["task"] == state["task"] and meta["resolution"] == 32
    x = torch.rand(1, 3, 40, 52) * 2 - 1
    if name == "inpainting":
        mask = torch.zeros(1, 1, 40, 52)
        mask[..., 10:20, 10:30] = 1
        y = inpaint(G, x, mask)
        assert torch.equal(y[mask.expand_as(y) == 0], x[mask.expand_as(x) == 0])
    else:
        G_AB = G.generator("AtoB") if name == "cyclegan" else G
        y = translate(G_AB, x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("name", list(TASKS))
def test_exact_resume_is_bit_identical(name, request, tmp_path):
    shards = shards_for(name, request)
    straight = train(spec_for(name, shards, steps=8), LocalSession(tmp_path / "a", device="cpu"))
    train(spec_for(name, shards, steps=4, ckpt_every=4), LocalSession(tmp_path / "b", device="cpu"))
    resumed = train(spec_for(name, shards, steps=8), LocalSession(tmp_path / "b", device="cpu"))
    for key in ("G", "D", "G_ema"):
        a, b = straight[key].state_dict(), resumed[key].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), key


def test_inpainting_learns_to_fill(photo_shards, tmp_path):
    """60 steps bring the hole L1 of fixed val masks (the in-training probe) below the untrained
    generator's."""
    from ganlib.models import build_generator
    from ganlib.tasks.inpainting import HoleL1Probe

    probe = HoleL1Probe(photo_shards, TASKS["inpainting"], num_images=16, seed=0)
    out = train(
        spec_for("inpainting", photo_shards, steps=60, log_every=10, ckpt_every=60),
        LocalSession(tmp_path, device="cpu"),
    )
    torch.manual_seed(1)  # the loop's initial weights
    untrained = build_generator(out["G"].config)
    assert out["diverged_at"] is None
    assert probe(out["G_ema"]) < probe(untrained)


def test_pix2pix_learns_the_mapping(pair_shards, tmp_path):
    train(
        spec_for("pix2pix", pair_shards, steps=60, log_every=10, ckpt_every=60),
        LocalSession(tmp_path, device="cpu"),
    )
    rows = last_state(tmp_path)["history"]
    assert sum(r["l1"] for r in rows[-2:]) < 0.7 * sum(r["l1"] for r in rows[:2])
