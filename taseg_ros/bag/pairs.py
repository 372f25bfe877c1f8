"""RGB/thermal pairs of a recording, made by the node's own pairing code, plus the node's real-time policy.

Pairing: messages go through ``taseg_ros.frames.pairing.StampPairer`` in *log-time* order (the order
the recorder received them, which is the order a live node would have received them), so the pairs
here are exactly the pairs the node makes on the same stream.

Real-time policy: :class:`RealTimeWorker` is a deterministic simulation of the node's inference
thread. The model (see its docstring) uses ``pairing.LatestSlot``, the node's newest-pair-wins
hand-off, so "dropped by a real-time node" means what the node's diagnostics count as dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from taseg_ros.bag.io.reader import Bag, RawMessage
from taseg_ros.errors import InputError
from taseg_ros.frames.pairing import (
    DEFAULT_QUEUE_SIZE,
    DEFAULT_SLOP_S,
    DEFAULT_TIME_RESET_S,
    NS_PER_S,
    LatestSlot,
    Pair,
    StampPairer,
    check_slop,
    stamp_to_ns,
)


@dataclass(frozen=True)
class PairSource:
    """The options every bag command shares: which recording, which two camera topics (None: found
    by ``topics.resolve_image_topics``), the node's pairing slop and where to stop. Checked once,
    when the command line is read, before anything slow."""

    bag: Path
    rgb_topic: str | None = None
    thermal_topic: str | None = None
    slop_s: float = DEFAULT_SLOP_S
    max_pairs: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bag", Path(self.bag))
        check_slop(self.slop_s, "--slop")
        check_max_pairs(self.max_pairs)


@dataclass(frozen=True)
class RecordedFrame:
    """One camera frame of the recording: its message (rosbags object) and where it sits in time."""

    topic: str
    stamp_ns: int  # header stamp
    log_time_ns: int  # when the recorder received it
    msg: Any
    raw: RawMessage


@dataclass(frozen=True)
class Arrival:
    """One message of the recording in log-time order; ``pair`` is set when it completed a pair
    (the pair's payloads are ``RecordedFrame``s)."""

    message: RawMessage
    frame: RecordedFrame | None
    pair: Pair | None


class BagPairing:
    """Iterate a recording's messages in log-time order and pair RGB with thermal on the way.

    pairing = BagPairing(bag, "/rgb", "/thermal", slop_s=0.02, extra_topics=["/labels"])
    for arrival in pairing:
        if arrival.pair is not None: ...
    pairing.pairer.stats     # PairingStats: received, pairs, unmatched, zero/out-of-order stamps
    """

    def __init__(
        self,
        bag: Bag,
        rgb_topic: str,
        thermal_topic: str,
        slop_s: float,
        *,
        extra_topics: Iterable[str] = (),
        queue_size: int = DEFAULT_QUEUE_SIZE,
        time_reset_s: float = DEFAULT_TIME_RESET_S,
    ) -> None:
        self.bag = bag
        self.rgb_topic = rgb_topic
        self.thermal_topic = thermal_topic
        self.extra_topics = [t for t in extra_topics if t not in (rgb_topic, thermal_topic)]
        self.pairer = StampPairer(slop_s, queue_size=queue_size, time_reset_s=max(time_reset_s, slop_s * 2 + 1e-3))

    def __iter__(self) -> Iterator[Arrival]:
        for message in self.bag.messages([self.rgb_topic, self.thermal_topic, *self.extra_topics]):
            if message.topic not in (self.rgb_topic, self.thermal_topic):
                yield Arrival(message, None, None)
                continue
            msg = self.bag.deserialize(message)
            frame = RecordedFrame(message.topic, stamp_to_ns(msg.header.stamp), message.log_time_ns, msg, message)
            if message.topic == self.rgb_topic:
                pair = self.pairer.add_rgb(frame.stamp_ns, frame)
            else:
                pair = self.pairer.add_thermal(frame.stamp_ns, frame)
            yield Arrival(message, frame, pair)


def check_max_pairs(max_pairs: int | None) -> None:
    """--max-pairs N stops after N pairs; 0 or less would still process the first one."""
    if max_pairs is not None and max_pairs < 1:
        raise InputError(f"--max-pairs must be >= 1, got {max_pairs}")


def failure_summary(reasons: Counter) -> str:
    """The most common reasons pairs could not be used, with their counts, on one line."""
    text = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common(3))
    more = len(reasons) - 3
    return text + (f" (+{more} other reasons)" if more > 0 else "")


