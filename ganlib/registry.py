"""The MLflow side of a trained generator: the pyfunc model, its registered versions, and the
promotion rule (SPEC section 7).

A version is a pyfunc "from code" (``ganlib/serving.py``) whose one artifact is the exported
generator directory (``models/generator``): loading it rebuilds G from its config and reads the
weights as data. ganlib's own package ships with it (``code_paths``), so the model loads where
ganlib is not installed (``mlflow models serve`` with a virtualenv, a Docker image) and always
with the architecture code its weights were trained with.

Promotion: ``champion`` moves to a new version only if its promotion metric (FID; hole L1 for
inpainting) is strictly lower than the champion's under the same protocol hash; otherwise the
new version takes ``challenger``. A
dethroned champion keeps no alias; ``register/model.json`` names it (``previous_champion``) for
a rollback (``set_registered_model_alias(name, "champion", previous)``). The alias is set last,
so a failure anywhere before it leaves ``champion`` where it was; reading the champion,
comparing and setting run under :func:`promotion_lock`, so concurrent registers serialise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from ganlib.artifacts import load_generator
from ganlib.config import validate_model_name
from ganlib.errors import GanlibError
from ganlib.tasks import TASKS, get_task

CHAMPION, CHALLENGER = "champion", "challenger"
METRIC_TAG, PROTOCOL_TAG = "promotion_metric", "protocol_hash"  # e.g. fid; its value: metric.fid
# Each version's standing, kept true under the promotion lock: exactly one version says
# "champion" (the alias's), a dethroned one "former champion (vN beat it)".
ROLE_TAG = "role"
# How each task's promotion metric reads in messages; every one is lower-is-better.
METRIC_NAMES = {t.promotion_metric: t.metric_label for t in TASKS.values()}
SERVING_CODE = Path(__file__).with_name("serving.py")  # the models-from-code file
PACKAGE = Path(__file__).parent  # shipped with the model as code_paths


def log_generator(
    client_or_uri: MlflowClient | str,
    run_id: str,
    generator_dir: Path,
    *,
    name: str = "generator",
    limits: Mapping[str, int] | None = None,
) -> str:
    """Log an exported generator directory as a pyfunc model of run ``run_id``.

    The LoggedModel lives in the run's experiment and links to the run (MLmodel ``run_id``, the
    run's outputs, its metrics at the generator's step). Returns ``models:/<model_id>``.

    ``limits`` overrides some of the task's per-request bounds (:class:`ganlib.tasks.base.Limits`:
    ``max_rows``, ``max_pixels``, ``max_total_pixels``); all three are stored with the model
    as its pyfunc ``model_config``, which the served model reads at load time.
    """
    client = _client(client_or_uri)
    _, meta = load_generator(generator_dir)  # refuse a broken directory before logging
    task = get_task(meta["task"])
    bounds = task.limits.override(limits)  # a bad key or value: nothing logged
    run = client.get_run(run_id)
    logged = client.create_logged_model(
        run.info.experiment_id, name=name, source_run_id=run_id, params=run.data.params
    )
    with _process_uris(client.tracking_uri):
        info = Model.log(
            artifact_path=None,  # deprecated for ``name``, yet still a required argument
            name=name,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            step=int(meta["step"]),
            python_model=str(SERVING_CODE),
            artifacts={"generator": str(Path(generator_dir).resolve())},
            code_paths=[str(PACKAGE)],
            signature=task.signature(meta),
            input_example=task.input_example(meta),
            pip_requirements=_pip_requirements(),
            metadata=meta,
            model_config=dataclasses.asdict(bounds),
        )
    return info.model_uri


def register_generator(
    client_or_uri: MlflowClient | str,
    run_id: str,
    generator_dir: Path,
    *,
    model_name: str,
    score: float,
    protocol_hash: str,
    metric: str = "fid",
    tags: Mapping[str, Any] | None = None,
    describe: Callable[[Mapping[str, Any]], str] | None = None,
    model_description: str | None = None,
    limits: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Log, register as a new version of ``model_name``, tag, describe, promote; returns
    model.json.

    ``score`` is the version's value of the promotion ``metric`` (``fid`` for generation and
    translation, ``l1_hole`` for inpainting; lower is better). The version carries ``tags``
    (e.g. other ``metric.<name>``, ``protocol_card``, ``git_commit``, ``data_hash``; dicts and
    lists are stored as JSON) plus ``metric.<metric>``, ``promotion_metric`` and
    ``protocol_hash`` from the arguments, all set in the same call that creates it. The result:
    ``{name, version, alias, reason, run_id, model_uri ("models:/NAME/VERSION"),
    logged_model_uri ("models:/<model_id>"), metric, score, protocol_hash, previous_champion}``,
    the last being the champion's version before this call (None if there was none).

    ``describe(record)`` (record: ``version``, ``alias``, ``reason``) gives the version's
    description, written before the alias; ``model_description`` the registered model's.
    ``limits``: the served model's per-request bounds (see :func:`log_generator`).
    """
    validate_model_name(model_name)
    tags = dict(tags or {})
    value_tag = f"metric.{metric}"
    if value_tag in tags or PROTOCOL_TAG in tags or METRIC_TAG in tags:
        raise ValueError(f"pass {value_tag} and {PROTOCOL_TAG} as score= and protocol_hash=")
    client = _client(client_or_uri)
    logged_uri = log_generator(client, run_id, generator_dir, limits=limits)
    version_tags = {k: _tag_value(v) for k, v in tags.items()}
    version_tags |= {
        value_tag: repr(float(score)),
        METRIC_TAG: metric,
        PROTOCOL_TAG: protocol_hash,
    }
    with _process_uris(client.tracking_uri):
        version = int(mlflow.register_model(logged_uri, model_name, tags=version_tags).version)
    if model_description is not None:
        client.update_registered_model(model_name, description=model_description)
    promotion = promote(client, model_name, version, score, protocol_hash, metric, describe)
    return {
        "name": model_name,
        "version": version,
        "alias": promotion["alias"],
        "reason": promotion["reason"],
        "run_id": run_id,
        "model_uri": f"models:/{model_name}/{version}",
        "logged_model_uri": logged_uri,
        "metric": metric,
        "score": float(score),
        "protocol_hash": protocol_hash,
        "previous_champion": promotion["previous_champion"],
    }


