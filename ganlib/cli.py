"""The ``ganlib`` command.

``ganlib shards info PATH`` prints what a shard directory (or its manifest) holds;
``ganlib shards verify PATH`` checks every stored image against the manifest's sha256.
``ganlib sample --model SRC -n 64 --out grid.png`` draws images by seed from a registered model
(``models:/NAME@alias``, ``models:/NAME/VERSION``), an exported generator (``models/generator``)
or a training checkpoint directory.
``ganlib inpaint --model SRC --image in.png --mask mask.png --out out.png`` repairs an image
(``--mask random`` draws a demo hole); ``ganlib translate --model SRC --image in.png --out
out.png [--direction BtoA]`` translates one. SRC is ``models:/NAME@alias`` or an exported
generator directory of that task.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ganlib.errors import GanlibError


def _shards_info(args: argparse.Namespace) -> None:
    from ganlib.data.shards import summarize

    info = summarize(args.path)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return
    print(f"{args.path}: {info['samples']} samples ({', '.join(info['fields'])})")
    for split, s in info["splits"].items():
        print(f"  {split}: {s['samples']} samples in {s['shards']} shards")
        if s["first_keys"]:
            print(f"    e.g. {', '.join(s['first_keys'])}")
    if info["classes"]:
        counts = ", ".join(f"{name}: {n}" for name, n in info["classes"].items())
        print(f"  classes ({len(info['classes'])}): {counts}")
    else:
        print("  classes: none (unlabelled)")


def _shards_verify(args: argparse.Namespace) -> None:
    from ganlib.data.shards import CORRUPTED, verify

    found = verify(args.path)
    kinds = ("mismatched", "missing", "extra")
    counts = ", ".join(f"{found[k]['count']} {k}" for k in kinds)
    print(
        f"{args.path}: {found['samples']} samples, {found['members']} members in "
        f"{found['shards']} shards checked against the manifest: {counts}"
    )
    for kind in kinds:
        for line in found[kind]["first"]:
            print(f"  {kind}: {line}")
    bad = next((k for k in kinds if found[k]["count"]), None)
    if bad is not None:
        n = found[bad]["count"]
        raise GanlibError(f"{args.path}: {n} {bad}, e.g. {found[bad]['first'][0]}; {CORRUPTED}")


MAX_SAMPLES = 65_536  # images per `ganlib sample` call (200 MB of 32x32 RGB)


def _sample(args: argparse.Namespace) -> None:
    import numpy as np

    from ganlib.data.pixels import from_uint8
    from ganlib.grid import save_grid
    from ganlib.sampling import SEEDS

    if args.n < 1 or args.nrow < 1:
        bad, value = ("-n", args.n) if args.n < 1 else ("--nrow", args.nrow)
        raise GanlibError(f"{bad}: must be at least 1, got {value}")
    if args.n > MAX_SAMPLES:
        raise GanlibError(
            f"-n: at most {MAX_SAMPLES} images per call, got {args.n}; call again with --seed"
        )
    if not 0 <= args.seed <= SEEDS - args.n:  # the last seed, seed + n - 1, below 2**63
        raise GanlibError(
            f"--seed: seeds must be in [0, 2**63), got {args.seed}..{args.seed + args.n - 1}"
        )
    out = Path(args.out)
    if out.suffix not in (".png", ".npy") or out.is_dir():
        raise GanlibError(f"--out: {out} must be a file ending in .png (a grid) or .npy")
    seeds = list(range(args.seed, args.seed + args.n))
    labels = None if args.label is None else [args.label] * args.n
    if args.model.startswith("models:/"):
        from ganlib.registry import sample_registered

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr: errors
        images = sample_registered(args.model, _tracking_uri(args.tracking_uri), seeds, labels)
    else:
        from ganlib.sampling import generate

        images = generate(*_load_local(Path(args.model)), seeds, labels)  # [N, H, W, C]
    if out.suffix == ".npy":
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, images)
    else:  # back to [-1, 1]: save_grid's to_uint8 maps these onto exactly the same bytes
        save_grid(from_uint8(images), out, nrow=args.nrow, max_tile=None)  # every pixel
    n, h, w, c = images.shape
    print(f"{out}: {n} images {h}x{w}x{c} from {args.model}, seeds {seeds[0]}..{seeds[-1]}")


def _load_local(path: Path):
    """``(G, model_config)`` of a generation model: an exported generator directory or a
    training checkpoint."""
    from ganlib.artifacts import (
        CHECKPOINT_FILE,
        GENERATOR_CONFIG,
        GENERATOR_FIELDS,
        generator_from_checkpoint,
        load_checkpoint,
        load_generator,
    )
    from ganlib.tasks import get_task

    if (path / GENERATOR_CONFIG).is_file():
        G, meta = load_generator(path)
    elif path.is_file() or (path / CHECKPOINT_FILE).is_file():
        meta = load_checkpoint(path, GENERATOR_FIELDS)
        G = generator_from_checkpoint(meta)
    else:
        raise GanlibError(
            f"--model: {path} is not models:/NAME@ALIAS, an exported generator directory "
            f"({GENERATOR_CONFIG} + generator.pt) or a checkpoint directory ({CHECKPOINT_FILE})"
        )
    if get_task(meta["task"]) is not get_task("generation"):
        raise GanlibError(
            f"--model: {path} is an export of task {meta['task']}; `ganlib sample` draws from "
            "generation models (use `ganlib inpaint` or `ganlib translate`)"
        )
    return G, meta["model_config"]


def _image_task(args: argparse.Namespace, task_name: str, frame) -> None:
    """Run an image-to-image model (registered or exported) of ``task_name`` on ``frame``;
    write ``--out``."""
    import numpy as np

    from ganlib.grid import save_png

    out = Path(args.out)
    if out.suffix != ".png":
        raise GanlibError(f"--out: {out} must end in .png")
    if args.model.startswith("models:/"):
        from ganlib.registry import predict_registered

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr: errors
        images = predict_registered(args.model, _tracking_uri(args.tracking_uri), frame)
    else:
        from ganlib.artifacts import GENERATOR_CONFIG, load_generator
        from ganlib.tasks import get_task

        if not (Path(args.model) / GENERATOR_CONFIG).is_file():
            raise GanlibError(
                f"--model: {args.model} is not models:/NAME@ALIAS or an exported generator "
                f"directory ({GENERATOR_CONFIG} + generator.pt)"
            )
        G, meta = load_generator(Path(args.model))
        task = get_task(meta["task"])
        if task is not get_task(task_name):
            raise GanlibError(f"--model: {args.model} is a {meta['task']} model, not {task_name}")
        images = task.predict(G, meta, frame)
    image = np.asarray(images)[0]  # [H, W, C]
    save_png(image, out)
    h, w, c = image.shape
    print(f"{out}: {h}x{w}x{c} from {args.model}")


def _read(path: str, flag: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise GanlibError(f"{flag}: {path} is not a file")
    return p.read_bytes()


def _inpaint(args: argparse.Namespace) -> None:
    import pandas as pd

    image = _read(args.image, "--image")
    if args.mask == "random":
        import numpy as np

        from ganlib.sampling import SEEDS

        if not 0 <= args.seed < SEEDS:
            raise GanlibError(f"--seed: --mask random takes seeds in [0, 2**63), got {args.seed}")

        from ganlib.data.images import encode_png, input_array
        from ganlib.tasks.inpainting import TASK, demo_mask

        # The default bound on an image's pixels, checked from its header before it is decoded
        # (a model registered with a larger one takes larger images with a --mask file).
        max_pixels = TASK.limits.max_pixels
        h, w, _ = input_array(image, channels=1, name=args.image, max_pixels=max_pixels).shape
        hole = demo_mask(h, w, seed=args.seed)  # [H, W] bool
        mask = encode_png(hole[:, :, None].astype(np.uint8) * 255)
    else:
        mask = _read(args.mask, "--mask")
    _image_task(args, "inpainting", pd.DataFrame({"image": [image], "mask": [mask]}))


def _translate(args: argparse.Namespace) -> None:
    import pandas as pd

    frame = pd.DataFrame({"image": [_read(args.image, "--image")]})
    if args.direction is not None:
        frame["direction"] = [args.direction]
    _image_task(args, "translation", frame)


def _tracking_uri(arg: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else params.yaml's, else the default."""
    from ganlib import tracking
    from ganlib.config import MlflowConfig, load_params

    project = Path.cwd()
    uri = arg or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        params = project / "params.yaml"
        uri = (load_params(params).mlflow if params.is_file() else MlflowConfig()).tracking_uri
    uri = tracking.resolve_uri(uri, project)
    tracking.check_reachable(uri)
    return uri


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganlib", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    shards = commands.add_parser("shards", help="inspect WebDataset shards")
    shards_cmd = shards.add_subparsers(dest="shards_command", required=True)
    info = shards_cmd.add_parser("info", help="counts, classes and sample keys of a shard dir")
    info.add_argument("path", help="a shard directory (data/shards) or its manifest.parquet")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_shards_info)
    verify = shards_cmd.add_parser(
        "verify", help="check every tar member's sha256 against the manifest"
    )
    verify.add_argument("path", help="a shard directory (data/shards) or its manifest.parquet")
    verify.set_defaults(func=_shards_verify)

    sample = commands.add_parser("sample", help="images by seed from a generator")
    sample.add_argument(
        "--model",
        required=True,
        help="models:/NAME@ALIAS, models:/NAME/VERSION, an exported generator directory "
        "(models/generator) or a training checkpoint directory",
    )
    sample.add_argument("-n", type=int, default=64, help="number of images (default 64)")
    sample.add_argument("--out", required=True, help="grid .png, or .npy for uint8 [N, H, W, C]")
    sample.add_argument("--seed", type=int, default=0, help="first seed; images use seed..seed+n-1")
    sample.add_argument("--label", type=int, help="class of every image (default: seed %% K)")
    sample.add_argument(
        "--tracking-uri",
        help="for models:/ (default: $MLFLOW_TRACKING_URI, else params.yaml's mlflow.tracking_uri)",
    )
    sample.add_argument("--nrow", type=int, default=8, help="grid images per row (default 8)")
    sample.set_defaults(func=_sample)

    uri_help = (
        "for models:/ (default: $MLFLOW_TRACKING_URI, else params.yaml's mlflow.tracking_uri)"
    )
    inpaint = commands.add_parser("inpaint", help="repair the hole of an image")
    inpaint.add_argument("--model", required=True, help="models:/NAME@ALIAS or models/generator")
    inpaint.add_argument("--image", required=True, help="the image (any size)")
    inpaint.add_argument(
        "--mask", required=True, help="PNG of the image's size, white = hole; or 'random'"
    )
    inpaint.add_argument("--out", required=True, help="the repaired image, .png")
    inpaint.add_argument("--seed", type=int, default=0, help="seed of --mask random")
    inpaint.add_argument("--tracking-uri", help=uri_help)
    inpaint.set_defaults(func=_inpaint)

    translate = commands.add_parser("translate", help="translate an image to the other domain")
    translate.add_argument("--model", required=True, help="models:/NAME@ALIAS or models/generator")
    translate.add_argument("--image", required=True, help="the image (any size)")
    translate.add_argument("--out", required=True, help="the translated image, .png")
    translate.add_argument(
        "--direction", choices=("AtoB", "BtoA"), help="CycleGAN models: AtoB (default) or BtoA"
    )
    translate.add_argument("--tracking-uri", help=uri_help)
    translate.set_defaults(func=_translate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # stderr carries errors, one line
    try:
        args.func(args)
    except GanlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