@dataclass
class Processed:
    pair: Pair
    arrival_ns: int  # pair complete (log-time clock)
    start_ns: int  # the worker took it
    finish_ns: int  # outputs published
    result: Any = None  # whatever the process callback returned besides its duration

    @property
    def wait_s(self) -> float:
        return (self.start_ns - self.arrival_ns) / NS_PER_S

    @property
    def latency_s(self) -> float:
        """Output time minus the RGB header stamp: the node's own latency definition."""
        return (self.finish_ns - self.pair.rgb_stamp_ns) / NS_PER_S


@dataclass
class RealTimeWorker:
    """Deterministic simulation of the node's single inference thread on a recorded stream.

    Model (mirrors ``TASegNode``): a pair is handed to a newest-wins slot (``LatestSlot``) the
    moment it is complete, i.e. at the receive (log) time of its later frame. One worker takes a
    pair from the slot whenever it is idle and is then busy for that pair's *measured* processing
    time (decode, thermal normalisation, model, colourise/overlay: the node's per-pair work). A pair
    that arrives while the worker is busy waits in the slot; a newer pair arriving before the worker
    is free replaces it and the replaced one counts as dropped. Message delivery and callbacks are
    taken as instantaneous and there is one model instance, as in the node.

    Nothing depends on the wall clock: ``process(pair) -> (seconds, result)`` reports the duration,
    so the same stream and durations always give the same drops (tests feed fixed durations; `bag
    eval` feeds the times it measured running the model).

        worker = RealTimeWorker(process)
        for t_ns, pair in pairs_in_arrival_order:
            worker.offer(pair, t_ns)
        worker.finish()
        worker.processed, worker.dropped
    """

    process: Callable[[Pair], tuple[float, Any]]
    slot: LatestSlot = field(default_factory=LatestSlot)
    free_at_ns: int | None = None
    processed: list[Processed] = field(default_factory=list)
    offered: int = 0
    _pending_since_ns: int = 0

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    def advance(self, now_ns: int) -> None:
        """Let the worker take pending pairs it would have taken before ``now_ns``."""
        while self.slot.pending and self.free_at_ns is not None and self.free_at_ns <= now_ns:
            self._run(max(self.free_at_ns, self._pending_since_ns))

    def offer(self, pair: Pair, now_ns: int) -> None:
        self.advance(now_ns)
        self.offered += 1
        self.slot.put(pair)
        self._pending_since_ns = now_ns
        if self.free_at_ns is None or self.free_at_ns <= now_ns:
            self._run(now_ns)

    def finish(self) -> None:
        while self.slot.pending:
            start = self._pending_since_ns if self.free_at_ns is None else max(self.free_at_ns, self._pending_since_ns)
            self._run(start)

    def _run(self, start_ns: int) -> None:
        pair = self.slot.take(timeout=0)
        if pair is None:
            return
        seconds, result = self.process(pair)
        finish = start_ns + int(round(seconds * NS_PER_S))
        # The slot holds one pair, so the pending pair is the one put last.
        self.processed.append(Processed(pair, self._pending_since_ns, start_ns, finish, result))
        self.free_at_ns = finish


def simulate_realtime(arrivals: list[tuple[int, Pair]], durations_s: dict[int, float]) -> RealTimeWorker:
    """Replay pairs (arrival ns, pair) against known per-pair processing times (keyed by RGB stamp)."""
    worker = RealTimeWorker(lambda pair: (durations_s[pair.rgb_stamp_ns], None))
    for now_ns, pair in arrivals:
        worker.offer(pair, now_ns)
    worker.finish()
    return worker
