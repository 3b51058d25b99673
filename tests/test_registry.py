"""The registered generator on a real MLflow (temporary SQLite store): the pyfunc contract,
version links and tags, the promotion rule, and ``mlflow models serve``."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import _validate_model_name

from ganlib import registry, tracking
from ganlib.artifacts import load_generator
from ganlib.config import validate_model_name
from ganlib.errors import GanlibError
from ganlib.registry import decide_alias, register_generator
from ganlib.sampling import generate
from tests.test_sampling import export_tiny

P1, P2 = "a" * 64, "b" * 64  # protocol hashes
TAGS = {"protocol_card": {"extractor": "tiny", "num_fake": 64}, "git_commit": "abc123",
        "data_hash": "d" * 64, "metric.kid": 0.25}  # fmt: skip


class Store:
    """A temporary tracking + registry store with one training run and two exported G."""

    def __init__(self, root: Path):
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        exp = tracking.experiment_id(self.client, "test", root)  # artifacts under root
        self.run_id = tracking.start_run(
            self.client, exp, run_name="train", params={"train.lr_g": 2e-4}, tags={}
        )
        self.uncond = export_tiny(root / "uncond", channels=1)
        self.cond = export_tiny(root / "cond", channels=3, num_classes=3)

    def register(self, name, fid, protocol=P1, directory=None, tags=TAGS):
        return register_generator(
            self.client, self.run_id, directory or self.uncond,
            model_name=name, score=fid, protocol_hash=protocol, tags=tags,
        )  # fmt: skip

    def aliases(self, name) -> dict[str, int]:
        return dict(self.client.get_registered_model(name).aliases)

    def pyfunc(self, model_json):
        """The logged model straight from its artifact location: no registry lookup."""
        model_id = model_json["logged_model_uri"].removeprefix("models:/")
        return mlflow.pyfunc.load_model(self.client.get_logged_model(model_id).artifact_location)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def uncond(store):
    """``uncond`` v1 (champion) and its pyfunc."""
    info = store.register("uncond", fid=10.0)
    return info, store.pyfunc(info)


@pytest.fixture(scope="module")
def cond(store):
    """``cond`` v1: 3 classes, 3 channels, and its pyfunc."""
    info = store.register("cond", fid=10.0, directory=store.cond)
    return info, store.pyfunc(info)


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gan", "ganlib-digits_v2.1", "G_ema", "0", "a" * 256])
def test_valid_names_are_valid_for_mlflow_too(name):
    validate_model_name(name)
    _validate_model_name(name)  # MLflow's own check agrees


@pytest.mark.parametrize(
    "name",
    ["", " gan", "gan ", "a b", "a/b", "a:b", "a@b", ".", "..", "..a", ".a", "-a", "a" * 257,
     "gän"],
)  # fmt: skip
def test_invalid_names_are_one_line_errors(name):
    with pytest.raises(GanlibError) as err:
        validate_model_name(name)
    message = str(err.value)
    prefix = f"params.yaml: register.model_name: {name!r} is not a valid MLflow model name"
    assert message.startswith(prefix)
    assert message.endswith("pick another") and "\n" not in message


def test_registering_under_an_invalid_name_logs_nothing(store):
    before = store.client.get_run(store.run_id).outputs.model_outputs
    with pytest.raises(GanlibError, match="register.model_name"):
        store.register("a/b", fid=1.0)
    assert store.client.get_run(store.run_id).outputs.model_outputs == before


# -- the pyfunc contract ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7])
def test_pyfunc_returns_uint8_images_for_any_batch_size(uncond, n):
    _, model = uncond
    images = model.predict(pd.DataFrame({"seed": range(n)}))
    assert images.dtype == np.uint8 and images.shape == (n, 32, 32, 1)


def test_pyfunc_image_depends_only_on_the_seed(uncond, store):
    _, model = uncond
    seven = model.predict(pd.DataFrame({"seed": range(7)}))
    alone = model.predict(pd.DataFrame({"seed": [5]}))
    assert np.array_equal(alone[0], seven[5])
    assert np.array_equal(model.predict(pd.DataFrame({"seed": range(7)})), seven)
    G, meta = load_generator(store.uncond)
    assert np.array_equal(seven, generate(G, meta["model_config"], range(7)))


def test_pyfunc_takes_labels_when_conditional(cond, store):
    _, model = cond
    default = model.predict(pd.DataFrame({"seed": [0, 1, 2, 3]}))
    labelled = model.predict(pd.DataFrame({"seed": [0, 1, 2, 3], "label": [2, 2, 2, 2]}))
    assert default.shape == (4, 32, 32, 3) and default.dtype == np.uint8
    G, meta = load_generator(store.cond)
    assert np.array_equal(default, generate(G, meta["model_config"], [0, 1, 2, 3]))
    assert np.array_equal(labelled, generate(G, meta["model_config"], [0, 1, 2, 3], [2] * 4))
    assert np.array_equal(labelled[2], default[2]) and not np.array_equal(labelled, default)
    with pytest.raises(MlflowException, match=r"label: 5 is not a class of this generator"):
        model.predict(pd.DataFrame({"seed": [0], "label": [5]}))


def test_schema_rejects_a_frame_without_seed(uncond):
    _, model = uncond
    with pytest.raises(MlflowException, match=r"missing inputs \['seed'\]"):
        model.predict(pd.DataFrame({"z": [1]}))
    with pytest.raises(MlflowException, match=r"seed: row 0 is 1.5 \(float\), not an integer"):
        model.predict(pd.DataFrame({"seed": [1.5]}))  # ganlib's check: the column is Any


def test_signature_and_input_example(uncond, cond):
    for (_, model), example in ((uncond, ["seed"]), (cond, ["seed", "label"])):
        sig = model.metadata.signature
        assert sig.inputs.input_names() == ["seed", "label"]
        assert [c.required for c in sig.inputs.inputs] == [True, False]
        assert model.input_example.columns.tolist() == example
    assert uncond[1].metadata.signature.outputs.inputs[0].shape == (-1, 32, 32, 1)
    spec = cond[1].metadata.signature.outputs.inputs[0]
    assert spec.type == np.dtype(np.uint8) and spec.shape == (-1, 32, 32, 3)


def test_unconditional_pyfunc_refuses_labels(uncond):
    with pytest.raises(MlflowException, match="this generator is unconditional"):
        uncond[1].predict(pd.DataFrame({"seed": [0], "label": [0]}))


# -- versions: links, tags, model.json -------------------------------------------------------


def test_version_links_to_the_run_and_carries_the_tags(uncond, store):
    info, _ = uncond
    assert set(info) == {
        "name", "version", "alias", "reason", "run_id", "model_uri", "logged_model_uri",
        "metric", "score", "protocol_hash", "previous_champion",
    }  # fmt: skip
    assert info["model_uri"] == f"models:/uncond/{info['version']}"
    mv = store.client.get_model_version("uncond", str(info["version"]))
    assert mv.run_id == store.run_id and mv.source == info["logged_model_uri"]
    assert mv.tags == {
        "metric.fid": "10.0", "promotion_metric": "fid", "protocol_hash": P1,
        "git_commit": "abc123", "data_hash": "d" * 64,
        "metric.kid": "0.25", "protocol_card": json.dumps(TAGS["protocol_card"], sort_keys=True),
        "role": "champion",
    }  # fmt: skip
    model_id = info["logged_model_uri"].removeprefix("models:/")
    logged = store.client.get_logged_model(model_id)
    run = store.client.get_run(store.run_id)
    assert logged.source_run_id == store.run_id
    assert logged.experiment_id == run.info.experiment_id
    assert model_id in [o.model_id for o in run.outputs.model_outputs]


@pytest.mark.parametrize("env_uri", [None, "sqlite:////elsewhere/mlflow.db"])
def test_registration_puts_mlflow_process_uris_back(store, monkeypatch, env_uri):
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    if env_uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store.register("uris", fid=1.0)
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_uri
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert mlflow.get_tracking_uri() != store.uri
    if env_uri:
        assert mlflow.get_tracking_uri() == mlflow.get_registry_uri() == env_uri


# -- promotion -------------------------------------------------------------------------------


def test_decide_alias():
    champ = {"version": 3, "metric": "fid", "score": 10.0, "protocol_hash": P1}
    assert decide_alias(50.0, P1, None) == ("champion", "no champion yet")
    assert decide_alias(9.5, P1, champ)[0] == "champion"
    assert decide_alias(10.0, P1, champ)[0] == "challenger"  # a tie does not promote
    assert decide_alias(12.0, P1, champ)[0] == "challenger"
    assert decide_alias(float("nan"), P1, champ)[0] == "challenger"
    alias, reason = decide_alias(1.0, P2, champ)
    assert alias == "challenger" and "never compared" in reason and "\n" not in reason


def test_promotion(store):
    v1 = store.register("promo", fid=10.0)
    assert (v1["alias"], v1["previous_champion"]) == ("champion", None)
    assert store.aliases("promo") == {"champion": 1}

    v2 = store.register("promo", fid=12.0)  # worse: challenger, champion stays
    assert (v2["alias"], v2["previous_champion"]) == ("challenger", 1)
    assert "does not beat champion v1" in v2["reason"]
    assert store.aliases("promo") == {"champion": 1, "challenger": 2}

    v3 = store.register("promo", fid=8.0)  # better: champion moves, the old one keeps nothing
    assert (v3["alias"], v3["previous_champion"]) == ("champion", 1)
    assert store.aliases("promo") == {"champion": 3, "challenger": 2}

    v4 = store.register("promo", fid=1.0, protocol=P2)  # another protocol card: not comparable
    assert v4["alias"] == "challenger" and "never compared" in v4["reason"]
    assert store.aliases("promo") == {"champion": 3, "challenger": 4}


def test_concurrent_promotions_end_on_the_best_version(store, monkeypatch):
    """Two register stages read the champion (FID 6) at once; the better one (4.5) sets its
    alias first, the worse (5.0) last. Serialised, the worse one sees 4.5 and stays challenger."""
    import threading

    first = store.register("race", fid=6.0)
    source = store.client.get_model_version("race", first["version"]).source
    versions = {}
    for fid in (5.0, 4.5):
        tags = {registry.METRIC_TAG: "fid", "metric.fid": str(fid), registry.PROTOCOL_TAG: P1}
        with registry._process_uris(store.uri):  # the models:/<id> source is looked up there
            mv = store.client.create_model_version("race", source, run_id=store.run_id, tags=tags)
        versions[fid] = int(mv.version)
    decide = registry.decide_alias

    def slow_for_the_worse(score, *args):
        if score == 5.0:  # holds its read of the champion while the better one runs
            time.sleep(1.5)
        return decide(score, *args)

    monkeypatch.setattr(registry, "decide_alias", slow_for_the_worse)
    records = {}

    def promote(fid):
        records[fid] = registry.promote(store.client, "race", versions[fid], fid, P1)

    worse = threading.Thread(target=promote, args=(5.0,))
    worse.start()
    time.sleep(0.5)
    better = threading.Thread(target=promote, args=(4.5,))
    better.start()
    worse.join(30), better.join(30)
    assert store.aliases("race")["champion"] == versions[4.5]
    assert records[5.0]["alias"] == records[4.5]["alias"] == "champion"
    assert records[4.5]["previous_champion"] == versions[5.0]  # it saw the worse one's write
    assert "race" + registry.LOCK_SUFFIX not in {
        m.name for m in store.client.search_registered_models()
    }  # released


PROMOTE = """
import sys, time
from mlflow.tracking import MlflowClient
from ganlib import registry
uri, version, fid, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
time.sleep(max(0.0, start - time.time()))  # every process reads the champion at once
print(registry.promote(client, "crowd", version, fid, sys.argv[5])["alias"])
"""


def test_promotions_from_processes_at_once_end_on_the_best(store):
    """Four register processes on one SQLite registry, released at the same instant."""
    first = store.register("crowd", fid=9.0)
    source = store.client.get_model_version("crowd", first["version"]).source
    fids, procs = [7.0, 5.5, 8.0, 6.0], []
    start = time.time() + 8  # past every process's imports
    for fid in fids:
        tags = {registry.METRIC_TAG: "fid", "metric.fid": str(fid), registry.PROTOCOL_TAG: P1}
        with registry._process_uris(store.uri):
            mv = store.client.create_model_version("crowd", source, run_id=store.run_id, tags=tags)
        args = [sys.executable, "-c", PROMOTE, store.uri, str(mv.version), str(fid), str(start), P1]
        procs.append((fid, int(mv.version), subprocess.Popen(args, stdout=subprocess.PIPE)))
    for _, _, proc in procs:
        assert proc.wait(timeout=120) == 0
    best = min(procs)[1]
    assert store.aliases("crowd")["champion"] == best
    versions = store.client.search_model_versions("name='crowd'")
    roles = {int(mv.version): mv.tags.get(registry.ROLE_TAG) for mv in versions}
    assert [v for v, role in roles.items() if role == "champion"] == [best]  # one claims it
    for role in roles.values():  # each one that held it in between says who beat it
        assert role in ("champion", "challenger") or role.startswith("former champion (v")


def test_a_stale_promotion_lock_is_broken_and_a_held_one_waited_for(store):
    lock = registry.lock_name("locked")
    store.client.create_registered_model(lock, tags={"expires_at": str(time.time() - 1)})
    held = "another register stage has been promoting locked"
    with (
        registry.promotion_lock(store.client, "locked", wait_s=5),  # its holder died: broken
        pytest.raises(GanlibError, match=held),
        registry.promotion_lock(store.client, "locked", wait_s=0.3),  # held by the line above
    ):
        pass
    with registry.promotion_lock(store.client, "locked", wait_s=0.3):  # released: free again
        pass
    assert registry.lock_name("x" * 256).endswith(registry.LOCK_SUFFIX)
    assert len(registry.lock_name("x" * 256)) <= 256


def test_versions_and_the_model_are_described_for_the_mlflow_ui(store):
    """Each version says what it is, on what data, its numbers next to their floor under their
    card, why it has its alias and how to call it; the registered model what its name holds."""
    from ganlib.registry import model_description, version_description

    floor = {"fid": 1.0, "kid_mean": 0.001}
    metrics = {
        "fid": 12.5, "kid_mean": 0.02, "precision": 0.5, "recall": 0.4, "density": 0.9,
        "coverage": 0.7, "floor": floor, "protocol_hash": P1,
        "protocol": {"extractor": "classifier", "num_real": 1428, "num_fake": 369,
                     "reference_split": "train"},
    }  # fmt: skip
    data = {"source": "builtin:digits", "train": 1428, "val": 369, "resolution": 32, "channels": 1}
    describe = functools.partial(
        version_description, task_name="generation", model_name="described", metrics=metrics,
        data=data, run_id=store.run_id,
    )  # fmt: skip
    for fid in (12.5, 13.0):
        register_generator(
            store.client, store.run_id, store.uncond, model_name="described", score=fid,
            protocol_hash=P1, tags=TAGS, describe=describe,
            model_description=model_description("described", "generation", "builtin:digits"),
        )  # fmt: skip
    first, second = (store.client.get_model_version("described", v) for v in ("1", "2"))
    assert "**champion**: no champion yet" in first.description
    assert "**challenger**: FID 13 does not beat champion v1's 12.5" in second.description
    for text in (
        "builtin:digits",
        "1428 train / 369 val",
        "FID 12.5 against the real-vs-real floor 1",
        'load_model("models:/described/1")',
        f"runs:/{store.run_id}/eval",
    ):
        assert text in first.description, text  # fmt: skip
    model = store.client.get_registered_model("described")
    assert "generation models" in model.description and "champion" in model.description


def test_a_failed_registration_leaves_the_champion(store, tmp_path):
    store.register("fails", fid=10.0)
    with pytest.raises(GanlibError, match="not an exported generator"):  # logging fails
        store.register("fails", fid=1.0, directory=tmp_path)
    with pytest.raises(MlflowException, match="exceeds the maximum length"):  # tagging fails
        store.register("fails", fid=1.0, tags={"protocol_card": "x" * 100_001})
    assert store.aliases("fails") == {"champion": 1}
    assert [mv.version for mv in store.client.search_model_versions("name='fails'")] == [1]


def test_sample_registered_resolves_aliases(uncond, store):
    images = registry.sample_registered("models:/uncond@champion", store.uri, [5, 6])
    assert np.array_equal(images, uncond[1].predict(pd.DataFrame({"seed": [5, 6]})))
    with pytest.raises(GanlibError, match="alias nope not found"):
        registry.sample_registered("models:/uncond@nope", store.uri, [0])


# -- outside this process --------------------------------------------------------------------


@contextlib.contextmanager
def served(model_uri: str, store: Store, tmp_path: Path):
    """``mlflow models serve`` of ``model_uri`` on a free loopback port: yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path / f"serve-{port}.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
         model_uri, "--env-manager", "local", "-p", str(port), "--host", "127.0.0.1"],
        env={**os.environ, "MLFLOW_TRACKING_URI": store.uri},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no /ping answer in 180 s"
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.slow
def test_mlflow_models_serve(uncond, store, tmp_path):
    with served("models:/uncond@champion", store, tmp_path) as url:
        body = {"dataframe_split": {"columns": ["seed"], "data": [[1], [2]]}}
        answer = requests.post(f"{url}/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        served_images = np.array(answer.json()["predictions"])
        assert served_images.shape == (2, 32, 32, 1)
        assert served_images.min() >= 0 and served_images.max() <= 255
        expected = uncond[1].predict(pd.DataFrame({"seed": [1, 2]}))
        assert np.array_equal(served_images.astype(np.uint8), expected)
        bad = requests.post(f"{url}/invocations", json={"dataframe_split": {
            "columns": ["z"], "data": [[1]]}}, timeout=60)  # fmt: skip
        assert bad.status_code == 400 and "missing inputs ['seed']" in bad.json()["message"]


@pytest.mark.slow
def test_mlflow_models_serve_inpainting(image_models, store, tmp_path):
    """PNG bytes travel base64-encoded in JSON; the binary signature decodes them."""
    import base64

    frame = frames(2, (40, 36), with_mask=True)
    cells = [[base64.b64encode(v).decode() for v in row] for row in frame.to_numpy()]
    with served("models:/inpaint@champion", store, tmp_path) as url:
        body = {"dataframe_split": {"columns": ["image", "mask"], "data": cells}}
        answer = requests.post(f"{url}/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        got = np.array(answer.json()["predictions"]).astype(np.uint8)
        assert np.array_equal(got, image_models["inpaint"][1].predict(frame))
        cells[1][1] = base64.b64encode(png(np.zeros((8, 8, 1), np.uint8))).decode()
        bad = requests.post(f"{url}/invocations", json=body, timeout=60)
        assert bad.status_code == 400 and "row 1: mask" in bad.json()["message"]


@pytest.mark.slow
def test_model_loads_where_ganlib_is_not_installed(uncond, store, tmp_path):
    # python -S skips site-packages' .pth files, among them ganlib's editable install.
    script = (
        "import sys; sys.path.append(sys.argv[1])\n"
        "try:\n    import ganlib\nexcept ImportError:\n    pass\n"
        "else:\n    sys.exit('ganlib is importable')\n"
        "import mlflow.pyfunc, numpy, pandas\n"
        "model = mlflow.pyfunc.load_model(sys.argv[2])\n"
        "numpy.save(sys.argv[3], model.predict(pandas.DataFrame({'seed': [1, 2]})))\n"
        "import ganlib; print(ganlib.__file__)\n"
    )
    model_id = uncond[0]["logged_model_uri"].removeprefix("models:/")
    location = store.client.get_logged_model(model_id).artifact_location
    out = subprocess.run(
        [sys.executable, "-S", "-c", script, sysconfig.get_paths()["purelib"], location,
         str(tmp_path / "images.npy")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "/artifacts/code/ganlib/" in out.stdout  # the copy shipped with the model
    expected = uncond[1].predict(pd.DataFrame({"seed": [1, 2]}))
    assert np.array_equal(np.load(tmp_path / "images.npy"), expected)


# -- image-to-image pyfuncs ------------------------------------------------------------------


def export_image_model(directory: Path, task: str, mode: str = "paired") -> Path:
    """A random (untrained) inpainting U-Net, pix2pix U-Net or CycleGAN pair, exported."""
    import torch

    from ganlib.artifacts import export_generator
    from ganlib.models.cyclegan import CycleGenerators
    from ganlib.models.unet import UNetGenerator

    torch.manual_seed(0)
    if task == "inpainting":
        G = UNetGenerator(4, 3, 4, resolution=32)
    else:
        G = UNetGenerator(3, 3, 4, resolution=32) if mode == "paired" else CycleGenerators(3, 4, 1)
    state = {
        "G_ema": G.state_dict(), "model_config": G.config, "task": task,
        "task_config": {"mode": mode} if task == "translation" else {"mask_kind": "mix"},
        "resolution": 32, "channels": 3, "classes": None, "step": 0, "identity": task + mode,
    }  # fmt: skip
    return export_generator(state, directory)


def png(array: np.ndarray) -> bytes:
    from ganlib.data.images import encode_png

    return encode_png(array)


@pytest.fixture(scope="module")
def image_models(store, tmp_path_factory):
    """Registered inpainting, pix2pix and CycleGAN models: ``{name: (model.json, pyfunc)}``."""
    root = tmp_path_factory.mktemp("image-models")
    out = {}
    for name, task, mode in (
        ("inpaint", "inpainting", ""), ("p2p", "translation", "paired"),
        ("cycle", "translation", "unpaired"),
    ):  # fmt: skip
        info = register_generator(
            store.client, store.run_id, export_image_model(root / name, task, mode),
            model_name=name, score=0.1, protocol_hash=P1,
            metric="l1_hole" if task == "inpainting" else "fid",
        )  # fmt: skip
        out[name] = (info, store.pyfunc(info))
    return out


def frames(n: int, size: tuple[int, int], with_mask: bool) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    images = [png(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)]
    frame = pd.DataFrame({"image": images})
    if with_mask:
        hole = np.zeros((*size, 1), np.uint8)
        hole[size[0] // 4 : size[0] // 2, size[1] // 3 :] = 255
        frame["mask"] = [png(hole)] * n
    return frame


@pytest.mark.parametrize("name", ["inpaint", "p2p", "cycle"])
@pytest.mark.parametrize(("n", "size"), [(1, (32, 32)), (3, (32, 32)), (2, (70, 45))])
def test_image_pyfunc_contract(image_models, name, n, size):
    info, model = image_models[name]
    frame = frames(n, size, with_mask=name == "inpaint")
    out = model.predict(frame)
    assert out.dtype == np.uint8 and out.shape == (n, *size, 3)
    if name == "inpaint":  # valid pixels come back exactly
        from ganlib.data.images import decode_png

        image, hole = decode_png(frame["image"][0]), decode_png(frame["mask"][0])[..., 0] > 0
        assert np.array_equal(out[0][~hole], image[~hole])
    else:  # a row's output does not depend on the rest of the batch
        assert np.array_equal(out[:1], model.predict(frame.iloc[:1]))
    assert info["metric"] == ("l1_hole" if name == "inpaint" else "fid")


def test_image_pyfunc_bad_input_is_one_line(image_models):
    _, inpaint = image_models["inpaint"]
    bad_mask = frames(1, (32, 32), with_mask=True)
    bad_mask["mask"] = [png(np.zeros((20, 20, 1), np.uint8))]
    with pytest.raises(MlflowException, match="row 0: mask: 20x20") as exc:
        inpaint.predict(bad_mask)
    assert "\n" not in str(exc.value.message)
    _, p2p = image_models["p2p"]
    with pytest.raises(MlflowException, match="AtoB only"):
        p2p.predict(frames(1, (32, 32), False).assign(direction=["BtoA"]))
    _, cycle = image_models["cycle"]
    both = frames(2, (32, 32), False).assign(direction=["AtoB", "BtoA"])
    out = cycle.predict(both)
    assert not np.array_equal(out[0], out[1])  # the two generators differ


def test_image_signatures(image_models):
    expected = {
        "inpaint": ["image", "mask"], "p2p": ["image", "direction"],
        "cycle": ["image", "direction"],
    }  # fmt: skip
    for name, columns in expected.items():
        _, model = image_models[name]
        schema = model.metadata.get_input_schema()
        assert schema.input_names() == columns
        assert schema.input_types()[0].name == "binary"
        assert model.metadata.get_output_schema().inputs[0].shape == (-1, -1, -1, 3)
