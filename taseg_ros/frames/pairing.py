"""Pair RGB and thermal frames by header stamp, and hand the newest pair to a worker.

ROS-free (no rclpy import): the node uses it on live topics and the rosbag tools use it on
recorded messages. Stamps are integer nanoseconds (``sec * 1_000_000_000 + nanosec``; use
:func:`stamp_to_ns` on a ``builtin_interfaces/Time`` from rclpy or rosbags). Payloads are
opaque: the node stores the raw messages and only decodes the pair that gets processed.

API
---
``StampPairer(slop_s, queue_size=DEFAULT_QUEUE_SIZE (5), time_reset_s=DEFAULT_TIME_RESET_S (2.0))``
    ``add_rgb(stamp_ns, payload) -> Pair | None`` and ``add_thermal(stamp_ns, payload) -> Pair | None``
    put one frame in; a ``Pair`` comes back as soon as the other stream holds a frame whose
    stamp is within ``slop_s`` (the closest one). Pairing is greedy and immediate, so a pair
    is never delayed waiting for a possibly better match.

    Rules (each rejected or discarded frame is counted in ``PairingStats``):

    - zero stamp (``stamp_ns == 0``: a driver that does not set stamps): rejected,
      ``zero_stamp``. Pairing by time is meaningless without a time.
    - stamp not newer than the last accepted stamp of the same stream: rejected,
      ``out_of_order`` — unless it is older by more than ``time_reset_s``, which is a clock
      reset (``ros2 bag play --loop``, a restarted simulator): the stream's buffer is
      emptied, the frame is accepted and ``time_resets`` counts it.
    - a buffered frame that can no longer match (the other stream has moved more than
      ``slop_s`` past it), or that is evicted because its buffer holds ``queue_size``
      frames, or that is older than a frame just paired: discarded, ``unmatched_rgb`` /
      ``unmatched_thermal``.

    Memory is bounded: at most ``queue_size`` frames per stream are held.
    ``on_reject`` (optional callable ``(stream, event, stamp_ns)``, called outside the lock)
    hears about "zero_stamp", "out_of_order" and "time_reset", e.g. to log them.

``LatestSlot()``
    A one-element hand-off between the subscription callbacks and the inference thread
    that implements "the newest pair wins": ``put(item)`` replaces a pending item that was
    not taken yet (and counts it in ``dropped``); ``take(timeout)`` blocks until an item is
    available, the timeout passes (``None``) or ``close()`` is called (``None``).

Both classes are thread-safe.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from taseg_ros.errors import InputError

NS_PER_S = 1_000_000_000
# Largest RGB/thermal stamp difference of a pair (node parameter slop, --slop of every bag command):
# well under one frame period at 30 fps (33 ms).
DEFAULT_SLOP_S = 0.02
# Frames held per camera while waiting for a partner (node parameter queue_size), and how far back a
# stamp may jump before it counts as a clock reset (a replayed or restarted recording), not a late frame.
DEFAULT_QUEUE_SIZE = 5
DEFAULT_TIME_RESET_S = 2.0


def check_slop(slop_s: float, name: str = "pairing slop") -> float:
    """`slop_s` when it is a usable slop (>= 0 seconds; NaN is not), else InputError naming `name`."""
    if not slop_s >= 0.0:
        raise InputError(f"{name} must be >= 0 seconds, got {slop_s}")
    return slop_s

T = TypeVar("T")


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (rclpy or rosbags message: ``sec``, ``nanosec``) -> int ns."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


@dataclass(frozen=True)
class Pair:
    rgb_stamp_ns: int
    thermal_stamp_ns: int
    rgb: Any
    thermal: Any

    @property
    def skew_ns(self) -> int:
        """Thermal stamp minus RGB stamp."""
        return self.thermal_stamp_ns - self.rgb_stamp_ns


@dataclass
class PairingStats:
    rgb_received: int = 0
    thermal_received: int = 0
    pairs: int = 0
    unmatched_rgb: int = 0
    unmatched_thermal: int = 0
    zero_stamp: int = 0
    out_of_order: int = 0
    time_resets: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Stream:
    name: str
    buffer: deque = field(default_factory=deque)  # (stamp_ns, payload), increasing stamps
    last_stamp_ns: int | None = None


class StampPairer:
    """Approximate-time pairing of two streams (see the module docstring for the rules)."""

    def __init__(self, slop_s: float, queue_size: int = DEFAULT_QUEUE_SIZE, time_reset_s: float = DEFAULT_TIME_RESET_S) -> None:
        check_slop(slop_s)
        if queue_size < 1:
            raise InputError(f"pairing queue_size must be >= 1, got {queue_size}")
        if not time_reset_s > slop_s:
            raise InputError(f"pairing time_reset_s ({time_reset_s}) must be larger than the slop ({slop_s})")
        self.slop_ns = int(round(slop_s * NS_PER_S))
        self.queue_size = int(queue_size)
        self.time_reset_ns = int(round(time_reset_s * NS_PER_S))
        self.stats = PairingStats()
        self.last_pair_stamp_ns: int | None = None
        self._rgb = _Stream("rgb")
        self._thermal = _Stream("thermal")
        self._lock = threading.Lock()
        # Called (outside the lock) as on_reject(stream, event, stamp_ns) with event
        # "zero_stamp", "out_of_order" (frame rejected) or "time_reset" (frame accepted).
        self.on_reject: Callable[[str, str, int], None] | None = None

    def add_rgb(self, stamp_ns: int, payload: Any) -> Pair | None:
        stamp_ns = int(stamp_ns)
        with self._lock:
            self.stats.rgb_received += 1
            match, event = self._add(self._rgb, self._thermal, stamp_ns, payload)
            pair = None if match is None else self._emit(Pair(stamp_ns, match[0], payload, match[1]))
        self._notify("rgb", event, stamp_ns)
        return pair

    def add_thermal(self, stamp_ns: int, payload: Any) -> Pair | None:
        stamp_ns = int(stamp_ns)
        with self._lock:
            self.stats.thermal_received += 1
            match, event = self._add(self._thermal, self._rgb, stamp_ns, payload)
            pair = None if match is None else self._emit(Pair(match[0], stamp_ns, match[1], payload))
        self._notify("thermal", event, stamp_ns)
        return pair

    def _notify(self, stream: str, event: str | None, stamp_ns: int) -> None:
        if event is not None and self.on_reject is not None:
            self.on_reject(stream, event, stamp_ns)

    def buffered(self) -> tuple[int, int]:
        """Frames waiting for a partner: (rgb, thermal)."""
        with self._lock:
            return len(self._rgb.buffer), len(self._thermal.buffer)

    def reset(self) -> None:
        """Forget buffered frames and last stamps (e.g. when processing is deactivated)."""
        with self._lock:
            for stream in (self._rgb, self._thermal):
                self._count_unmatched(stream, len(stream.buffer))
                stream.buffer.clear()
                stream.last_stamp_ns = None

    # --- internals (called with the lock held) -------------------------------------------

    def _emit(self, pair: Pair) -> Pair:
        self.stats.pairs += 1
        self.last_pair_stamp_ns = pair.rgb_stamp_ns
        return pair

    def _count_unmatched(self, stream: _Stream, n: int) -> None:
        if stream is self._rgb:
            self.stats.unmatched_rgb += n
        else:
            self.stats.unmatched_thermal += n

    def _add(self, own: _Stream, other: _Stream, stamp: int, payload: Any) -> tuple[tuple[int, Any] | None, str | None]:
        """(matched partner (stamp, payload) or None, event for on_reject or None)."""
        event = None
        if stamp <= 0:
            self.stats.zero_stamp += 1
            return None, "zero_stamp"
        if own.last_stamp_ns is not None and stamp <= own.last_stamp_ns:
            if own.last_stamp_ns - stamp <= self.time_reset_ns:
                self.stats.out_of_order += 1
                return None, "out_of_order"
            # Clock went back a long way: a new timeline. Frames of the old one never match.
            self.stats.time_resets += 1
            event = "time_reset"
            self._count_unmatched(own, len(own.buffer))
            own.buffer.clear()
            stale = [item for item in other.buffer if item[0] > stamp + self.time_reset_ns]
            if stale:
                self._count_unmatched(other, len(stale))
                other.buffer = deque(item for item in other.buffer if item[0] <= stamp + self.time_reset_ns)
        own.last_stamp_ns = stamp

        # Partner frames older than stamp - slop can never match: own stamps only increase.
        while other.buffer and other.buffer[0][0] < stamp - self.slop_ns:
            other.buffer.popleft()
            self._count_unmatched(other, 1)

        best_index, best_distance = -1, None
        for index, (other_stamp, _) in enumerate(other.buffer):
            distance = abs(other_stamp - stamp)
            if distance > self.slop_ns:
                if other_stamp > stamp:
                    break  # increasing stamps: the rest are further away
                continue
            if best_distance is None or distance < best_distance:
                best_index, best_distance = index, distance
        if best_index >= 0:
            for _ in range(best_index):  # older partner frames lost to a newer match
                other.buffer.popleft()
                self._count_unmatched(other, 1)
            match = other.buffer.popleft()
            # Own buffered frames older than this one would pair with older partners only.
            self._count_unmatched(own, len(own.buffer))
            own.buffer.clear()
            return match, event

        own.buffer.append((stamp, payload))
        if len(own.buffer) > self.queue_size:
            own.buffer.popleft()
            self._count_unmatched(own, 1)
        return None, event


class LatestSlot(Generic[T]):
    """Newest-wins hand-off of one item between producer callbacks and a consumer thread."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._has_item = False
        self._closed = False
        self._cond = threading.Condition()
        self.dropped = 0  # items replaced before the consumer took them

    def put(self, item: T) -> bool:
        """Offer an item; returns True when it replaced a pending one (counted as dropped)."""
        with self._cond:
            replaced = self._has_item
            if replaced:
                self.dropped += 1
            self._item, self._has_item = item, True
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The pending item (removing it), or None after ``timeout`` seconds or on close()."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout):
                return None
            if self._closed:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item

    def clear(self) -> bool:
        """Discard a pending item without counting it as dropped; True if there was one."""
        with self._cond:
            had = self._has_item
            self._item, self._has_item = None, False
            return had

    def close(self) -> None:
        """Wake a waiting consumer; take() returns None from now on (a pending item stays) until reopen()."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False

    @property
    def pending(self) -> bool:
        with self._cond:
            return self._has_item
