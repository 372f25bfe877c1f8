"""The package's own error types.

`taseg` prints any TasegError as one line naming the file, key or topic (no traceback); every
other exception is a bug and keeps its traceback. Subclasses also derive from ValueError so
that callers catching ValueError (the API before this module) keep working."""
from __future__ import annotations


class TasegError(Exception):
    """A user mistake or an unusable input; the message says what and where, in one line."""


class InputError(TasegError, ValueError):
    """A value, option or file content the package cannot use; the message names it and says why."""


class MissingInputError(TasegError, FileNotFoundError):
    """A file or folder the command needs is not there; the message names it."""


class OutputPathError(TasegError, ValueError):
    """An output path that cannot or must not be written (exists, under a file, overlaps an input)."""


class InputWarning(UserWarning):
    """An input that is used but deserves a word (all-NaN thermal, a thermal image resized to the RGB
    size); `kind` groups them so a command can count them."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind
