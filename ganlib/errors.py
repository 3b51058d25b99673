"""The exception types for problems a user can fix (bad params, bad paths, bad data)."""


class GanlibError(Exception):
    """A user-facing error: its message is one line that says what is wrong and how to fix it.

    Stage entry points and the CLI print it on stderr without a traceback and exit non-zero.
    """


class ConfigError(GanlibError):
    """A params value is unknown, of the wrong type, or out of range."""
