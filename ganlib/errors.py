"""The exception types for problems a user can fix (bad params, bad paths, bad data)."""

from __future__ import annotations

import os
import re

# a URL's user:secret@ part; an AWS secret may hold "/": everything up to the "@" goes
_URL_SECRET = re.compile(r"\b([a-z][a-z0-9+.-]*://[^/@:?\s']*):[^@?\s']*@")


def mask_secrets(text: str | os.PathLike) -> str:
    """``text`` (a location, or a message quoting one) with the secret key of every URL
    (``s3://KEY:SECRET@bucket``) replaced by ``***``, the access key kept (it says which keys
    were used). Every :class:`GanlibError` message and every MLflow param passes through it."""
    return _URL_SECRET.sub(r"\1:***@", str(text))


class GanlibError(Exception):
    """A user-facing error: its message is one line that says what is wrong and how to fix it.

    Stage entry points and the CLI print it on stderr without a traceback and exit non-zero.
    The message is masked (:func:`mask_secrets`) when the error is made, so no printer, log or
    Ray worker report shows a secret written into a URL.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(mask_secrets(message))


class ConfigError(GanlibError):
    """A params value is unknown, of the wrong type, or out of range."""


class Interrupted(GanlibError):
    """A stage stopped on SIGINT or SIGTERM after saving what a rerun resumes from.

    ``exit_code`` is the shell's convention, 128 + the signal number (130 for Ctrl-C, 143 for
    SIGTERM).
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
