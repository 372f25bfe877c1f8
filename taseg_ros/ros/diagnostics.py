"""Counters and timing statistics of the segmentation node, and the diagnostic status built from them.

ROS-free: the node turns ``DiagnosticReport`` into ``diagnostic_msgs/DiagnosticStatus``; the
benchmark and tests read the same numbers directly.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from taseg_ros.frames.registration import RegistrationMonitor
from taseg_ros.frames.settings import STEPS

# diagnostic_msgs/DiagnosticStatus level values (bytes in the message).
OK, WARN, ERROR, STALE = 0, 1, 2, 3


class RollingWindow:
    """The last ``size`` samples of a quantity (seconds) with their arrival times, for
    mean/percentile/max over all of them or over the recent ones (``since``)."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[tuple[float, float]] = deque(maxlen=size)

    def add(self, value: float, now: float | None = None) -> None:
        self._values.append((time.monotonic() if now is None else now, float(value)))

    def __len__(self) -> int:
        return len(self._values)

    def summary(self, since: float | None = None, absolute: bool = False) -> dict[str, float]:
        values = [abs(v) if absolute else v for t, v in self._values if since is None or t >= since]
        if not values:
            return {"mean": float("nan"), "p95": float("nan"), "max": float("nan")}
        array = np.asarray(values, dtype=np.float64)
        return {"mean": float(array.mean()), "p95": float(np.percentile(array, 95)), "max": float(array.max())}


