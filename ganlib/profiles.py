"""Task profiles: how a task's section of ``params.yaml`` overrides the other sections.

A *task section* (``inpainting:``, ``translation:``; a config dataclass with ``PROFILE =
True``) holds the task's own keys and, besides them, ``data``, ``train``, ``featurize``,
``tune``, ``eval`` and ``register`` sections (:data:`PROFILE_SECTIONS`) whose keys replace the
top-level ones when ``task`` names that section. So ``-S task=inpainting`` alone switches the
data, the model and the registry name.

A task section with a ``VARIANT`` key (translation's ``mode``) may also hold one sub-profile
per value of that key (``translation.unpaired:``), which goes on top of the section's profile
when the key has that value, and may also set the section's own keys.

This module only rearranges plain dicts; :meth:`ganlib.config.Params.from_dict` validates every
variant it returns (the inactive ones too, so that a mistake shows whatever the task).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from ganlib.errors import ConfigError

# The sections a task's profile may override, key by key.
PROFILE_SECTIONS = ("data", "train", "featurize", "tune", "eval", "register")


def _require(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"params.yaml: {key}: {why}")


def resolve(
    raw: Mapping[str, Any], sections: Mapping[str, type], task: str
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], str]]]:
    """Apply the profiles of ``raw`` (a params dict) for ``task``.

    ``sections`` maps each task section's name to its config dataclass. Returns the params
    with the active profile merged in (the profile sections removed from every task section),
    and ``(params, note)`` for every other profile variant, merged the same way, to be
    validated on its own; ``note`` says which profile it is, e.g. ``" (with the translation
    unpaired profile)"``.
    """
    raw = dict(raw)
    variants: dict[tuple[str, str | None], dict[str, Any]] = {}
    for name, cls in sections.items():
        base = _split(raw, name)
        key = getattr(cls, "VARIANT", None)
        if key is None:
            variants[(name, None)] = base
            continue
        own_keys = [f.name for f in dataclasses.fields(cls) if f.name != key]
        values = typing.get_args(typing.get_type_hints(cls)[key])
        subs = {value: _split_variant(raw, name, value, own_keys) for value in values}
        for value, overrides in subs.items():
            own = {**overrides.get(name, {}), key: value}
            variants[(name, value)] = _stack(base, {**overrides, name: own})
    active = None
    if task in sections:
        key = getattr(sections[task], "VARIANT", None)
        value = None
        if key is not None:
            default = {f.name: f.default for f in dataclasses.fields(sections[task])}[key]
            value = (raw.get(task) or {}).get(key, default)
        active = (task, value)
    others = [
        (_merge(raw, overrides), f" (with the {' '.join(filter(None, which))} profile)")
        for which, overrides in variants.items()
        if which != active
    ]
    return _merge(raw, variants.get(active, {})), others


def _split(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """Take the profile sections out of ``raw[name]`` (``raw`` gets a copy without them);
    returns them."""
    section = raw.get(name)
    if not isinstance(section, Mapping):
        return {}
    own = dict(section)
    overrides = _sections(own, name)
    for key in overrides:
        own.pop(key)
    raw[name] = own
    return overrides


def _split_variant(
    raw: dict[str, Any], name: str, value: str, own_keys: list[str]
) -> dict[str, Any]:
    """Take the sub-profile ``raw[name][value]`` out; returns its profile sections and, under
    ``name``, the section keys it sets."""
    section = raw.get(name)
    if not isinstance(section, Mapping) or value not in section:
        return {}
    own = dict(section)
    sub = own.pop(value)
    raw[name] = own
    where = f"{name}.{value}"
    _require(isinstance(sub, Mapping), where, f"must be a mapping (got {sub!r})")
    unknown = [k for k in sub if k not in PROFILE_SECTIONS and k not in own_keys]
    _require(
        not unknown,
        f"{where}.{unknown[0] if unknown else ''}",
        f"unknown key; a {name} variant profile holds {', '.join(PROFILE_SECTIONS)} sections "
        f"and {name} keys",
    )
    sections = {k: dict(v) for k, v in _sections(sub, where).items()}
    keys = {k: v for k, v in sub.items() if k not in PROFILE_SECTIONS}
    return {**sections, name: keys} if keys else sections


def _sections(section: Mapping[str, Any], where: str) -> dict[str, Any]:
    overrides = {k: section[k] for k in PROFILE_SECTIONS if k in section}
    for key, value in overrides.items():
        _require(isinstance(value, Mapping), f"{where}.{key}", f"must be a mapping (got {value!r})")
    return overrides


def _stack(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Two profiles' overrides as one, ``top``'s keys winning."""
    out = {k: dict(v) for k, v in base.items()}
    for key, values in top.items():
        out[key] = {**out.get(key, {}), **values}
    return out


def _merge(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with each override section's keys replacing that section's."""
    out = dict(raw)
    for key, values in overrides.items():
        base = out.get(key) or {}
        _require(isinstance(base, Mapping), key, "must be a mapping")
        out[key] = {**base, **values}
    return out
