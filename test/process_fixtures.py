"""`taseg` as a real process, for the tests that send it signals or close its pipes: every wait is a
condition polled up to a generous deadline (never a fixed sleep): the machine may be loaded."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 240.0  # a cold `import torch` on a loaded machine is slow; a hang still fails


def taseg(*args) -> subprocess.Popen:
    """`taseg ARGS` as its own process (this checkout's package first on the path)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "taseg_ros.cli", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, what: str, poll_s: float = 0.02) -> None:
    """Poll `condition` until it holds; fail if `process` ends first or the deadline passes."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the process ended (exit {process.returncode}) before {what}\n{out[-2000:]}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {what} within {DEADLINE_S} s")
        time.sleep(poll_s)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=DEADLINE_S)
    return process.returncode, out, err


def proc_text(process: subprocess.Popen, name: str) -> str:
    """/proc/<pid>/<name> of the process ('' once it is gone)."""
    try:
        return Path(f"/proc/{process.pid}/{name}").read_text()
    except OSError:
        return ""


def has_open(process: subprocess.Popen, suffix: str) -> bool:
    """Whether the process holds a file ending in `suffix` open (it is reading it)."""
    try:
        fds = os.listdir(f"/proc/{process.pid}/fd")
        return any(os.readlink(f"/proc/{process.pid}/fd/{fd}").endswith(suffix) for fd in fds)
    except OSError:
        return False