def version_description(
    record: Mapping[str, Any],
    *,
    task_name: str,
    model_name: str,
    metrics: Mapping[str, Any],
    data: Mapping[str, Any],
    run_id: str,
) -> str:
    """A registered version's description (Markdown, as the MLflow UI shows it): what it does,
    the data, its numbers next to their floor or baseline under their protocol card, why it
    has its alias, how to call it, and its sample sheet."""
    task = get_task(task_name)
    card = metrics["protocol"]
    if card["extractor"] == "inception":
        features = (
            f"the standard FID Inception ({card['weights']} weights, {card['resize']} resize "
            "to 299 px): comparable with published numbers of the same protocol"
        )
    else:
        features = f"{card['extractor']} features: comparable only under this exact card"
    uri = f"models:/{model_name}/{record['version']}"
    return "\n\n".join([
        f"**{model_name} v{record['version']}** ({task.name}: {task.summary}), "
        f"**{record['alias']}**: {record['reason']}.",
        f"Data: `{data['source']}`, {data['train']} train / {data['val']} val images of "
        f"{data['resolution']} px, {data['channels']} channel(s).",
        f"Measured on {card['num_fake']} images against {card['num_real']} real "
        f"({card['reference_split']} split), {features}; protocol "
        f"`{metrics['protocol_hash']}`: {task.versus(metrics)}.",
        f"Use it:\n\n```python\n{task.usage(uri)}\n```",
        f"Samples: `runs:/{run_id}/eval/samples.png` (the run's artifacts, eval/).",
    ])  # fmt: skip


def model_description(model_name: str, task_name: str, data_source: str) -> str:
    """The registered model's description: what its versions are and how one becomes
    champion."""
    task = get_task(task_name)
    return (
        f"ganlib {task.name} models ({task.summary}) trained on `{data_source}`. A version "
        f"takes the alias `champion` only if its {task.metric_label} beats the champion's "
        "under the same protocol card; otherwise `challenger`. Each version's description "
        "gives its numbers, data and how to call it."
    )


