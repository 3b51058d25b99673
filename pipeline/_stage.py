"""What every stage module shares: reading params.yaml and turning user errors into one line."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

from ganlib.config import Params, load_params
from ganlib.errors import GanlibError, Interrupted

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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same cleanup runs."""


def _terminate(signum, frame) -> None:
    raise Terminated


def run(main: Callable[[], object]) -> None:
    """Run a stage's ``main``: a :class:`GanlibError` becomes one line on stderr and exit 2;
    an interruption (SIGINT, SIGTERM) one line and exit 130 or 143.

    SIGTERM is raised as an exception like SIGINT, so that ``finally`` blocks and the MLflow
    run's status see it (the default action kills the process on the spot). The train stage
    catches both during training to stop at a step boundary (:func:`ganlib.training.
    distributed.fit`).
    """
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
    except Interrupted as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(exc.exit_code)
    except GanlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        again = "`dvc repro` runs it again"
        print(f"error: interrupted before the stage finished; {again}", file=sys.stderr)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