@dataclass(frozen=True)
class Failure:
    """A pair that could not be processed, or an input frame refused before pairing (``pair`` False)."""

    at: float
    kind: str  # bad_rgb, bad_thermal, model, internal
    reason: str  # the ImageDecodeError reason (encoding, truncated, ...), or "" when there is none
    text: str
    pair: bool


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

    Failures (``record_failure``) are counted per kind (``errors``) and per kind and reason
    (``reasons``), and kept with their message for ``recent_s`` seconds, as are the outcomes of
    pairs: the diagnostics describe the last ``recent_s`` seconds (``recent``), so a burst of bad
    frames or stamps ages out. A new NodeStatistics starts every configure.
    """

    def __init__(self, window: int = 200, fps_window_s: float = 5.0, recent_s: float = 10.0) -> None:
        self._lock = threading.Lock()
        self.latency = RollingWindow(window)
        self.inference = RollingWindow(window)
        self.overhead = RollingWindow(window)
        self.prepare = RollingWindow(window)
        self.publish = RollingWindow(window)
        self.stamp_age = {"rgb": RollingWindow(window), "thermal": RollingWindow(window)}
        self.skew = RollingWindow(window)  # thermal stamp minus RGB stamp of each pair
        self.steps = {step: RollingWindow(window) for step in STEPS}  # inference.pipeline.FramePipeline steps
        self.errors: Counter[str] = Counter()
        self.reasons: Counter[tuple[str, str]] = Counter()
        self.lost: Counter[str] = Counter()  # messages the middleware reports lost, per stream
        self.processed = 0
        self.recent_s = recent_s
        self._publish_times: deque[float] = deque()
        self._fps_window_s = fps_window_s
        self._ok_times: deque[float] = deque()  # pairs processed within recent_s
        # bounded even for a publisher flooding the node with bad frames (the counters stay exact)
        self._failures: deque[Failure] = deque(maxlen=10_000)
        self._lost_times: deque[tuple[float, str, int]] = deque(maxlen=10_000)

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
                    self.steps[step].add(seconds, now)
            self.processed += 1
            self.latency.add(latency_s, now)
            self.inference.add(inference_s, now)
            self.prepare.add(prepare_s, now)
            self.publish.add(publish_s, now)
            self.overhead.add(prepare_s + publish_s, now)
            self._publish_times.append(now)
            self._ok_times.append(now)
            self._trim(now)

    def record_stamp_age(self, stream: str, age_s: float, now: float | None = None) -> None:
        with self._lock:
            self.stamp_age[stream].add(age_s, now)

    def record_skew(self, skew_s: float, now: float | None = None) -> None:
        with self._lock:
            self.skew.add(skew_s, now)

    def count_error(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.errors[kind] += n

    def record_failure(self, kind: str, reason: str, text: str, pair: bool = True, now: float | None = None) -> int:
        """A pair that failed (``pair``) or an input frame refused before pairing; returns how many of
        this kind and reason there were since configure (for the throttled log line)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self.errors[kind] += 1
            self.reasons[(kind, reason)] += 1
            self._failures.append(Failure(now, kind, reason, text, pair))
            self._trim(now)
            return self.reasons[(kind, reason)]

    def record_lost(self, stream: str, n: int, now: float | None = None) -> None:
        """Messages of a stream the middleware saw but could not deliver (DDS SAMPLE_LOST: a best-effort
        sample with a missing fragment, typically a large frame)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self.lost[stream] += n
            self._lost_times.append((now, stream, n))
            self._trim(now)

    def recent(self, now: float | None = None) -> dict:
        """The last ``recent_s`` seconds: pairs processed and failed, failures grouped by (kind, reason)
        with a count, the latest message and whether they were pairs (else refused input frames), lost
        messages per stream."""
        now = time.monotonic() if now is None else now
        since = now - self.recent_s
        with self._lock:
            self._trim(now)
            ok = len(self._ok_times)
            failures = [f for f in self._failures if f.at >= since]
            lost = Counter()
            for t, stream, n in self._lost_times:
                if t >= since:
                    lost[stream] += n
        groups: dict[tuple[str, str], list] = {}
        for f in failures:
            entry = groups.setdefault((f.kind, f.reason), [0, f.text, f.pair])
            entry[0] += 1
            entry[1] = f.text  # the latest wording
        return {
            "window_s": self.recent_s,
            "pairs_ok": ok,
            "pairs_failed": sum(1 for f in failures if f.pair),
            "failures": groups,
            "lost": lost,
        }

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
        while self._ok_times and self._ok_times[0] < now - self.recent_s:
            self._ok_times.popleft()
        while self._failures and self._failures[0].at < now - self.recent_s:
            self._failures.popleft()
        while self._lost_times and self._lost_times[0][0] < now - self.recent_s:
            self._lost_times.popleft()

    def snapshot(self, since: float | None = None) -> dict:
        """Counts since configure; timings over the last ``window`` samples, or only those from ``since`` on."""
        with self._lock:
            return {
                "processed": self.processed,
                "errors": dict(self.errors),
                "reasons": dict(self.reasons),
                "lost": dict(self.lost),
                "latency": self.latency.summary(since),
                "inference": self.inference.summary(since),
                "overhead": self.overhead.summary(since),
                "prepare": self.prepare.summary(since),
                "publish": self.publish.summary(since),
                "stamp_age": {stream: window.summary(since) for stream, window in self.stamp_age.items()},
                "skew": self.skew.summary(since),
                "skew_abs_max": self.skew.summary(since, absolute=True)["max"],
                "steps": {step: window.summary(since) for step, window in self.steps.items()},
            }


class QualityStatistics:
    """The label-free figures of the node's frames (``evaluation.quality.FrameQuality``): the last
    frame's and the mean over the last ``recent_s`` seconds (the diagnostics window; None: the last
    ``window`` frames), and what computing them cost."""

    FIGURES = ("mean_confidence", "low_confidence_share", "flicker")

    def __init__(self, recent_s: float | None = None, window: int = 200) -> None:
        self._lock = threading.Lock()
        self.recent_s = recent_s
        self.windows = {name: RollingWindow(window) for name in self.FIGURES}
        self.cost = RollingWindow(window)
        self.last: dict[str, float | None] = {name: None for name in self.FIGURES}

    def record(self, quality, seconds: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for name in self.FIGURES:
                value = getattr(quality, name)
                self.last[name] = value
                if value is not None:
                    self.windows[name].add(value, now)
            self.cost.add(seconds, now)

    def values(self, now: float | None = None) -> dict[str, str]:
        """Diagnostic key/values: quality_<figure> (last frame), quality_<figure>_mean (recent frames),
        and quality_cost_mean_ms; "nan" before the first frame (flicker: before the second)."""
        now = time.monotonic() if now is None else now
        since = None if self.recent_s is None else now - self.recent_s
        with self._lock:
            out = {}
            for name in self.FIGURES:
                last = self.last[name]
                out[f"quality_{name}"] = "nan" if last is None else f"{last:.4f}"
                out[f"quality_{name}_mean"] = f"{self.windows[name].summary(since)['mean']:.4f}"
            out["quality_cost_mean_ms"] = f"{self.cost.summary(since)['mean'] * 1e3:.2f}"
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
    lossy_inputs: bool = False,
    publishers: dict[str, int] | None = None,
    input_faults: Sequence[tuple[int, str]] = (),
    stream_warnings: Sequence[tuple[int, str]] = (),
) -> DiagnosticReport:
    """The node's diagnostic status over the last ``stats.recent_s`` seconds (timings, failures, stamp
    offsets), with counts since configure:

    - ERROR when every pair of the window failed, or when no pair matched for ``no_pair_warn_s``
      while a stream's frames were refused (each with its decode reason and count);
    - WARN when no pair matched for ``no_pair_warn_s`` (naming a silent stream), when messages were
      lost in transport, when some pairs failed or frames were refused, or when input stamps are
      more than ``clock_offset_warn_s`` away from the node's clock;
    - OK "processing" otherwise.

    ``seconds_since_pair`` counts from the last pair (or from activation); ``seconds_since_input``
    maps "rgb"/"thermal" to the time since that stream's last message (None: never).
    ``lossy_inputs``: the inputs are best effort, where DDS drops a large frame that lost a fragment.
    ``publishers``: how many publishers each input topic has (a silent stream without one is named so).
    ``input_faults``: (level, message) of a stream silent past input_timeout (ros.health), checked
    right after the failed pairs; ``stream_warnings``: (level, message) of frozen streams, checked
    after the unmatched pairs.
    """
    now = time.monotonic() if now is None else now
    recent = stats.recent(now)
    window = recent["window_s"]
    snap = stats.snapshot(since=now - window)
    values = _report_values(stats, snap, recent, pairing, dropped, now)
    if extra:
        values.update(extra)
    if not active:
        return DiagnosticReport(OK, "inactive", values)
    level, message = (
        _every_pair_failed(recent)
        or next(iter(input_faults), None)
        or _no_pair_matched(recent, seconds_since_pair, seconds_since_input, no_pair_warn_s, lossy_inputs, publishers)
        or next(iter(stream_warnings), None)
        or _lost_in_transport(recent, lossy_inputs)
        or _some_failed(recent)
        or _clock_offset(snap, clock_offset_warn_s)
        or (OK, "processing")
    )
    return DiagnosticReport(level, message, values)


# The checks of build_report, most severe first: each returns (level, message) or None.


def _pair_failures(recent: dict) -> dict:
    return {key: v for key, v in recent["failures"].items() if v[2]}


def _refusals(recent: dict) -> dict:
    """Input frames refused before they made a pair (decode errors, size limits)."""
    return {key: v for key, v in recent["failures"].items() if not v[2]}


def _lost_text(recent: dict) -> str:
    return ", ".join(f"{n} {stream}" for stream, n in recent["lost"].items() if n)


def _every_pair_failed(recent: dict) -> tuple[int, str] | None:
    if recent["pairs_failed"] and not recent["pairs_ok"]:
        return ERROR, (f"every pair of the last {recent['window_s']:g} s failed ({recent['pairs_failed']}): "
                       f"{_describe(_pair_failures(recent))}")
    return None


def _no_pair_matched(
    recent: dict,
    seconds_since_pair: float | None,
    seconds_since_input: dict[str, float | None],
    no_pair_warn_s: float,
    lossy_inputs: bool,
    publishers: dict[str, int] | None,
) -> tuple[int, str] | None:
    if seconds_since_pair is None or not seconds_since_pair > no_pair_warn_s:
        return None
    silent = [name for name, since in seconds_since_input.items() if since is None or since > no_pair_warn_s]
    unpublished = [name for name in silent if publishers is not None and publishers.get(name) == 0]
    refusals, lost = _refusals(recent), _lost_text(recent)
    parts = []
    if silent:
        parts.append(f"no message for > {no_pair_warn_s:g} s on: "
                     + ", ".join(name + (" (no publisher)" if name in unpublished else "") for name in silent))
    if refusals:
        parts.append(f"input frames refused: {_describe(refusals)}")
    if lost:
        parts.append(f"messages lost in transport in the last {recent['window_s']:g} s: {lost}")
    if (lost or set(silent) - set(unpublished)) and lossy_inputs:  # published, yet nothing arrives
        parts[-1] += LOSSY_HINT
    if not parts:
        parts.append("both streams arrive, but their stamps do not match within the slop")
    message = f"no RGB/thermal pair matched for {seconds_since_pair:.1f} s; " + "; ".join(parts)
    return (ERROR if refusals else WARN), message


def _lost_in_transport(recent: dict, lossy_inputs: bool) -> tuple[int, str] | None:
    lost = _lost_text(recent)
    if not lost:
        return None
    hint = LOSSY_HINT if lossy_inputs else ""
    return WARN, f"messages lost in transport in the last {recent['window_s']:g} s: {lost}{hint}"


def _some_failed(recent: dict) -> tuple[int, str] | None:
    pair_failures, refusals = _pair_failures(recent), _refusals(recent)
    if not (pair_failures or refusals):
        return None
    total = recent["pairs_failed"] + recent["pairs_ok"]
    parts = []
    if pair_failures:
        parts.append(f"{recent['pairs_failed']} of {total} pairs failed: {_describe(pair_failures)}")
    if refusals:
        parts.append(f"input frames refused: {_describe(refusals)}")
    return WARN, f"in the last {recent['window_s']:g} s, " + "; ".join(parts)


def _clock_offset(snap: dict, clock_offset_warn_s: float) -> tuple[int, str] | None:
    offsets = {
        stream: summary["mean"] for stream, summary in snap["stamp_age"].items()
        if abs(summary["mean"]) > clock_offset_warn_s  # NaN (no message in the window) compares False
    }
    if not offsets:
        return None
    detail = ", ".join(f"{stream} {abs(age):.3g} s {'behind' if age > 0 else 'ahead'}"
                       for stream, age in offsets.items())
    return WARN, (f"input stamps are far from this node's clock ({detail}), so latency figures mean nothing: "
                  "a bag played without --clock and use_sim_time, or a camera stamping with its own clock?")


LOSSY_HINT = (" (input_qos sensor_data is best effort: DDS drops a large frame when one of its fragments is lost;"
              " try input_qos:=reliable, or a compressed transport)")


def _describe(groups: dict[tuple[str, str], list], limit: int = 3) -> str:
    """Failures grouped by (kind, reason): the most frequent first, with count and latest message."""
    ranked = sorted(groups.items(), key=lambda item: -item[1][0])
    parts = [f"{n} x {kind}{'/' + reason if reason else ''}: {text}" for (kind, reason), (n, text, _) in ranked[:limit]]
    if len(ranked) > limit:
        parts.append(f"and {len(ranked) - limit} other kind(s)")
    return "; ".join(parts)


def _report_values(stats: NodeStatistics, snap: dict, recent: dict, pairing: dict[str, int], dropped: int,
                   now: float) -> dict[str, str]:
    values: dict[str, str] = {
        "fps": f"{stats.fps(now):.2f}",
        "processed": str(snap["processed"]),
        "dropped": str(dropped),
        "window_s": f"{recent['window_s']:g}",
        "recent_pairs_ok": str(recent["pairs_ok"]),
        "recent_pairs_failed": str(recent["pairs_failed"]),
    }
    for name in ("latency", "inference", "overhead", "prepare", "publish"):
        for key, value in snap[name].items():
            values[f"{name}_{key}_ms"] = f"{value * 1e3:.1f}"
    for step, summary in snap["steps"].items():
        values[f"step_{step}_mean_ms"] = f"{summary['mean'] * 1e3:.1f}"
    for stream, summary in snap["stamp_age"].items():
        values[f"{stream}_stamp_age_mean_ms"] = f"{summary['mean'] * 1e3:.1f}"
    values["stamp_skew_mean_ms"] = f"{snap['skew']['mean'] * 1e3:.2f}"  # thermal minus RGB, over the window
    values["stamp_skew_max_ms"] = f"{snap['skew_abs_max'] * 1e3:.2f}"  # the largest |thermal - RGB|
    for key in ("rgb_received", "thermal_received", "pairs", "unmatched_rgb", "unmatched_thermal",
                "zero_stamp", "out_of_order", "time_resets"):
        values[key] = str(pairing.get(key, 0))
    error_total = sum(snap["errors"].values()) + pairing.get("zero_stamp", 0) + pairing.get("out_of_order", 0)
    values["errors"] = str(error_total)
    for key, value in sorted(snap["errors"].items()):
        values[f"errors_{key}"] = str(value)
    for (kind, reason), value in sorted(snap["reasons"].items()):
        if reason:
            values[f"errors_{kind}_{reason}"] = str(value)
    for stream in ("rgb", "thermal"):
        values[f"lost_{stream}"] = str(snap["lost"].get(stream, 0))
    return values


class RegistrationWatch:
    """The node's registration check (issue 20) in the diagnostics: ``frames.registration.
    RegistrationMonitor`` decides, by the rule `taseg bag info` applies; this adds its keys and
    turns an OK report WARN when its last verdict says the registration looks off."""

    def __init__(self, window: int = 3) -> None:
        self.monitor = RegistrationMonitor(window)

    def check(self, rgb: np.ndarray, thermal: np.ndarray, homography: np.ndarray | None) -> None:
        self.monitor.check(rgb, thermal, homography)

    def apply(self, report: DiagnosticReport) -> DiagnosticReport:
        """``report`` with the registration keys added, and WARN (if it was OK) when the verdict says so."""
        checks, median, cost, verdict = self.monitor.snapshot()
        if not checks:
            return report
        report.values["registration_score"] = f"{median:.3f}"
        report.values["registration_checks"] = str(checks)
        report.values["registration_check_ms"] = f"{1e3 * cost:.1f}"
        if verdict is not None and verdict.known:
            report.values["registration_offset_px"] = f"{verdict.shift_px:.1f}"
        if verdict is not None and verdict.looks_off and report.level == OK and report.message == "processing":
            report.level = WARN
            report.message = (f"registration {verdict.describe()} (refined on the last {verdict.pairs} checked pairs, "
                              "as `taseg bag info` checks); was a camera moved? check with `taseg bag refine`")
        return report
