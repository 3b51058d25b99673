"""Images/s and model FLOP utilisation (MFU) of ganlib's training step, per generation family x
resolution x mode, and of the training loop around it. Prints one JSON object (``--out``
also writes it).

MFU = FLOPs of one real training step (counted with ``torch.utils.flop_counter.FlopCounterMode``
over an eager fp32 step: every matmul and convolution of the D phase, the penalties' double
backward and the G phase) / the step's median time / the device's peak, measured in this run
as a large matmul of the mode's dtype (fp32 for ``fp32``, bf16 for the bf16 modes), again before
every row, the best of them taken (one measurement under load understates the device). Modes:
``fp32`` (eager), ``bf16-cl`` (bf16 autocast + channels_last), ``bf16-cl-compile`` (+
``train.compile``; its warm-up, compilation included, is ``compile_s``).

``train_stage``: the same DCGAN step (width 32, 32 px, batch 32) inside
:func:`ganlib.training.loop.train` on digit shards, in this process (``LocalSession``) and, with
``--ray``, under Ray Train with the pipeline's 2 workers x 1 CPU: the loop's images/s
(median of its log windows) turned into MFU with the plain step's FLOPs.

    python benchmarks/throughput.py [--quick] [--device auto|cpu|cuda] [--ray] [--out FILE]

Only torch and ganlib's core are needed (no Ray, MLflow, DVC or webdataset) unless ``--ray``.
CPU figures on shared machines are noisy: other processes take cores mid-run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from ganlib.config import R3ganConfig, TrainConfig  # noqa: E402
from ganlib.models import SUPPORTED_RESOLUTIONS  # noqa: E402
from ganlib.training.loop import RunSpec, plain_step, train  # noqa: E402
from ganlib.training.session import LocalSession  # noqa: E402
from tests.cases import make_digit_shards  # noqa: E402

FAMILIES = ("dcgan", "resnet", "r3gan")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
RESOLUTIONS = (32, 64, 256)
MODES = {  # name -> train: overrides
    "fp32": {},
    "bf16-cl": {"precision": "bf16", "channels_last": True},
    "bf16-cl-compile": {"precision": "bf16", "channels_last": True, "compile": True},
}
# R3GAN's channel plan per resolution: the paper's on a GPU, the small one on a CPU
R3GAN_PRESET = {"cuda": {32: "cifar10", 64: "ffhq64", 256: "ffhq256"}, "cpu": {}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(dtype: torch.dtype, device: torch.device) -> dict[str, float]:
    """The best FLOP/s of an n x n matmul in ``dtype`` (n = 8192 on CUDA, 2048 on a CPU)."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(12 if device.type == "cuda" else 8):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return {"n": n, "tflops": round(2 * n**3 / min(times) / 1e12, 4)}


def family_config(family: str, resolution: int, device: torch.device) -> tuple:
    """``(train config, r3gan config, batch, resolution used, note)``."""
    cuda = device.type == "cuda"
    note = None
    if resolution not in SUPPORTED_RESOLUTIONS[family]:
        largest = max(SUPPORTED_RESOLUTIONS[family])
        note = f"{family} has no {resolution} px model; its largest, {largest} px, measured"
        resolution = largest
    batch = (64 if resolution <= 64 else 32) if cuda else {32: 32, 64: 16}.get(resolution, 4)
    if family in ("resnet", "r3gan") and not cuda:  # resnet: 213 GFLOP a step at batch 32
        batch = max(batch // 4, 2)
    r3 = None
    if family == "r3gan":  # the paper's recipe: relativistic loss, R1 + R2 every step
        cfg = TrainConfig(arch="r3gan", loss="rpgan", r1_gamma=1.0, r2=True, r1_every=1,
                          beta1=0.0, batch_size=batch)  # fmt: skip
        preset = R3GAN_PRESET[device.type].get(resolution, "cpu")
        r3 = R3ganConfig(preset=preset)
    else:
        cfg = TrainConfig(arch=family, width=32, batch_size=batch)
    return cfg, r3, batch, resolution, note


def random_batches(cfg: TrainConfig, resolution: int, channels: int):
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(cfg.batch_size, channels, resolution, resolution, generator=g)}
    batch["image"] = batch["image"] * 2 - 1
    batch["label"] = torch.zeros(cfg.batch_size, dtype=torch.long)
    return lambda: batch


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker, whose backward hooks autograd.grad
    with create_graph (R1, R2) refuses ("A leaf node was passed to _will_engine_execute_node");
    only the total is needed."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def step_flops(cfg, r3, resolution, channels, device) -> int:
    step = plain_step("generation", cfg, r3, info(resolution, channels),
                      random_batches(cfg, resolution, channels), device=device)  # fmt: skip
    step.step(1, False)  # a warm-up outside the count
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        step.step(2, False)
    return int(counter.get_total_flops())


