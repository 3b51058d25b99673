"""The tune stage's library: search space, trial configs, best.yaml into train, a real sweep."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import yaml

from ganlib.config import Params
from ganlib.errors import GanlibError
from ganlib.tuning import apply_best, search_space, trial_config, write_best, write_trials


def test_search_space_maps_every_kind():
    from ray.tune.search.sample import Categorical, Float, Integer

    p = Params.from_dict(
        {
            "tune": {
                "space": {
                    "lr_g": {"loguniform": [1e-4, 1e-3]},
                    "beta1": {"uniform": [0.0, 0.5]},
                    "loss": {"choice": ["hinge", "lsgan"]},
                    "r1_every": {"randint": [4, 16]},
                    "lr_d": {"grid": [1e-4, 2e-4]},
                }
            }
        }
    )
    space = search_space(p.tune)
    assert isinstance(space["lr_g"], Float) and space["lr_g"].lower == 1e-4
    assert isinstance(space["beta1"], Float) and space["beta1"].upper == 0.5
    assert isinstance(space["loss"], Categorical) and space["loss"].categories == ["hinge", "lsgan"]
    assert isinstance(space["r1_every"], Integer) and space["r1_every"].upper == 17  # inclusive
    assert space["lr_d"] == {"grid_search": [1e-4, 2e-4]}


def test_trial_config_uses_the_global_batch_in_one_process():
    p = Params.from_dict(
        {
            "train": {"batch_size": 16, "num_workers": 2},
            "tune": {"steps": 60, "report_every": 20, "grace_period": 20},
        }
    )
    cfg = trial_config(p, {"lr_g": 5e-4, "loss": "hinge"})
    assert (cfg.batch_size, cfg.num_workers, cfg.steps) == (32, 1, 60)
    assert (cfg.ckpt_every, cfg.lr_g, cfg.loss) == (20, 5e-4, "hinge")
    assert cfg.lr_d == p.train.lr_d  # not searched: as in train:


def test_best_yaml_overrides_train_only_when_enabled(tmp_path):
    path = tmp_path / "best.yaml"
    write_best({"enabled": True, "train": {"lr_g": 3e-4, "loss": "hinge"}, "fid": 1.5}, path)
    base = Params.from_dict({"train": {"steps": 77}})
    tuned = apply_best(base, path)
    assert (tuned.train.lr_g, tuned.train.loss, tuned.train.steps) == (3e-4, "hinge", 77)
    off = Params.from_dict({"tune": {"enabled": False}})
    assert apply_best(off, tmp_path / "missing.yaml") is off


def test_best_yaml_errors(tmp_path):
    with pytest.raises(GanlibError, match="run `dvc repro tune`"):
        apply_best(Params(), tmp_path / "missing.yaml")
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({"train": {"steps": 5}}))
    with pytest.raises(GanlibError, match="train.steps is not a tunable key"):
        apply_best(Params(), path)
    path.write_text(yaml.safe_dump({"train": {"lr_g": -1.0}}))
    with pytest.raises(GanlibError, match=r"train.lr_g: must be in \(0, 1\]"):
        apply_best(Params(), path)


def test_trials_parquet_has_a_column_per_searched_key(tmp_path):
    rows = [
        {"trial_id": "t1", "status": "completed", "step": 40, "fid": 3.0, "best_fid": 2.5,
         "time_s": 9.0, "config": {"lr_g": 1e-4, "loss": "hinge"}},
        {"trial_id": "t2", "status": "stopped", "step": 20, "fid": 7.0, "best_fid": 7.0,
         "time_s": 4.0, "config": {"lr_g": 9e-4, "loss": "nonsaturating"}},
    ]  # fmt: skip
    write_trials(rows, tmp_path / "trials.parquet", metric="fid")
    table = pq.read_table(tmp_path / "trials.parquet").to_pylist()
    assert table[1]["train.loss"] == "nonsaturating" and table[0]["train.lr_g"] == 1e-4
    assert [r["status"] for r in table] == ["completed", "stopped"]
    write_trials([], tmp_path / "empty.parquet", metric="fid")
    empty = pq.read_table(tmp_path / "empty.parquet")
    assert empty.num_rows == 0 and "fid" in empty.column_names
