"""A DDS domain of its own for a self-contained run on one machine: the demo's node and replay, the
ROS bench, the tests. Two such runs at once (a CI run beside a developer's, two test runs) must not
share a domain: on one domain they see each other's nodes and topics (a lifecycle call reaches the
other run's node, a recorder gets the other run's frames). A random pick collides now and then; a
claimed one does not: each id is a lock file that the process holds until it exits (the kernel
releases it then, however the process ends), so a domain is never handed out twice at once.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

# ROS 2's "The ROS_DOMAIN_ID" page: on Linux, ids 0-101 and 215-232 keep every DDS port out of the
# kernel's ephemeral range. 0 is everyone's default (a robot's stack on this network), so it is never
# claimed, and the high ids go first: robots' stacks mostly use low ones.
CANDIDATES = (*range(215, 233), *range(101, 0, -1))

_held: dict[int, int] = {}  # domain id -> the open lock file descriptor (closed only at exit)


def claim_domain() -> int:
    """A domain id no other process on this machine holds through this function; held until exit."""
    for domain in CANDIDATES:
        if domain in _held:
            continue
        path = Path(tempfile.gettempdir()) / f"taseg_ros_domain_{domain}.lock"
        try:
            # read-only and not through a link: a file another user created is locked just as well
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError:
            continue  # a link planted there, or a file we may not read: skip that id
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # held by a running process
            continue
        _held[domain] = fd
        return domain
    raise RuntimeError(f"every DDS domain id this package claims ({len(CANDIDATES)}) is held by another process")
