"""What every stage module shares: reading params.yaml and turning user errors into one line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ganlib.config import Params, load_params
from ganlib.errors import GanlibError

PARAMS_FILE = "params.yaml"
# Paths stages share, relative to the project directory.
SHARDS = Path("data/shards")
FEATURIZE = Path("featurize/extractor")
TUNE_BEST = Path("tune/best.yaml")
GENERATOR = Path("models/generator")
TRAIN_SUMMARY = Path("train/summary.json")


def params() -> Params:
    """The validated ``params.yaml`` of the working directory."""
    return load_params(PARAMS_FILE)


def run(main: Callable[[], object]) -> None:
    """Run a stage's ``main``: a :class:`GanlibError` becomes one line on stderr and exit 2."""
    try:
        main()
    except GanlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
