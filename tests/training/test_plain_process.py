"""The training core in a plain process where Ray, MLflow, DVC and webdataset cannot be
imported (a GPU box often has only torch): shards from the embedded digits, then a few steps
of the loop under ``torch.distributed`` (gloo at world size 1: G and D in DDP)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys
    BLOCKED = {"ray", "mlflow", "dvc", "webdataset"}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed here (blocked)")

    sys.meta_path.insert(0, Blocker())
    from pathlib import Path
    import torch
    from torch.nn.parallel import DistributedDataParallel
    from ganlib.config import DataConfig, TrainConfig
    from ganlib.data.shards import write_shards
    from ganlib.data.sources import open_source
    from ganlib.metrics.generation import fid_from_stats  # noqa: F401  the metrics import too
    from ganlib.training.loop import RunSpec, train
    from ganlib.training.session import ProcessGroupSession

    tmp = Path(sys.argv[1])
    src = open_source(DataConfig(source="builtin:digits", resolution=32, channels=1))
    items = (x for _, x in zip(range(64), src))
    write_shards(items, tmp / "shards", shard_size=32, val_fraction=0.1,
                 classes=src.classes, total=64, progress=False)
    cfg = TrainConfig(width=8, z_dim=8, batch_size=8, steps=3, ckpt_every=3, log_every=1,
                      sample_every=3, num_workers=1)
    session = ProcessGroupSession(tmp / "run", device="cpu")
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    wrapped, reduced = [], []

    def prepare(module, **kw):  # each DDP wrapper counts the all-reduces of its gradients
        wrapped.append(session_prepare(module, **kw))
        reduced.append([])
        calls = reduced[-1]
        hook = lambda _, bucket: calls.append(1) or allreduce_hook(None, bucket)
        wrapped[-1].register_comm_hook(None, hook)
        return wrapped[-1]

    session_prepare, session.prepare = session.prepare, prepare
    out = train(RunSpec(train=cfg, seed=0, shards=str(tmp / "shards"), identity="plain"), session)
    runtime = session.load_latest()["runtime"]
    session.close()
    print(json.dumps({
        "step": out["step"], "runtime": runtime,
        "ddp": all(isinstance(m, DistributedDataParallel) for m in wrapped) and len(wrapped),
        "all_reduces": [len(c) for c in reduced],
        "loaded": sorted(m for m in BLOCKED if m in sys.modules),
    }))
    """
)


def test_the_core_trains_without_ray_mlflow_dvc_or_webdataset(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["step"] == 3 and out["loaded"] == []
    assert out["ddp"] == 2  # G and D, each in its own DDP wrapper
    # one all-reduce of G's and one of D's gradients per step (tiny models: one bucket each);
    # D's real pass runs under no_sync, its fake pass reduces both
    assert out["all_reduces"] == [3, 3]
    runtime = out["runtime"]
    assert (runtime["backend"], runtime["world_size"], runtime["device"]) == ("gloo", 1, "cpu")
