"""Config: defaults, the shipped params.yaml, and one clear error per kind of bad value."""

from pathlib import Path

import pytest

from ganlib.config import ConfigError, DataConfig, Params, flatten, load_params, to_dict
from ganlib.errors import GanlibError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_file_is_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.task == "generation"
    assert p.data.source == "builtin:digits"


def test_the_defaults_are_the_shipped_values():
    """One home for defaults: a library user's ``TrainConfig()``, ``InpaintingConfig()``, ...
    are the values params.yaml ships with (outside the task profiles, which override them
    per task), so they build the models the README measures."""
    assert load_params(ROOT / "params.yaml") == Params()


def test_defaults_and_properties():
    p = Params.from_dict({})
    assert p.data == DataConfig()
    d = DataConfig(source="imagefolder:/tmp/x:y")
    assert (d.scheme, d.location) == ("imagefolder", "/tmp/x:y")


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        Params().seed = 3


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"dat": {}}, "unknown key dat"),
        ({"data": {"resolutoin": 32}}, "unknown key data.resolutoin"),
        ({"data": {"resolution": "32"}}, "data.resolution: must be an integer"),
        ({"data": {"resolution": True}}, "data.resolution: must be an integer"),
        ({"data": {"resolution": 4}}, "data.resolution: must be in 8..2048"),
        ({"data": {"channels": 2}}, "data.channels: must be 1 or 3"),
        ({"data": {"val_fraction": 1.0}}, "data.val_fraction: must be in [0, 1)"),
        ({"data": {"val_fraction": "lots"}}, "data.val_fraction: must be a number"),
        ({"data": {"paired": "yes"}}, "data.paired: must be true or false"),
        ({"data": {"source": "s3://bucket"}}, "data.source: unknown source"),
        ({"data": {"source": "builtin:cifar"}}, "data.source: unknown builtin 'cifar'"),
        ({"data": {"source": "imagefolder:"}}, "data.source: unknown source"),
        ({"data": 3}, "data: must be a mapping"),
        ({"train": {"lr_g": float("inf")}}, "train.lr_g: must be a finite number (got inf)"),
        ({"inpainting": {"hole_weight": float("nan")}}, "inpainting.hole_weight: must be a finite"),
        ({"task": "superres"}, "task: must be one of generation, inpainting, translation"),
        ({"task": ["generation"]}, "task: must be one of generation, inpainting, translation"),
        ({"task": {"a": 1}}, "task: must be one of generation, inpainting, translation"),
        ({"translation": "foo"}, "translation: must be a mapping"),
        ({"seed": -1}, "seed: must be an integer in [0, 2**31)"),
        ({"seed": 2**70}, "seed: must be at most 2,147,483,647"),
        ({"eval": {"k": 1000, "num_fake": 200}}, "eval.k: must be < eval.num_fake"),
        ({"eval": {"kid_subset_size": 1}}, "eval.kid_subset_size: must be >= 2"),
        ({"featurize": {"inception_weights": "x.pth"}}, "featurize.inception_weights: applies"),
        ({"featurize": {"kind": "vgg"}}, "featurize.kind: must be one of auto, classifier"),
        ({"eval": {"min_class_coverage": 0}}, "eval.min_class_coverage: must be in (0, 1]"),
        ({"tune": {"steps": 50}}, "tune.report_every: must be <= tune.steps"),
        ({"tune": {"space": {"steps": {"choice": [1]}}}}, "tune.space.steps: not searchable"),
        ({"tune": {"space": {"lr_g": [1e-4]}}}, "tune.space.lr_g: must be one of {choice"),
        ({"tune": {"space": {"lr_g": {"loguniform": [0, 1]}}}}, "low must be > 0"),
        ({"tune": {"space": {"lr_g": {"uniform": [1, 0.1]}}}}, "must be [low, high]"),
        ({"tune": {"space": {"loss": {"choice": ["l2"]}}}}, "tune.space.loss: train.loss: must"),
        ({"tune": {"space": {"lr_d": {"grid": [-1.0]}}}}, "tune.space.lr_d: train.lr_d: must"),
        ({"register": {"model_name": "a/b"}}, "register.model_name: 'a/b' is not a valid MLflow"),
    ],
)
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(ConfigError) as err:
        Params.from_dict(raw)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_float_written_without_dot_is_accepted():
    # YAML 1.1 reads 1e-1 as a string; people write it anyway.
    assert Params.from_dict({"data": {"val_fraction": "1e-1"}}).data.val_fraction == 0.1


