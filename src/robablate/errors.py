"""The two kinds of error a user can fix, a bad config and bad data (and a check that raises one).

Both are raised before any training step; `run.py` turns them into a one-paragraph message on
stderr and a non-zero exit instead of a traceback. `int_at_least` is the one check of an integer
setting (one error style: "Invalid config `key`: expected ..., got ...").
"""

from __future__ import annotations

import numbers


class RobablateError(Exception):
    """Base class for errors that are the user's to fix (shown without a traceback)."""


class ConfigError(RobablateError, ValueError):
    """A config key holds a value that is not allowed; the message names the key and what is allowed."""


class DataError(RobablateError, ValueError):
    """Input data is missing or malformed; the message names the file (and line or byte offset)."""


def is_int(value: object) -> bool:
    """An integer that is not a bool (YAML's `true` is an int to Python); numpy integers count."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def int_at_least(value: object, key: str, minimum: int = 1, *, null: bool = False, why: str = "") -> int | None:
    """THE check of an integer setting, in the one error style: `value` as an int when it is an integer
    >= minimum (a bool is not), None when it is null and `null` allows it; else a ConfigError naming `key`."""
    if value is None and null:
        return None
    if not is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"Invalid config `{key}`: expected {'null or ' if null else ''}{what}"
                          f"{f' ({why})' if why else ''}, got {value!r}.")
    return int(value)


def positive_int_or_none(value: object, key: str) -> int | None:
    """`value` if it is null or an integer >= 1 (a cap such as corpus.max_docs), else a ConfigError."""
    return int_at_least(value, key, null=True)
