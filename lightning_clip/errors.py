"""Errors for bad user input: a config value, a data file or a checkpoint, named in the message.

The command-line entry points print these as one line instead of a traceback.
"""


class InputError(ValueError):
    """A config value or data file that cannot be used; the message names the key or file."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or directory named in the config does not exist."""


class BadImageError(InputError):
    """An image file that could not be read; the message names the file."""


def require(condition: bool, key: str, value, allowed: str) -> None:
    """Raise an InputError naming `key`, the `value` received and what is `allowed`."""
    if not condition:
        raise InputError(f"{key}={value!r} is not allowed: it must be {allowed}")
