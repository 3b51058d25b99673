"""The exception types for problems a user can fix (bad params, bad paths, bad data)."""


class GanlibError(Exception):
    """A user-facing error: its message is one line that says what is wrong and how to fix it.

    Stage entry points and the CLI print it on stderr without a traceback and exit non-zero.
    """


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
