"""The package's own error types.

`taseg` prints any TasegError as one line naming the file, key or topic (no traceback); every
other exception is a bug and keeps its traceback. Subclasses also derive from ValueError so
that callers catching ValueError (the API before this module) keep working."""
from __future__ import annotations

from typing import Iterable


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


def safe_text(value: object, limit: int | None = 80) -> str:
    """Text from a file or a message (an Image's encoding, a class name, a topic name, a zip member)
    made safe for one log line, error message or comment line: control characters, ANSI escape
    sequences, every line break YAML or a terminal knows (``\\n \\r \\v \\f \\x85 \\u2028
    \\u2029``) and other unprintable characters are shown as Python escapes (``\\x1b``, ``\\n``),
    printable non-ASCII text is kept, and anything longer than ``limit`` characters (None: no limit)
    is cut with the full length said. The one home of this escaping: use it (or ``safe_lines``)
    wherever text that came from a file reaches a terminal, a log or a written file. Idempotent: its
    output is printable, so escaping twice changes nothing."""
    text = str(value)
    cut = limit is not None and len(text) > limit
    shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in (text[:limit] if cut else text))
    return f"{shown}...({len(text)} characters)" if cut else shown


def safe_lines(lines: Iterable[object]) -> str:
    """A report (terminal text, a Markdown file) from its lines, each escaped by ``safe_text``: a
    line break inside a field (a recording's topic name, say) cannot start a line of its own, and
    only the breaks between the given lines reach the output."""
    return "\n".join(safe_text(line, limit=None) for line in lines)
