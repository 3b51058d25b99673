"""What ganlib saves, and the one place that reads it back: training checkpoints, the exported
generator and the metric extractor. Everything is data (state dicts, JSON, counters), written
with a format version and loaded with ``torch.load(weights_only=True)``: loading never runs
pickled code (the StyleGAN "No module named torch_utils" trap), and a file of a format this
ganlib does not know is refused with one line.

- **Checkpoint** (``checkpoint.pt``, :func:`save_checkpoint` / :func:`load_checkpoint`): the
  whole training state, every field of :data:`CHECKPOINT_FIELDS`; the loop builds it with
  :func:`checkpoint_state`, which refuses a missing or unknown field.
- **Exported generator** (``generator.pt`` + ``config.json``, :func:`export_generator` /
  :func:`load_generator`): G_ema's weights and what rebuilds and describes it; what the train
  stage publishes, the evaluate stage measures and the registered model serves.
- **Extractor** (``extractor.pt`` + ``extractor.json``, :func:`save_extractor` /
  :func:`load_extractor`): the featurize stage's network, its rebuild config and hashes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ganlib.errors import GanlibError
from ganlib.metrics.extractors import NETS, Extractor, state_sha256
from ganlib.models import build_generator

# -- checkpoints -------------------------------------------------------------------------------

CHECKPOINT_FORMAT = 1
CHECKPOINT_FILE = "checkpoint.pt"
# Every field of a checkpoint, and what it holds.
CHECKPOINT_FIELDS = {
    "identity": "hash of what defines the run; a checkpoint resumes only its own run",
    "task": "the task's name (ganlib.tasks.TASKS)",
    "task_config": "the task's params section, as data ({} for generation)",
    "resolution": "the data's image side",
    "channels": "the data's channels",
    "model_config": "G's saved config (ganlib.models.build_generator)",
    "classes": "class names of the data, or None",
    "train_config": "the train section the run used",
    "G": "G's state dict",
    "D": "D's state dict (a ModuleDict's for several discriminators)",
    "G_ema": "G_ema's state dict: what is exported",
    "opt_G": "G's optimiser state",
    "opt_D": "D's optimiser state",
    "rng": "every rank's RNG states (rng_state), indexed by rank",
    "extra": "every rank's task-step state (e.g. CycleGAN's image pools), indexed by rank",
    "history": "the logged rows so far (train/history.csv)",
    "resumed_from": "the steps the run was resumed at",
    "grid_inputs": "the fixed inputs of the sample grid",
    "step": "G updates done",
    "epoch": "the data cursor: epoch ...",
    "batch": "... and batch within it",
    "images_seen": "real images consumed, all ranks",
    "wall_s": "training wall time so far",
}
# Fields written since, read with .get(): older checkpoints without them still resume.
CHECKPOINT_OPTIONAL = {
    "runtime": "what ran: device, backend, precision, compile (ganlib.training.fastpath)",
}


def checkpoint_state(**fields: Any) -> dict[str, Any]:
    """A checkpoint's state from its fields; raises ValueError for a missing or unknown one."""
    missing = sorted(set(CHECKPOINT_FIELDS) - set(fields))
    unknown = sorted(set(fields) - set(CHECKPOINT_FIELDS) - set(CHECKPOINT_OPTIONAL))
    if missing or unknown:
        raise ValueError(f"checkpoint fields: missing {missing}, unknown {unknown}")
    return dict(fields)


def save_checkpoint(state: dict[str, Any], directory: Path) -> Path:
    """Write ``state`` to ``directory/checkpoint.pt`` atomically (write, then rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    tmp = path.with_suffix(".tmp")
    torch.save({"format_version": CHECKPOINT_FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path, fields: Iterable[str] = CHECKPOINT_FIELDS) -> dict[str, Any]:
    """Read a checkpoint file (or a directory holding one) without running pickled code.

    ``fields`` are the ones the caller reads (all of them to resume training; G_ema, its
    config and the task to sample); a checkpoint without one of them is refused with one line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise GanlibError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise GanlibError(f"{path}: not a readable ganlib checkpoint ({exc})") from None
    version = state.get("format_version") if isinstance(state, dict) else None
    if version != CHECKPOINT_FORMAT:
        raise GanlibError(
            f"{path}: checkpoint format {version!r}, this ganlib reads {CHECKPOINT_FORMAT}"
        )
    missing = sorted(set(fields) - set(state))
    if missing:
        raise GanlibError(
            f"{path}: written by an older ganlib (no {', '.join(missing)}); delete its run "
            "directory to train from the start"
        )
    return state


