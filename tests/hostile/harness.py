"""The hostile-input tables' one harness: run an entry point in this process, as a user would
call it, and check that it fails the way the project promises.

A case is ``(input, expected exit code, expected line)``. The promise for every expected
failure: a non-zero exit, exactly one line on stderr that matches the expected text (after
``error: `` where the entry point adds it), and no Python stack trace. Good inputs are rows
too (exit 0), so the tables also prove that what should work still works.

Entry points run in-process (a subprocess per row would cost two seconds of imports each):
``ganlib.cli.main`` returns its exit code; a stage's ``main`` runs under ``pipeline._stage.run``,
which exits; the pyfunc's ``predict`` raises the ``MlflowException`` the scoring server turns
into an HTTP 400.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def call(entry: Callable[[], object]) -> Outcome:
    """Run ``entry()`` capturing stdout/stderr; its ``SystemExit`` or return value is the
    exit code (None and no exit are 0). Logging goes to the captured stderr too, so a
    library that logs a traceback instead of raising it is caught."""
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    root = logging.getLogger()
    root.addHandler(handler)
    code: int = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                result = entry()
                code = result if isinstance(result, int) else 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        root.removeHandler(handler)
    return Outcome(code, out.getvalue(), err.getvalue())


def cli(*argv: str) -> Outcome:
    """``ganlib ARGV...``."""
    from ganlib.cli import main

    return call(lambda: main(list(argv)))


def stage(module: str, *argv: str) -> Outcome:
    """``python -m pipeline.MODULE ARGV...`` (in the current working directory)."""
    import importlib

    from pipeline import _stage

    main = importlib.import_module(f"pipeline.{module}").main
    return call(lambda: _stage.run(lambda: main(list(argv))))


def predict(pyfunc, frame) -> Outcome:
    """The pyfunc on ``frame``: exit 0 with the images' shape on stdout, or 400 with the
    message the scoring server sends back (``MlflowException`` of INVALID_PARAMETER_VALUE)."""
    from mlflow.exceptions import MlflowException

    try:
        images = pyfunc.predict(frame)
    except MlflowException as exc:
        status = exc.get_http_status_code()
        return Outcome(status, "", exc.message + "\n")
    return Outcome(0, f"{getattr(images, 'shape', '')}\n", "")


def expect(outcome: Outcome, code: int, line: str | None = None) -> None:
    """``outcome`` exited with ``code``; a failure printed exactly one line matching the regex
    ``line`` (searched, case-sensitive) and no traceback."""
    where = f"stdout:\n{outcome.stdout}\nstderr:\n{outcome.stderr}"
    assert "Traceback" not in outcome.stderr + outcome.stdout, where
    assert outcome.code == code, f"exit {outcome.code}, expected {code}\n{where}"
    if code == 0:
        return
    lines = outcome.lines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}\n{where}"
    if line is not None:
        assert re.search(line, lines[0]), f"{lines[0]!r} does not match {line!r}"


def row(*values, id: str, marks=()):  # noqa: A002 - pytest's own name for it
    """One table row: ``pytest.param`` with a readable id."""
    return pytest.param(*values, id=id, marks=marks)


__all__ = ["Outcome", "call", "cli", "expect", "predict", "row", "stage"]