def decide_alias(
    new_score: float, new_protocol: str, champion: Mapping[str, Any] | None, metric: str = "fid"
) -> tuple[str, str]:
    """The promotion rule: ``("champion" | "challenger", one-line reason)``.

    ``champion`` is ``{"version", "metric", "score", "protocol_hash"}`` of the current
    champion, or None. Scores of another metric or measured under different protocol cards
    are never compared; lower is better, and a tie does not promote.
    """
    if champion is None:
        return CHAMPION, "no champion yet"
    v, old, old_protocol = champion["version"], champion["score"], champion["protocol_hash"]
    name = METRIC_NAMES.get(metric, metric)
    if champion["metric"] != metric:
        return CHALLENGER, (
            f"champion v{v} was ranked by {champion['metric']}, this version by {metric}; "
            "different metrics are never compared"
        )
    if old_protocol != new_protocol:
        return CHALLENGER, (
            f"champion v{v} was measured under protocol {str(old_protocol)[:12]}, this version "
            f"under {new_protocol[:12]}; scores under different protocol cards are never compared"
        )
    if new_score < old:
        return CHAMPION, f"{name} {new_score:.6g} beats champion v{v}'s {old:.6g}"
    return CHALLENGER, f"{name} {new_score:.6g} does not beat champion v{v}'s {old:.6g}"


def current_champion(client: MlflowClient, name: str) -> dict[str, Any] | None:
    """``{"version", "metric", "score", "protocol_hash"}`` of ``name@champion`` from its
    tags, or None."""
    aliases = client.get_registered_model(name).aliases  # {alias: version}
    if CHAMPION not in aliases:
        return None
    mv = client.get_model_version(name, aliases[CHAMPION])
    metric = mv.tags.get(METRIC_TAG, "fid")  # versions registered before the tag: FID
    return {
        "version": int(mv.version),
        "metric": metric,
        "score": float(mv.tags.get(f"metric.{metric}", math.nan)),  # NaN: nothing beats it
        "protocol_hash": mv.tags.get(PROTOCOL_TAG),
    }