def load_newest_checkpoint(candidates: Sequence[Path]) -> dict[str, Any] | None:
    """The newest readable checkpoint of ``candidates`` (oldest first), or None for none.

    A truncated or corrupt newest checkpoint (a disk that filled, a copy cut short) is skipped
    with a line on stderr and the one before it is read: resuming a few hundred steps earlier
    beats a run that can never resume. When none is readable, the newest one's error.
    """
    error = None
    for path in reversed(candidates):
        try:
            state = load_checkpoint(path)
        except GanlibError as exc:
            error = error or exc
            print(f"warning: skipping an unreadable checkpoint: {exc}", file=sys.stderr)
            continue
        return state
    if error is not None:
        raise error
    return None


def rng_state() -> dict[str, Any]:
    """This process's torch RNG states (CPU and, when present, the current CUDA device)."""
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


GENERATOR_FIELDS = ("task", "model_config", "G_ema")  # what generator_from_checkpoint reads


def generator_from_checkpoint(state: dict[str, Any]) -> torch.nn.Module:
    """Rebuild G_ema from a checkpoint's data (no pickled code) in eval mode."""
    G = build_generator(state["model_config"])
    G.load_state_dict(state["G_ema"])
    return G.eval().requires_grad_(False)


# -- the exported generator --------------------------------------------------------------------

GENERATOR_FORMAT = 1
GENERATOR_WEIGHTS = "generator.pt"
GENERATOR_CONFIG = "config.json"


