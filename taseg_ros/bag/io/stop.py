"""Ctrl-C for long loops over a recording: the first one asks the loop to stop at a safe point (so
outputs get finished), a second one aborts."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class StopRequest:
    """Set by the first Ctrl-C inside ``stop_on_sigint``; long loops check it between frames."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


@contextmanager
def stop_on_sigint(message: str = "stopping after the current frame (Ctrl-C again to abort)") -> Iterator[StopRequest]:
    """The first SIGINT asks the loop to stop at a safe point (outputs get finished); a second one raises
    KeyboardInterrupt as usual. Outside the main thread signals cannot be caught: a no-op there."""
    import sys

    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        if stop:
            raise KeyboardInterrupt
        stop.set()
        print(f"\n{message}", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
