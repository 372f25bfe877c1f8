"""Log throttling per kind of problem and per stream. ROS-free.

rclpy's ``throttle_duration_sec`` keeps one throttle per call site: when every input warning went
through one call site, an unknown encoding, an empty image and a truncated image within the window
logged only the first. Here each (kind, stream) key has its own window."""
from __future__ import annotations

import threading
import time
from typing import Callable, Hashable


class LogThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._lock = threading.Lock()  # subscription callbacks and the inference thread both log

    def allow(self, key: Hashable, period_s: float) -> bool:
        """True when ``key`` has not been let through within the last ``period_s`` seconds."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < period_s:
                return False
            self._last[key] = now
            return True