def test_search_space_takes_numbers_written_without_dot():
    space = Params.from_dict({"tune": {"space": {"lr_g": {"loguniform": ["1e-4", "1e-3"]}}}})
    assert space.tune.space == {"lr_g": {"loguniform": [1e-4, 1e-3]}}


def test_load_params_errors(tmp_path):
    with pytest.raises(GanlibError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_params(bad)
    bad.write_text("# nothing but a comment\n")
    with pytest.raises(ConfigError, match=r"params.yaml: empty; restore it \(git checkout"):
        load_params(bad)
    bad.write_text("{}\n")  # an explicit empty mapping: the defaults, on purpose
    assert load_params(bad) == Params()


def test_to_dict_round_trips_and_flattens():
    p = Params.from_dict({"seed": 7, "data": {"resolution": 64, "channels": 3}})
    raw = to_dict(p)
    assert Params.from_dict(raw) == p
    flat = flatten(raw)
    assert flat["data.resolution"] == 64 and flat["seed"] == 7


# -- task profiles ---------------------------------------------------------------------------


def _shipped(**top) -> Params:
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in top.items():
        section, _, name = key.partition("__")
        if name:
            raw[section][name] = value
        else:
            raw[section] = value
    return Params.from_dict(raw)


def test_task_switch_alone_selects_the_profile():
    gen = _shipped()
    inp = _shipped(task="inpainting")
    assert (inp.data.source, inp.data.resolution, inp.data.channels) == ("builtin:photos", 64, 3)
    assert inp.register.model_name == "ganlib-inpaint" != gen.register.model_name
    assert inp.train.loss == "hinge" and not inp.tune.enabled
    # keys the profile does not name keep the top-level values
    assert inp.train.num_workers == gen.train.num_workers and inp.mlflow == gen.mlflow
    assert inp.task_config()["mask_kind"] == "mix" and gen.task_config() == {}


def test_translation_mode_profile_goes_on_top():
    paired = _shipped(task="translation")
    unpaired = _shipped(task="translation", translation__mode="unpaired")
    assert paired.data.source == unpaired.data.source == "builtin:photos2art"
    assert paired.register.model_name == "ganlib-pix2pix"
    assert unpaired.register.model_name == "ganlib-cyclegan"
    assert (unpaired.train.loss, paired.train.loss) == ("lsgan", "nonsaturating")
    assert unpaired.train.lr_g == paired.train.lr_g  # from the translation profile
    assert (unpaired.translation.adv_weight, paired.translation.adv_weight) == (2.0, 1.0)
    assert unpaired.translation.identity_weight == 0.0 < paired.translation.identity_weight


def test_profile_errors_name_the_key_whatever_the_task():
    in_range = r"train.lr_g: must be in \(0, 1\] \(with the translation"
    with pytest.raises(ConfigError, match=in_range):
        Params.from_dict({"translation": {"train": {"lr_g": -1.0}}})
    with pytest.raises(ConfigError, match="unknown key inpainting.masks"):
        Params.from_dict({"task": "inpainting", "inpainting": {"masks": 1}})
    with pytest.raises(ConfigError, match="translation.unpaired.mlflow: unknown key"):
        Params.from_dict({"translation": {"unpaired": {"mlflow": {}}}})
    with pytest.raises(ConfigError, match="translation.pool_size: must be >= 0 .*unpaired"):
        Params.from_dict({"translation": {"unpaired": {"pool_size": -1}}})
    with pytest.raises(ConfigError, match="translation.paired.mode: unknown key"):
        Params.from_dict({"translation": {"paired": {"mode": "unpaired"}}})
    with pytest.raises(ConfigError, match="inpainting.data: must be a mapping"):
        Params.from_dict({"inpainting": {"data": "builtin:photos"}})
    with pytest.raises(ConfigError, match="inpainting.min_area"):
        Params.from_dict({"inpainting": {"min_area": 0.7, "max_area": 0.6}})
    with pytest.raises(ConfigError, match="inpainting.fm_weight: must be in \\[0, 1e\\+06\\]"):
        Params.from_dict({"inpainting": {"fm_weight": -1.0}})


@pytest.mark.parametrize(
    "storage, message",
    [
        ({"root": "/shared/project"}, "storage.root: '/shared/project' is not a URL"),
        ({"cache_dir": "s3://b/c"}, "storage.cache_dir: must be a local directory"),
    ],
)
def test_storage_params_are_checked_before_anything(storage, message):
    with pytest.raises(ConfigError, match=message):
        Params.from_dict({"storage": storage})
    assert Params.from_dict({"storage": {"root": "s3://bucket/prefix"}}).storage.root
