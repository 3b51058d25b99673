"""The protocol card: what a number was measured under.

A GAN metric is only comparable under the same extractor, reference and sample counts: FID
moves by 2x between implementations and settings. Every number goes out with its
:func:`protocol_card`; numbers with different cards (a different :func:`protocol_hash`) are
never compared or promoted against each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ganlib.metrics.inception import PROTOCOLS

RANDOM_NOTE = "random-network features: numbers are comparable only under this exact card"
GRAY_NOTE = "grayscale images replicated to RGB for Inception"


def protocol_card(
    meta: Mapping[str, Any],
    *,
    split: str,
    num_real: int,
    num_fake: int,
    resolution: int,
    channels: int,
    seed: int,
) -> dict[str, Any]:
    """What a number was measured under; ``meta`` is the extractor's json dict.

    Two numbers may be compared only when their cards are equal (same :func:`protocol_hash`).
    """
    card = {
        "extractor": meta["kind"],
        "weights_sha256": meta["weights_sha256"],
        "feature_dim": int(meta["feature_dim"]),
        "reference_split": split,
        "num_real": int(num_real),
        "num_fake": int(num_fake),
        "resolution": int(resolution),
        "channels": int(channels),
        "seed": int(seed),
    }
    if meta["kind"] == "random":
        card["note"] = RANDOM_NOTE
    if meta["kind"] == "inception":  # stated as papers state them (ganlib.metrics.inception)
        protocol = meta["config"].get("protocol", "pytorch-fid")  # files before protocols
        resize, (lo, hi) = PROTOCOLS[protocol]
        card |= {"weights": protocol, "resize": resize, "input_range": [lo, hi]}
        if channels == 1:
            card["note"] = GRAY_NOTE
    if "choice" in meta:  # why auto kept the random network for RGB data
        card["extractor_choice"] = meta["choice"]
    return card


# Card entries that explain rather than define the measurement: not hashed, so the same
# features score under one hash whether or not auto could have taken the Inception.
EXPLANATIONS = ("extractor_choice",)


def protocol_hash(card: Mapping[str, Any]) -> str:
    """16 hex chars of the sha256 of the card's canonical JSON (sorted keys, no spaces),
    without its :data:`EXPLANATIONS`."""
    card = {k: v for k, v in card.items() if k not in EXPLANATIONS}
    canonical = json.dumps(card, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
