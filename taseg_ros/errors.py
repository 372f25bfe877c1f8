"""The package's own error types.

`taseg` prints any TasegError as one line naming the file, key or topic (no traceback); every
other exception is a bug and keeps its traceback. Subclasses also derive from ValueError so
that callers catching ValueError (the API before this module) keep working."""
from __future__ import annotations


class TasegError(Exception):
    """A user mistake or an unusable input; the message says what and where, in one line."""


class OutputPathError(TasegError, ValueError):
    """An output path that cannot or must not be written (exists, under a file, overlaps an input)."""
