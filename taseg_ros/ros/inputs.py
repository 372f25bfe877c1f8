"""The node's way from an input message to the model, without ROS: every message is checked (the
cheap field check) and recorded by the health, then paired by stamp; a complete pair goes into a
newest-wins slot that one inference thread empties. With one camera silent and ``input_fallback:
blank``, the live stream's frames go to the slot alone (``Pair`` with the missing side None).

    InputPath       subscription callbacks -> pairs (or single frames) in the slot
    InferenceThread the slot -> the node's per-pair work, on one thread, stale pairs dropped (counted)
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from taseg_ros.frames.codec import RGB_ENCODINGS, THERMAL_ENCODINGS, ImageDecodeError, check_image_fields
from taseg_ros.frames.pairing import LatestSlot, Pair, StampPairer, stamp_to_ns
from taseg_ros.ros.health import NodeHealth
from taseg_ros.ros.params import NodeParams


class InputPath:
    def __init__(self, params: NodeParams, health: NodeHealth, slot: LatestSlot[Pair]) -> None:
        self.params, self.health, self.slot = params, health, slot
        self.pairer = StampPairer(params.slop, params.pairing_queue_size, params.time_reset)
        self.pairer.on_reject = health.rejected_stamp

    def accept(self, stream: str, msg: Any, clock_ns: int) -> None:
        """One message of ``stream`` ("rgb" or "thermal"); ``clock_ns``: the node's clock at arrival."""
        stamp = stamp_to_ns(msg.header.stamp)
        self.health.arrived(stream, msg, clock_ns, stamp)
        try:
            check_image_fields(msg, RGB_ENCODINGS if stream == "rgb" else THERMAL_ENCODINGS)
        except ImageDecodeError as exc:
            self.health.refused(stream, exc)
            return
        missing = self.health.missing_stream()
        if missing is not None and self.params.input_fallback == "blank":
            if stream != missing:  # the silent stream's first message back ends the fault: the next ones pair
                self.slot.put(Pair(stamp, stamp, msg, None) if stream == "rgb" else Pair(stamp, stamp, None, msg))
            return
        pair = self.pairer.add_rgb(stamp, msg) if stream == "rgb" else self.pairer.add_thermal(stamp, msg)
        if pair is not None:
            self.health.paired(pair)
            self.slot.put(pair)


class InferenceThread:
    """Takes pairs from ``slot`` and hands each to ``handle`` on one thread; an exception of one pair
    goes to ``on_error`` (the thread survives anything a pair does) unless ``stopping()`` says the
    process is going down."""

    def __init__(self, slot: LatestSlot[Pair], handle: Callable[[Pair], None],
                 on_error: Callable[[Exception, Pair], None], stopping: Callable[[], bool]) -> None:
        self.slot, self.handle, self.on_error, self.stopping = slot, handle, on_error, stopping
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="taseg_inference", daemon=True)

    def start(self) -> None:
        self.slot.clear()
        self.slot.reopen()
        self.thread.start()

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop after the pair in hand; False if the thread is still busy after ``timeout`` seconds."""
        self._stop.set()
        self.slot.close()
        self.thread.join(timeout=timeout)
        self.slot.clear()
        return not self.thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            pair = self.slot.take(timeout=0.25)
            if pair is None:
                continue
            try:
                self.handle(pair)
            except Exception as exc:  # noqa: BLE001 - reported per pair; the thread goes on
                if self.stopping():
                    return  # Ctrl-C shut the context down under a pair in flight: nothing left to publish to
                self.on_error(exc, pair)