def info(resolution: int, channels: int) -> dict:
    return {"resolution": resolution, "channels": channels, "classes": None}


def time_step(cfg, r3, resolution, channels, device, steps: int, warmup: int) -> dict:
    step = plain_step("generation", cfg, r3, info(resolution, channels),
                      random_batches(cfg, resolution, channels), device=device)  # fmt: skip
    t0 = time.perf_counter()
    for i in range(warmup):
        step.step(i + 1, False)
    sync(device)
    warm_s = time.perf_counter() - t0
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step.step(warmup + i + 1, False)
        sync(device)
        times.append(time.perf_counter() - t0)
    out = {"step_s": statistics.median(times), "warmup_s": round(warm_s, 2)}
    out["images_per_step"] = step.images_per_step()
    record = step.ctx.fast.record()
    out["ran"] = {k: record[k] for k in ("precision", "channels_last", "compile")}
    if record["compile"] or cfg.compile:
        out["compile"] = {k: v for k, v in record.items() if k.startswith("compile_")}
    if record["fallbacks"]:
        out["fallbacks"] = record["fallbacks"]
    return out


def train_stage(device: torch.device, steps: int, flops: int, use_ray: bool) -> dict:
    """The loop's images/s for the reference DCGAN step, and its MFU."""
    tmp = Path(tempfile.mkdtemp(prefix="ganlib-throughput-"))
    shards = make_digit_shards(tmp / "shards", n=1797, shard_size=500)
    threads = torch.get_num_threads()
    cfg = TrainConfig(width=32, batch_size=32, steps=steps, log_every=25, ckpt_every=steps,
                      sample_every=steps, num_workers=1, cpus_per_worker=threads,
                      device=device.type)  # fmt: skip
    spec = RunSpec(train=cfg, seed=0, shards=str(shards), identity="bench")
    out = {"steps": steps, "config": "dcgan width 32, 32 px, batch 32, fp32"}
    out["gflop_per_step"] = round(flops / 1e9, 3)  # per rank

    def figures(history: list[dict], per_step_images: int) -> dict:
        ips = statistics.median(row["images_per_s"] for row in history[1:])
        return {"images_per_s": round(ips, 1), "images_per_step": per_step_images}

    session = LocalSession(tmp / "plain", device=device.type)
    with contextlib.redirect_stdout(sys.stderr):  # the loop's progress lines; stdout is JSON
        train(spec, session)
    out["in_process"] = figures(session.load_latest()["history"], 32)
    out["in_process"]["threads"] = threads
    if use_ray:
        import ray

        from ganlib.training.distributed import fit

        ray.init(num_cpus=os.cpu_count(), logging_level="WARNING")
        ray_cfg = dataclasses.replace(cfg, num_workers=2, cpus_per_worker=1)
        with contextlib.redirect_stdout(sys.stderr):
            state, _ = fit(dataclasses.replace(spec, train=ray_cfg), storage=tmp / "ray", name="w2")
        ray.shutdown()
        # the loop's images/s counts both ranks; each 32 images cost one rank's step FLOPs,
        # and the peak is the whole machine's (both cores)
        out["ray_2x1"] = figures(state["history"], 32)
        out["ray_2x1"]["threads"] = "2 workers x 1"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--resolutions", default=",".join(map(str, RESOLUTIONS)))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--compile-resolutions", default="", help="compile only at these (CPU: slow)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per row")
    ap.add_argument("--train-steps", type=int, default=200, help="0 skips the train stage")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    ap.add_argument("--ray", action="store_true", help="also the train stage under Ray Train")
    ap.add_argument("--quick", action="store_true", help="32 px only, fewer steps")
    ap.add_argument("--budget-s", type=float, default=0, help="skip rows after this many s")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    want = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cuda", 0) if want in ("cuda",) else torch.device("cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    resolutions = [32] if args.quick else [int(r) for r in args.resolutions.split(",")]
    compile_at = {int(r) for r in args.compile_resolutions.split(",") if r} or set(resolutions)
    steps = args.steps or (5 if args.quick else (20 if cuda else 10))

    peaks = {"fp32": peak_flops(torch.float32, device), "bf16": peak_flops(torch.bfloat16, device)}
    out: dict = {
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "tf32": False,
        # other processes on the machine: a CPU row measured under load is slower than the code
        "load_average_1m_start": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "peak_matmul_tflops": peaks,
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": [],
    }
    flops_of: dict[tuple[str, int], int] = {}
    t_start = time.perf_counter()
    # The peak is measured again before every row and MFU taken against the best seen: on a
    # shared machine one measurement under load understates the hardware (MFU over 1).
    peaks_seen = {k: [v["tflops"]] for k, v in peaks.items()}

    def best_peak(dtype: str) -> float:
        return max(peaks_seen[dtype]) * 1e12

    def finish_mfu() -> None:
        for row in out["rows"]:
            if "step_ms" in row:
                dtype = "bf16" if "bf16" in row["mode"] else "fp32"
                flops = row["gflop_per_step"] * 1e9
                row["mfu"] = round(flops / (row["step_ms"] / 1e3) / best_peak(dtype), 4)
        stage = out.get("train_stage", {})
        for part in ("plain_step", "in_process", "ray_2x1"):
            if part in stage:  # MFU = images/s / images per step x FLOPs per step / peak
                p = stage[part]
                per_s = p["images_per_s"] / p["images_per_step"] * stage["gflop_per_step"] * 1e9
                p["mfu"] = round(per_s / best_peak("fp32"), 4)
        out["peak_matmul_tflops"] = {
            k: {"n": peaks[k]["n"], "best": max(v), "samples": v} for k, v in peaks_seen.items()
        }

    def save() -> None:  # after every row: a run cut short by a time limit keeps its rows
        finish_mfu()
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=1) + "\n")

    def measure(family: str, res: int, mode: str) -> None:
        cfg, r3, batch, used, note = family_config(family, res, device)
        row = {"family": family, "resolution": used, "mode": mode, "batch": batch}
        if r3 is not None:
            row["r3gan_preset"] = r3.preset
        if note:
            row["note"] = note
        if args.budget_s and time.perf_counter() - t_start > args.budget_s:
            out["rows"].append(row | {"skipped": f"over --budget-s {args.budget_s}"})
            return
        try:
            dtype = "bf16" if "bf16" in mode else "fp32"
            peaks_seen[dtype].append(peak_flops(DTYPES[dtype], device)["tflops"])
            if (family, used) not in flops_of:
                flops_of[family, used] = step_flops(cfg, r3, used, 1, device)
            # each row compiles from an empty cache: dynamo counts recompiles per code
            # object, so the earlier rows' models of one class (the same forward) would use
            # up its recompile limit and leave later rows partly eager
            torch._dynamo.reset()
            timed = time_step(dataclasses.replace(cfg, **MODES[mode]), r3, used, 1, device,
                              steps=steps, warmup=3)  # fmt: skip
        except Exception as exc:  # a row that cannot run says why; the table goes on
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        else:
            flops = flops_of[family, used]
            row |= {
                "gflop_per_step": round(flops / 1e9, 3),
                "step_ms": round(timed["step_s"] * 1e3, 2),
                "images_per_s": round(timed["images_per_step"] / timed["step_s"], 1),
                "mfu": None,  # at the end, against the best peak seen (see best_peak)
                "peak_tflops_here": peaks_seen[dtype][-1],
            } | {k: v for k, v in timed.items() if k not in ("step_s", "images_per_step")}
        row["load_average_1m"] = round(os.getloadavg()[0], 2)
        out["rows"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)  # progress
        save()

    # eager rows first, then the train stage, then the compiled rows (slow to warm up)
    families, modes = args.families.split(","), args.modes.split(",")
    eager = [m for m in modes if not MODES[m].get("compile")]
    for family, res, mode in itertools.product(families, resolutions, eager):
        measure(family, res, mode)
    if args.train_steps and not args.quick:
        cfg, _, _, _, _ = family_config("dcgan", 32, device)
        flops = flops_of.get(("dcgan", 32)) or step_flops(cfg, None, 32, 1, device)
        plain = next((r for r in out["rows"] if (r["family"], r["resolution"], r["mode"])
                      == ("dcgan", 32, "fp32") and "mfu" in r), None)  # fmt: skip
        peaks_seen["fp32"].append(peak_flops(torch.float32, device)["tflops"])
        stage = train_stage(device, args.train_steps, flops, args.ray)
        if plain:
            stage["plain_step"] = {"images_per_s": plain["images_per_s"], "images_per_step": 32}
        out["train_stage"] = stage
        save()
    compiled = [m for m in modes if MODES[m].get("compile")]
    for family, res, mode in itertools.product(families, resolutions, compiled):
        if res in compile_at:
            measure(family, res, mode)
    out["wall_s"] = round(time.perf_counter() - t_start, 1)
    out["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    save()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
