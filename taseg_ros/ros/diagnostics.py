"""Counters and timing statistics of the segmentation node, and the diagnostic status built from them.

ROS-free: the node turns ``DiagnosticReport`` into ``diagnostic_msgs/DiagnosticStatus``; the
benchmark and tests read the same numbers directly.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from taseg_ros.frames.settings import STEPS

# diagnostic_msgs/DiagnosticStatus level values (bytes in the message).
OK, WARN, ERROR, STALE = 0, 1, 2, 3


class RollingWindow:
    """The last ``size`` samples of a quantity (seconds), for mean/percentile/max."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(float(value))

    def __len__(self) -> int:
        return len(self._values)

    def summary(self) -> dict[str, float]:
        if not self._values:
            return {"mean": float("nan"), "p95": float("nan"), "max": float("nan")}
        values = np.fromiter(self._values, dtype=np.float64)
        return {"mean": float(values.mean()), "p95": float(np.percentile(values, 95)), "max": float(values.max())}


@dataclass
class DiagnosticReport:
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


class NodeStatistics:
    """Thread-safe record of what the node did: outputs with their timings, and error counts.

    Timings per processed pair (seconds):
      - latency: publish time minus the RGB header stamp (what a consumer sees)
      - inference: the model's predict() call
      - overhead: the node's own work, prepare + publish:
      - prepare: decode both images, thermal normalisation and resize/warp
      - publish: colourise, overlay, message building and publishing
    Per input message: ``stamp_age`` (node clock at arrival minus the header stamp, per stream):
    transport delay normally, seconds or hours when the camera's clock is not the node's.
    """

    def __init__(self, window: int = 200, fps_window_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self.latency = RollingWindow(window)
        self.inference = RollingWindow(window)
        self.overhead = RollingWindow(window)
        self.prepare = RollingWindow(window)
        self.publish = RollingWindow(window)
        self.stamp_age = {"rgb": RollingWindow(window), "thermal": RollingWindow(window)}
        self.steps = {step: RollingWindow(window) for step in STEPS}  # frame.FramePipeline's steps
        self.errors: Counter[str] = Counter()
        self.processed = 0
        self._publish_times: deque[float] = deque()
        self._fps_window_s = fps_window_s

    def record_output(
        self,
        latency_s: float,
        inference_s: float,
        prepare_s: float,
        publish_s: float,
        now: float | None = None,
        steps_s: dict[str, float] | None = None,
    ) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for step, seconds in (steps_s or {}).items():
                if step in self.steps:
                    self.steps[step].add(seconds)
            self.processed += 1
            self.latency.add(latency_s)
            self.inference.add(inference_s)
            self.prepare.add(prepare_s)
            self.publish.add(publish_s)
            self.overhead.add(prepare_s + publish_s)
            self._publish_times.append(now)
            self._trim(now)

    def record_stamp_age(self, stream: str, age_s: float) -> None:
        with self._lock:
            self.stamp_age[stream].add(age_s)

    def count_error(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.errors[kind] += n

    def fps(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            times = self._publish_times
            if len(times) < 2:
                return 0.0
            span = now - times[0]
            return (len(times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._publish_times and self._publish_times[0] < now - self._fps_window_s:
            self._publish_times.popleft()

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "processed": self.processed,
                "errors": dict(self.errors),
                "latency": self.latency.summary(),
                "inference": self.inference.summary(),
                "overhead": self.overhead.summary(),
                "prepare": self.prepare.summary(),
                "publish": self.publish.summary(),
                "stamp_age": {stream: window.summary() for stream, window in self.stamp_age.items()},
                "steps": {step: window.summary() for step, window in self.steps.items()},
            }


class QualityStatistics:
    """The label-free figures of the node's frames (``evaluation.quality.FrameQuality``): the last
    frame's and the mean over the last ``window`` frames, and what computing them cost."""

    FIGURES = ("mean_confidence", "low_confidence_share", "flicker")

    def __init__(self, window: int = 200) -> None:
        self._lock = threading.Lock()
        self.windows = {name: RollingWindow(window) for name in self.FIGURES}
        self.cost = RollingWindow(window)
        self.last: dict[str, float | None] = {name: None for name in self.FIGURES}

    def record(self, quality, seconds: float) -> None:
        with self._lock:
            for name in self.FIGURES:
                value = getattr(quality, name)
                self.last[name] = value
                if value is not None:
                    self.windows[name].add(value)
            self.cost.add(seconds)

    def values(self) -> dict[str, str]:
        """Diagnostic key/values: quality_<figure> (last frame), quality_<figure>_mean (window), and
        quality_cost_mean_ms; "nan" before the first frame (flicker: before the second)."""
        with self._lock:
            out = {}
            for name in self.FIGURES:
                last = self.last[name]
                out[f"quality_{name}"] = "nan" if last is None else f"{last:.4f}"
                out[f"quality_{name}_mean"] = f"{self.windows[name].summary()['mean']:.4f}"
            out["quality_cost_mean_ms"] = f"{self.cost.summary()['mean'] * 1e3:.2f}"
            return out


def build_report(
    *,
    active: bool,
    stats: NodeStatistics,
    pairing: dict[str, int],
    dropped: int,
    seconds_since_pair: float | None,
    seconds_since_input: dict[str, float | None],
    no_pair_warn_s: float,
    clock_offset_warn_s: float = float("inf"),
    extra: dict[str, str] | None = None,
    now: float | None = None,
) -> DiagnosticReport:
    """The node's diagnostic status: OK while pairs flow, WARN when none matched for ``no_pair_warn_s``
    or when input stamps are more than ``clock_offset_warn_s`` away from the node's clock.

    ``seconds_since_pair`` counts from the last pair (or from activation); ``seconds_since_input``
    maps "rgb"/"thermal" to the time since that stream's last message (None: never), so the
    warning can say which stream is missing.
    """
    snap = stats.snapshot()
    values: dict[str, str] = {
        "fps": f"{stats.fps(now):.2f}",
        "processed": str(snap["processed"]),
        "dropped": str(dropped),
    }
    for name in ("latency", "inference", "overhead", "prepare", "publish"):
        for key, value in snap[name].items():
            values[f"{name}_{key}_ms"] = f"{value * 1e3:.1f}"
    for step, summary in snap["steps"].items():
        values[f"step_{step}_mean_ms"] = f"{summary['mean'] * 1e3:.1f}"
    for stream, summary in snap["stamp_age"].items():
        values[f"{stream}_stamp_age_mean_ms"] = f"{summary['mean'] * 1e3:.1f}"
    for key in ("rgb_received", "thermal_received", "pairs", "unmatched_rgb", "unmatched_thermal",
                "zero_stamp", "out_of_order", "time_resets"):
        values[key] = str(pairing.get(key, 0))
    error_total = sum(snap["errors"].values()) + pairing.get("zero_stamp", 0) + pairing.get("out_of_order", 0)
    values["errors"] = str(error_total)
    for key, value in sorted(snap["errors"].items()):
        values[f"errors_{key}"] = str(value)
    if extra:
        values.update(extra)

    if not active:
        return DiagnosticReport(OK, "inactive", values)
    if seconds_since_pair is not None and seconds_since_pair > no_pair_warn_s:
        silent = [
            name for name, since in seconds_since_input.items() if since is None or since > no_pair_warn_s
        ]
        if silent:
            detail = f"; no message for > {no_pair_warn_s:g} s on: {', '.join(silent)}"
        else:
            detail = "; both streams arrive, but their stamps do not match within the slop"
        return DiagnosticReport(WARN, f"no RGB/thermal pair matched for {seconds_since_pair:.1f} s{detail}", values)
    offsets = {
        stream: summary["mean"] for stream, summary in snap["stamp_age"].items()
        if abs(summary["mean"]) > clock_offset_warn_s  # NaN (no message yet) compares False
    }
    if offsets:
        detail = ", ".join(
            f"{stream} {abs(age):.3g} s {'behind' if age > 0 else 'ahead'}" for stream, age in offsets.items()
        )
        return DiagnosticReport(
            WARN,
            f"input stamps are far from this node's clock ({detail}), so latency figures mean nothing: "
            "a bag played without --clock and use_sim_time, or a camera stamping with its own clock?",
            values,
        )
    return DiagnosticReport(OK, "processing", values)
