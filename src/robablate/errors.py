"""The two kinds of error a user can fix, a bad config and bad data (and a check that raises one).

Both are raised before any training step; `run.py` turns them into a one-paragraph message on
stderr and a non-zero exit instead of a traceback.
"""


class RobablateError(Exception):
    """Base class for errors that are the user's to fix (shown without a traceback)."""


class ConfigError(RobablateError, ValueError):
    """A config key holds a value that is not allowed; the message names the key and what is allowed."""


class DataError(RobablateError, ValueError):
    """Input data is missing or malformed; the message names the file (and line or byte offset)."""


def positive_int_or_none(value: object, key: str) -> int | None:
    """`value` if it is null or an integer >= 1 (a cap such as corpus.max_docs), else a ConfigError."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{key}: expected null or a positive integer, got {value!r}.")
    return value
