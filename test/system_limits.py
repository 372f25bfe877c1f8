"""Limits a test puts on its own process to simulate what the system refuses."""
from __future__ import annotations

import resource
import signal
from contextlib import contextmanager


@contextmanager
def file_size_limit(limit: int | None):
    """Within the block, no file of this process grows past `limit` bytes (EFBIG, like ENOSPC on a full
    disk: the libraries wrap both alike); SIGXFSZ is ignored. None: no limit."""
    if limit is None:
        yield
        return
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)