def export_generator(state: dict[str, Any], directory: Path) -> Path:
    """Write a checkpoint's G_ema as data: ``generator.pt`` (a state dict) + ``config.json``.

    ``config.json``: ``format`` (:data:`GENERATOR_FORMAT`), ``model_config`` (G's ``.config``,
    for :func:`~ganlib.models.build_generator`), ``task`` (a name of
    :data:`ganlib.tasks.TASKS`), ``task_config`` (that task's params section, e.g. the
    translation mode; empty for generation), the data's ``resolution`` and ``channels``,
    ``classes``, ``step`` and ``identity``.
    """
    check_finite(state["G_ema"], f"the step-{state['step']} checkpoint's G_ema")
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state["G_ema"], directory / GENERATOR_WEIGHTS)
    meta = {
        "format": GENERATOR_FORMAT,
        **{k: state[k] for k in ("model_config", "task", "task_config", "resolution", "channels")},
        **{k: state[k] for k in ("classes", "step", "identity")},
    }
    (directory / GENERATOR_CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def load_generator(directory: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild an exported generator (eval mode) and its metadata; never runs pickled code.

    ``directory`` holds ``generator.pt`` and ``config.json`` (see :func:`export_generator`).
    Directories written before the format was versioned are format 1; another format is
    refused with one line.
    """
    directory = Path(directory)
    cfg_path, weights = directory / GENERATOR_CONFIG, directory / GENERATOR_WEIGHTS
    if not (cfg_path.is_file() and weights.is_file()):
        raise GanlibError(f"{directory}: not an exported generator (needs config.json + .pt)")
    again = "export it again (dvc repro -f train)"
    try:
        meta = json.loads(cfg_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GanlibError(f"{cfg_path}: not valid JSON ({exc}); {again}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model_config"), dict):
        raise GanlibError(f"{cfg_path}: no model_config mapping; {again}")
    version = meta.setdefault("format", GENERATOR_FORMAT)
    if version != GENERATOR_FORMAT:
        raise GanlibError(
            f"{cfg_path}: exported generator format {version!r}, this ganlib reads "
            f"{GENERATOR_FORMAT}; export it again with this ganlib (dvc repro train)"
        )
    if "task" not in meta:  # exported before tasks existed: a generation model
        meta |= {"task": "generation", "task_config": {}}
    # The config is built on the meta device first (shapes, no memory) and compared with the
    # weights: a config that does not match them (an edited width asking for gigabytes) is
    # refused before anything is allocated.
    try:
        with torch.device("meta"):
            skeleton = build_generator(meta["model_config"])
    except (KeyError, TypeError, ValueError, GanlibError) as exc:  # an unknown arch or argument
        raise GanlibError(f"{cfg_path}: model_config does not build a generator ({exc})") from None
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or unsafe files
        raise GanlibError(f"{weights}: not a readable state dict ({exc}); {again}") from None
    if not isinstance(state, dict):
        raise GanlibError(f"{weights}: holds a {type(state).__name__}, not a state dict; {again}")
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if want != have:
        key = next(k for k in sorted(want.keys() | have.keys()) if want.get(k) != have.get(k))
        shapes = f"{have.get(key, 'missing')} in the weights, {want.get(key, 'none')} by the config"
        why = f"{key}: {shapes}"
        raise GanlibError(f"{weights}: does not match {cfg_path} ({why}); {again}")
    check_finite(state, str(weights))
    G = build_generator(meta["model_config"])
    G.load_state_dict(state)
    return G.eval().requires_grad_(False), meta


def check_finite(state: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse weights holding NaN or inf (a diverged run): they are never exported, registered
    or served."""
    bad = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise GanlibError(
            f"{what}: {len(bad)} tensors hold NaN/inf (first: {bad[0]}); a diverged run is "
            "never exported: lower train.lr_g / train.lr_d and train again"
        )


# -- the metric extractor ----------------------------------------------------------------------

EXTRACTOR_FORMAT = 1
EXTRACTOR_WEIGHTS = "extractor.pt"
EXTRACTOR_META = "extractor.json"


def save_extractor(extractor: Extractor, meta: Mapping[str, Any], directory: Path) -> dict:
    """Write ``extractor.pt`` (the state dict) and ``extractor.json``; return the json's dict.

    ``meta`` adds fields of the caller's (e.g. ``{"report": ...}`` from
    :func:`ganlib.featurize.classifier.train_classifier`); it may not override the fields
    written here.

    Inception weights are copied into ``extractor.pt`` like the others', rather than pointed
    to by path: the directory is then self-contained (a DVC out that another machine or a Ray
    worker can pull), and DVC's content-addressed cache stores the 91 MiB file once.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = extractor.net.state_dict()
    info = {
        "format": EXTRACTOR_FORMAT,
        "kind": extractor.kind,
        "config": extractor.config,
        "weights_sha256": extractor.weights_sha256,
        "state_sha256": state_sha256(state),
        "weights_source": extractor.source,
        "channels": extractor.channels,
        "resolution": extractor.resolution,
        "feature_dim": extractor.feature_dim,
        "num_classes": extractor.num_classes,
        "classes": extractor.classes,
    }
    clash = sorted(set(meta) & set(info))
    if clash:
        raise ValueError(f"meta may not set {', '.join(clash)}")
    info.update(meta)
    torch.save(state, directory / EXTRACTOR_WEIGHTS)
    (directory / EXTRACTOR_META).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def load_extractor(directory: Path) -> tuple[Extractor, dict[str, Any]]:
    """Rebuild a saved extractor from data (no pickled code); returns it and its json dict.

    Raises :class:`GanlibError` when the files are missing, of an unknown format, or the
    weights do not hash to what ``extractor.json`` recorded.
    """
    directory = Path(directory)
    meta_path, weights = directory / EXTRACTOR_META, directory / EXTRACTOR_WEIGHTS
    if not (meta_path.is_file() and weights.is_file()):
        raise GanlibError(
            f"{directory}: no saved extractor ({EXTRACTOR_META} + {EXTRACTOR_WEIGHTS}); "
            "run the featurize stage first"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != EXTRACTOR_FORMAT or meta.get("kind") not in NETS:
        raise GanlibError(
            f"{meta_path}: format {meta.get('format')} / kind {meta.get('kind')!r} is not "
            f"known to this ganlib (format {EXTRACTOR_FORMAT}); re-run the featurize stage"
        )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if state_sha256(state) != meta["state_sha256"]:
        raise GanlibError(
            f"{weights}: weights differ from what {EXTRACTOR_META} recorded; "
            "re-run the featurize stage"
        )
    kind = meta["kind"]
    net = NETS[kind](**meta["config"])
    net.load_state_dict(state)
    extractor = Extractor(
        kind,
        net,
        meta["config"],
        classes=meta["classes"],
        weights_sha256=meta["weights_sha256"],
        source=meta["weights_source"],
    )
    return extractor, meta
