"""The `taseg` command line: one entry point, one module per subcommand.

Each module in COMMANDS defines `register(subparsers)` which adds its parser and
sets `func` to a callable taking the parsed args and returning an exit code.
Building the parser imports every command module, so a command module imports at its top only
light modules (argparse helpers, settings and vocabulary modules: standard library, numpy, PyYAML);
torch, OpenCV, rosbags, the runtimes, Ray and matplotlib load in its run function, after the
arguments are parsed. `taseg --help`, `taseg <cmd> --help` and `taseg weights` load none of them
(test/test_layers.py checks it in a fresh process).
"""
from __future__ import annotations

import argparse
import collections
import importlib
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager

from taseg_ros.errors import InputWarning, TasegError, safe_text
from taseg_ros.outputs import write_error

# name -> module (relative to this package); the order is the order in --help.
COMMANDS = {
    "demo": ".demo",
    "info": ".info",
    "init": ".init",
    "export": ".export",
    "weights": ".weights",
    "train": ".train",
    "eval": ".eval",
    "score": ".score",
    "predict": ".predict",
    "bag": ".bag",
    "label": ".label",
    "bench": ".bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taseg",
        description="TASeg RGB-thermal semantic segmentation: model, training, evaluation, ROS 2 tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        importlib.import_module(module_name, __name__).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # SIGTERM is Ctrl-C from the first moment: building the parser loads the commands' modules
    # (seconds), and a SIGTERM then ended the process by the signal (-15) instead of exit 143.
    with sigterm_as_sigint() as terminated:
        try:
            return _run(argv, terminated)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM: every command's clean-up has run
            print("terminated" if terminated else "interrupted", file=sys.stderr)
            return 128 + signal.SIGTERM if terminated else 130
        except BrokenPipeError:  # stdout's reader left (`taseg bag info REC | head -1`): it read what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
            return 128 + signal.SIGPIPE  # what a shell reports for a command ended by SIGPIPE


def exit_as_module(code: int) -> None:
    """``sys.exit(code)`` for ``python -m taseg_ros.cli[.bag]``. CPython sets its "ended by Ctrl-C" flag
    whenever a KeyboardInterrupt leaves an exec() of a string (dataclasses and namedtuples build their
    methods so), also one the command then handled; under ``python -m`` the interpreter then kills
    itself with SIGINT at exit (-2) instead of exiting with ``code`` (143 after a SIGTERM). Every exec()
    of a string clears the flag as it starts, so one more resets it. (The `taseg` script exits at once.)"""
    exec("None")
    sys.exit(code)


def _run(argv: list[str] | None, terminated: list[int]) -> int:
    parser = build_parser()
    # key=value overrides may stand anywhere, also after options (argparse alone would
    # refuse a positional list once an option has followed it).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(item.startswith("-") or "=" not in item for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra

    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, where main answers it, not at interpreter exit
        return 128 + signal.SIGTERM if terminated and code == 130 else code  # a loop stopped early, cleanly
    # User errors: one clear line, no traceback. The package raises TasegError subclasses for
    # what it refuses; FileNotFoundError is the system's own word for a path the user gave, and
    # names it. Anything else (a ValueError from deep inside numpy, say) is a bug and keeps its
    # traceback.
    except (TasegError, FileNotFoundError) as exc:
        print(f"taseg {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise  # main's
    # The system refusing a write the package did not route through outputs.replacing (a
    # library's own files): disk full, name too long, read-only, no permission. One line, the file
    # named; the output policy has already removed what the run created.
    except OSError as exc:
        refusal = write_error(exc, exc.filename or "a file")  # some writers do not say which
        if refusal is None:
            raise
        print(f"taseg {args.command}: error: {_one_line(refusal)}", file=sys.stderr)
        return 2


@contextmanager
def sigterm_as_sigint():
    """Within the block, SIGTERM (timeout, systemd, docker stop) does what Ctrl-C does at that
    moment: SIGINT's current handler runs (KeyboardInterrupt, so every command's clean-up runs; in
    the long loops of bag_io.stop.stop_on_sigint, a stop at the next safe point). The yielded list
    records the SIGTERMs received. Signals can only be handled in the main thread: a no-op elsewhere."""
    terminated: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield terminated
        return

    def handler(signum, frame):
        terminated.append(signum)
        on_sigint = signal.getsignal(signal.SIGINT)
        if not callable(on_sigint):  # SIGINT ignored (a background job of a script) or default
            raise KeyboardInterrupt
        on_sigint(signal.SIGINT, frame)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield terminated
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def counted_input_warnings():
    """Within the block, every InputWarning (all-NaN thermal, resized thermal, ...) is printed as
    `warning: ...` when it happens and counted by kind in the yielded Counter."""
    counts = collections.Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)  # every file counts, also in a second run
        shown = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if issubclass(category, InputWarning):
                counts[message.kind] += 1
                print(f"warning: {safe_text(message, limit=None)}", file=sys.stderr)  # names files and topics
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield counts


def _one_line(exc: BaseException) -> str:
    """The message on one line (YAML parser messages and the like span several), escaped: it names
    topics, zip members and fields of the user's files, whose text must not drive the terminal."""
    from taseg_ros.errors import safe_text

    return safe_text(" ".join(str(exc).split()) or type(exc).__name__, limit=None)


if __name__ == "__main__":
    sys.exit(main())