def promote(
    client: MlflowClient,
    name: str,
    version: int,
    score: float,
    protocol_hash: str,
    metric: str = "fid",
    describe: Callable[[Mapping[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """Apply :func:`decide_alias` to version ``version``, write its description
    (``describe``, which gets ``{"version", "alias", "reason"}``) and set its alias (the last
    write).

    Returns ``{"alias", "reason", "previous_champion"}``: the champion's version before this
    call, or None.
    """
    with promotion_lock(client, name):  # read, compare and set as one step
        champion = current_champion(client, name)
        alias, reason = decide_alias(float(score), protocol_hash, champion, metric)
        if describe is not None:
            record = {"version": version, "alias": alias, "reason": reason}
            client.update_model_version(name, str(version), description=describe(record))
        client.set_model_version_tag(name, str(version), ROLE_TAG, alias)
        client.set_registered_model_alias(name, alias, str(version))
        if alias == CHAMPION and champion is not None:  # its records stop claiming champion
            _dethrone(client, name, champion["version"], version)
    return {
        "alias": alias,
        "reason": reason,
        "previous_champion": champion["version"] if champion else None,
    }


def _dethrone(client: MlflowClient, name: str, old: int, new: int) -> None:
    """Version ``old`` lost the alias to ``new``: its role tag and the head of its description
    say so (the rest of the description, its numbers, stays)."""
    client.set_model_version_tag(name, str(old), ROLE_TAG, f"former champion (v{new} beat it)")
    text = client.get_model_version(name, str(old)).description or ""
    note = f"**Former champion**: v{new} beat it and holds `@champion` now.\n\n"
    if not text.startswith("**Former champion**"):
        client.update_model_version(name, str(old), description=note + text)


LOCK_SUFFIX = ".promotion-lock"
LOCK_LEASE_S = 120.0  # a lock older than this was left by a crashed register stage
LOCK_WAIT_S = 300.0


def lock_name(name: str) -> str:
    """The registered model that exists while a version of ``name`` is being promoted."""
    if len(name) + len(LOCK_SUFFIX) <= 256:  # MLflow's longest name
        return name + LOCK_SUFFIX
    return f"{name[:200]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}{LOCK_SUFFIX}"


@contextlib.contextmanager
def promotion_lock(
    client: MlflowClient, name: str, *, wait_s: float = LOCK_WAIT_S, lease_s: float = LOCK_LEASE_S
) -> Iterator[None]:
    """Serialise the promotions of ``name`` across processes and machines.

    The mutex is the registry's own unique name constraint, so any SQL-backed registry honours
    it, directly or behind an MLflow server (tested on SQLite): the lock is held by whoever
    created the registered model :func:`lock_name`, and released by deleting it. A lock older than
    ``lease_s`` (its holder died) is broken. Waiting longer than ``wait_s`` is one line.
    """
    lock = lock_name(name)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.create_registered_model(
                lock,
                tags={"expires_at": f"{time.time() + lease_s:.3f}"},
                description=f"held while ganlib promotes a version of {name}; deleted after",
            )
            break
        except MlflowException as exc:
            # Held; or released between the failed insert and MLflow's look-up of the holder
            # (the SQL store then reports the lock "not found"): try again either way.
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        _break_if_stale(client, lock)
        if time.monotonic() > deadline:
            raise GanlibError(
                f"registry: another register stage has been promoting {name} for over "
                f"{wait_s:.0f} s; if none is running, delete the registered model {lock}"
            )
        time.sleep(0.05 + 0.1 * random.random())  # jitter: waiters do not move in step
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(lock)


def _break_if_stale(client: MlflowClient, lock: str) -> None:
    try:
        expires = float(client.get_registered_model(lock).tags.get("expires_at", "inf"))
    except MlflowException:  # released meanwhile
        return
    if time.time() > expires:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(lock)


def predict_registered(model_uri: str, tracking_uri: str, frame: pd.DataFrame) -> np.ndarray:
    """Load ``models:/NAME@alias`` (or ``/VERSION``) and run it on ``frame``:
    ``uint8 [N, H, W, C]``; MLflow's errors become one-line GanlibErrors."""
    return _predict(_load(model_uri, tracking_uri), model_uri, frame)


def sample_registered(
    model_uri: str, tracking_uri: str, seeds: Sequence[int], labels: Sequence[int] | None = None
) -> np.ndarray:
    """Load ``models:/NAME@alias`` (or ``/VERSION``) and sample it: ``uint8 [N, H, W, C]``.

    Any number of seeds: they go in requests as large as the model's limits allow (its rows
    and pixels per request), which give the same images (each seed's image is its own)."""
    model = _load(model_uri, tracking_uri)
    meta = model.metadata.metadata  # the exported generator's, logged with the model
    limits = get_task(meta["task"]).limits.override(model.model_config)
    per_request = max(1, min(limits.max_rows, limits.max_total_pixels // meta["resolution"] ** 2))
    frame = pd.DataFrame({"seed": seeds}, dtype="int64")
    if labels is not None:
        frame["label"] = pd.Series(labels, dtype="int64")
    starts = range(0, max(len(frame), 1), per_request)
    parts = [_predict(model, model_uri, frame.iloc[i : i + per_request]) for i in starts]
    return np.concatenate(parts)


def _load(model_uri: str, tracking_uri: str) -> mlflow.pyfunc.PyFuncModel:
    with tempfile.TemporaryDirectory() as tmp, _process_uris(tracking_uri):
        try:  # resolving models:/NAME@alias reads the process-wide registry URI
            local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        except MlflowException as exc:
            raise GanlibError(f"{model_uri}: {_one_line(exc.message)} ({tracking_uri})") from None
        try:
            return mlflow.pyfunc.load_model(local)  # reads everything it needs into memory
        except (MlflowException, OSError) as exc:  # the version's files are gone or cut short
            why = _one_line(getattr(exc, "message", None) or str(exc))
            raise GanlibError(
                f"{model_uri}: its files in the artifact store are missing or incomplete "
                f"({why}); register it again (dvc repro -f register)"
            ) from None


def _predict(model: mlflow.pyfunc.PyFuncModel, model_uri: str, frame: pd.DataFrame) -> np.ndarray:
    try:
        return model.predict(frame)
    except MlflowException as exc:
        raise GanlibError(f"{model_uri}: {_one_line(exc.message)}") from None


def _client(client_or_uri: MlflowClient | str) -> MlflowClient:
    if isinstance(client_or_uri, MlflowClient):
        return client_or_uri
    return MlflowClient(tracking_uri=client_or_uri, registry_uri=client_or_uri)


@contextlib.contextmanager
def _process_uris(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at ``uri`` for the block.

    ``Model.log``, ``register_model``, the SQL registry's lookup of a ``models:/<id>`` source
    and the resolution of ``models:/NAME@alias`` take no client: they read these. MLflow
    mirrors them into environment variables; afterwards both are unset again and the
    environment is put back, so MLflow follows it as before.
    """
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _pip_requirements() -> list[str]:
    """What the model imports (pillow: ganlib.grid), pinned to this environment; MLflow adds
    itself. A local build tag such as torch's ``+cpu`` is no version pip can find: dropped."""
    packages = ("torch", "numpy", "pandas", "pillow")
    return [f"{p}=={installed_version(p).split('+')[0]}" for p in packages]


def _tag_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return repr(value) if isinstance(value, float) else str(value)


def _one_line(message: str) -> str:
    return " ".join(message.split())
