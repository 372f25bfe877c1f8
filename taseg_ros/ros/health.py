"""What the node knows about its own health, ROS-free: the node feeds it what happens (inputs,
pairs, frames, notes, losses) and publishes what it reports (``/diagnostics``), so every rule
here is tested without DDS.

    NodeHealth      counters and timings (``diagnostics.NodeStatistics``), label-free quality,
                    the registration watch, the input streams (silent, frozen, fallback), the
                    RGB-thermal stamp skew of the pairs, and the throttled log lines of problems
    StreamWatch     one input stream: when its last message came, and whether it keeps
                    repeating one image (a thermal camera's flat-field correction, a hung driver)

The node's log is handed in (anything with ``info``/``warning``/``error``), so the wording of
every problem lives here beside the rule that raises it.
"""
from __future__ import annotations

import datetime
import threading
import time
import traceback
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from taseg_ros.evaluation.quality import QualityTracker
from taseg_ros.frames.codec import decode_thermal
from taseg_ros.frames.thermal import FrameNote
from taseg_ros.inference.pipeline import SAID_ONCE, FrameResult
from taseg_ros.ros.diagnostics import (ERROR, LOSSY_HINT, OK, WARN, DiagnosticReport, NodeStatistics, QualityStatistics,
                                       RegistrationWatch, build_report)
from taseg_ros.ros.params import RGB_TOPIC, THERMAL_TOPIC, NodeParams
from taseg_ros.ros.throttle import LogThrottle

STREAMS = ("rgb", "thermal")
DIGEST_SAMPLES = 65536  # bytes of a frame compared to spot a repeated image
CHECK_WAIT_S = 30.0  # how long deactivate, cleanup and exit wait for a registration check in flight (it takes < 1 s)


def frame_digest(data: Any) -> int:
    """A checksum of an image message's data from an even sample of its bytes (at most
    DIGEST_SAMPLES: 0.12 ms for a 640x480 rgb8 frame, 0.19 ms for 1280x720, measured on the 2-core
    development machine at load 8). A live camera's noise changes nearly every byte, a repeated
    frame none; the length is part of it."""
    raw = np.frombuffer(data, np.uint8) if len(data) else np.zeros(0, np.uint8)
    step = max(1, raw.size // DIGEST_SAMPLES)
    return zlib.crc32(raw[::step].tobytes(), raw.size)


@dataclass
class StreamWatch:
    """Arrivals of one input stream (monotonic seconds; ``last_wall`` for the diagnostics' "since")."""

    last_at: float | None = None
    last_wall: float | None = None
    digest: int | None = None
    same_since: float | None = None  # arrival of the first of the identical images
    repeats: int = 0

    def arrived(self, data: Any, now: float) -> None:
        digest = frame_digest(data)
        if digest == self.digest:
            self.repeats += 1
        else:
            self.digest, self.same_since, self.repeats = digest, now, 0
        self.last_at, self.last_wall = now, time.time()

    def silent_for(self, now: float, since: float) -> float:
        """Seconds since the last message (or since ``since``, the activation, before the first)."""
        return now - (self.last_at if self.last_at is not None else since)

    def frozen_for(self) -> float:
        """Seconds over which the latest image has been repeated (0 if it was not)."""
        return self.last_at - self.same_since if self.repeats and self.last_at is not None else 0.0


class NodeHealth:
    def __init__(self, log: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.clock = log, clock
        self.topics = {"rgb": RGB_TOPIC, "thermal": THERMAL_TOPIC}
        self._registration_check: threading.Thread | None = None
        self.configure(NodeParams(), classes=None)

    # --- lifecycle ------------------------------------------------------------------------------

    def configure(self, params: NodeParams, classes: int | None) -> None:
        """Counters, statistics and watches start from zero at every configure."""
        self.params = params
        self.stats = NodeStatistics(recent_s=params.diagnostics_window)
        self.quality_stats = QualityStatistics(recent_s=params.diagnostics_window)
        # Raw flicker only: motion compensation (optical flow) is bag eval's, too costly per frame here.
        self.quality = QualityTracker(classes, motion=False, detailed=False) if classes else None
        self.throttle = LogThrottle()
        self.degraded = {stream: 0 for stream in STREAMS}  # frames published with this stream blanked
        self.activate(self.topics)

    def activate(self, topics: dict[str, str]) -> None:
        """A new session: the streams, the pair clock and the registration record start over."""
        self.finish_checks()
        self.topics = topics
        self.activated_at = self.clock()
        self.streams = {stream: StreamWatch() for stream in STREAMS}
        self.incompatible_qos: dict[str, str] = {}  # stream -> the QoS policy a publisher of it cannot match
        self.last_pair_at: float | None = None
        self.registration = RegistrationWatch()
        self.registration_checked_at = -float("inf")
        if self.quality is not None:
            self.quality.reset()  # the first pair after activation has no previous frame

    def finish_checks(self, timeout: float = CHECK_WAIT_S) -> bool:
        """Wait for a registration check in flight (under a second; deactivate, cleanup, exit): a
        check left running when the interpreter exits aborted the process (a thread inside OpenCV
        cannot be stopped; `terminate called without an active exception`, exit -6 on Ctrl-C).
        False if it did not end within ``timeout``."""
        check, self._registration_check = self._registration_check, None
        if check is not None:
            check.join(timeout)
            return not check.is_alive()
        return True

    def set_params(self, params: NodeParams) -> None:
        """Live parameters changed (``ros2 param set``)."""
        if (params.thermal_homography, params.thermal_homography_size) != \
                (self.params.thermal_homography, self.params.thermal_homography_size):
            self.registration = RegistrationWatch()  # a new registration starts a new record
        self.params = params

    # --- inputs (subscription callbacks) --------------------------------------------------------

    def arrived(self, stream: str, msg: Any, clock_ns: int, stamp_ns: int) -> None:
        """A message of ``stream``, before any check: the stream is alive (and maybe frozen)."""
        self.streams[stream].arrived(msg.data, self.clock())
        if stamp_ns > 0:  # zero stamps are rejected by the pairer, and counted there
            self.stats.record_stamp_age(stream, (clock_ns - stamp_ns) * 1e-9)

    def refused(self, stream: str, exc: Any) -> None:
        """An input frame that failed the cheap field check (an ImageDecodeError)."""
        n = self.stats.record_failure(f"bad_{stream}", exc.reason, str(exc), pair=False)
        self.warn((f"bad_{stream}:{exc.reason}", stream), f"{self.topics[stream]}: {exc}; frame ignored "
                  f"({n} x {exc.reason} since configure)")

    def rejected_stamp(self, stream: str, reason: str, stamp_ns: int) -> None:
        topic = self.topics[stream]
        if reason == "zero_stamp":
            self.warn((reason, stream), f"{topic}: header stamp is zero; frame ignored (pairing needs the driver's stamps)")
        elif reason == "out_of_order":
            self.warn((reason, stream), f"{topic}: stamp {stamp_ns * 1e-9:.6f} s is not newer than the previous frame's; "
                      "frame ignored")
        elif reason == "time_reset":
            self.log.warning(f"{topic}: stamps jumped back to {stamp_ns * 1e-9:.3f} s; pairing restarted")

    def lost(self, stream: str, change: int, total: int) -> None:
        """DDS saw messages of ``stream`` it could not deliver (SAMPLE_LOST)."""
        self.stats.record_lost(stream, change)
        hint = LOSSY_HINT if self.params.input_qos != "reliable" else ""
        self.warn(("lost", stream), f"{self.topics[stream]}: {total} message(s) lost in transport so far{hint}")

    def incompatible(self, stream: str, policy: str) -> None:
        """A publisher of ``stream`` whose QoS the subscription cannot match: nothing of it arrives."""
        self.incompatible_qos[stream] = policy
        self.log.error(self._incompatible_text(stream))

    def _incompatible_text(self, stream: str) -> str:
        qos = self.params.input_qos
        fix = "input_qos:=sensor_data (a best-effort camera)" if qos == "reliable" else "input_qos:=reliable"
        return (f"{self.topics[stream]}: a publisher offers QoS that input_qos {qos} cannot match "
                f"({self.incompatible_qos[stream]}), so none of its frames arrive: set {fix}")

    def paired(self, pair: Any) -> None:
        self.last_pair_at = self.clock()
        self.stats.record_skew(pair.skew_ns * 1e-9)

    def missing_stream(self) -> str | None:
        """The stream silent for ``input_timeout`` while the other one is live (None: both live,
        both silent, or the timeout is off): the node then applies ``input_fallback``."""
        timeout = self.params.input_timeout
        if timeout <= 0:
            return None
        now = self.clock()
        silent = [s for s in STREAMS if self.streams[s].silent_for(now, self.activated_at) > timeout]
        return silent[0] if len(silent) == 1 else None

    # --- frames (inference thread) --------------------------------------------------------------

    def frame_done(self, result: FrameResult, thermal_msg: Any, latency_s: float, publish_s: float,
                   blanked: str | None) -> None:
        """A published frame: its quality figures (before the count: diagnostics saying
        ``processed`` N include frame N's), its timings, and now and then the registration."""
        self._record_quality(result)
        t = result.timings
        self.stats.record_output(latency_s, t["inference"], t["decode"] + t["thermal"], t["render"] + publish_s, steps_s=t)
        if blanked is not None:
            self.degraded[blanked] += 1
        elif thermal_msg is not None:
            self._check_registration(result.rgb, thermal_msg)

    def _record_quality(self, result: FrameResult) -> None:
        if self.quality is None:
            return
        if not self.params.quality_diagnostics:
            self.quality.reset()  # switched back on later: no flicker against a stale frame
            return
        start = time.perf_counter()
        quality = self.quality.update(result.labels, result.confidence)
        self.quality_stats.record(quality, time.perf_counter() - start)

    def _check_registration(self, rgb: np.ndarray, thermal_msg: Any) -> None:
        """Every registration_check_period s: score this pair's registration (the node's
        thermal_homography, or its plain resize) for the diagnostics (RegistrationWatch)."""
        period, now = self.params.registration_check_period, self.clock()
        if period <= 0 or now - self.registration_checked_at < period:
            return
        if self._registration_check is not None and self._registration_check.is_alive():
            return  # one check at a time
        self.registration_checked_at = now
        try:
            thermal = decode_thermal(thermal_msg)
        except ValueError:  # an undecodable frame was counted by the pipeline already
            return
        # A check that judges refines its pairs (~0.2 s each, frames.registration.RegistrationMonitor):
        # on its own thread, so the frames behind it are not held up.
        self._registration_check = threading.Thread(
            target=self.registration.check, args=(rgb.copy(), thermal, self.params.homography()),
            name="taseg_registration")  # not a daemon: an exit waits for it rather than aborting in OpenCV
        self._registration_check.start()

    def note(self, note: FrameNote, failed: bool = False) -> None:
        """Count a frame's problem (``failed``: the pair was skipped, counted per reason) and log it,
        throttled per kind, reason and stream (said-once notes unthrottled)."""
        if note.kind == "thermal_aligned":  # the pipeline says it once per configure
            hint = "" if self.params.thermal_homography else "; set thermal_homography for a registered overlay"
            self.log.warning(note.text + hint)
            return
        if note.kind in SAID_ONCE:
            self.log.info(note.text)
            return
        suffix = ""
        if failed:
            n = self.stats.record_failure(note.kind, note.detail, note.text)
            suffix = f" ({n} x {note.detail or note.kind} since configure)"
        else:
            self.stats.count_error(note.kind)
        if note.kind == "model":
            if self.throttle.allow((note.kind, note.stream), self.params.log_throttle):
                self.log.error(note.text + suffix)
            return
        topic = self.topics.get(note.stream, "model")
        self.warn((f"{note.kind}:{note.detail}", note.stream), f"{topic}: {note.text}{suffix}")

    def internal_error(self, exc: Exception, stamp_ns: int) -> None:
        self.stats.record_failure("internal", type(exc).__name__, f"unexpected {type(exc).__name__}: {exc}")
        if self.throttle.allow(("internal", ""), self.params.log_throttle):
            self.log.error(f"unexpected error on a pair (rgb stamp {stamp_ns * 1e-9:.6f} s): {exc}\n"
                           + traceback.format_exc())

    def warn(self, key: tuple[str, str], text: str) -> None:
        """A warning, throttled per (kind of problem, stream): one kind never hides another."""
        if self.throttle.allow(key, self.params.log_throttle):
            self.log.warning(text)

    # --- the diagnostics ------------------------------------------------------------------------

    def report(self, *, active: bool, pairing: dict[str, int], dropped: int, publishers: dict[str, int] | None,
               model: Any = None) -> DiagnosticReport:
        """The diagnostic status now (``diagnostics.build_report`` with this node's input faults and
        the loaded ``model``, an inference.Segmenter), logged (throttled) when it is not OK while active."""
        now, p = self.clock(), self.params
        reference = self.last_pair_at if self.last_pair_at is not None else self.activated_at
        silent = {s: w.silent_for(now, self.activated_at) for s, w in self.streams.items()}
        values = {} if model is None else {
            "model": model.cfg.name, "resolution_mode": model.cfg.resolution, "device": model.backend.device_label,
            "precision": model.precision, "runtime": model.describe()}
        if p.quality_diagnostics:
            values.update(self.quality_stats.values(now))
        values.update(self._stream_values(silent))
        report = self.registration.apply(build_report(
            active=active, stats=self.stats, pairing=pairing, dropped=dropped,
            seconds_since_pair=now - reference if active else None,
            seconds_since_input={s: None if self.streams[s].last_at is None else silent[s] for s in STREAMS},
            no_pair_warn_s=p.no_pair_warning, clock_offset_warn_s=p.clock_offset_warning, extra=values, now=now,
            lossy_inputs=p.input_qos != "reliable", publishers=publishers,
            input_faults=self._timeout_faults(silent), stream_warnings=self._frozen_warnings(),
        ))
        if active and report.level == ERROR:
            if self.throttle.allow(("diagnostics", ""), p.log_throttle):
                self.log.error(report.message)
        elif active and report.level != OK:
            self.warn(("diagnostics", ""), report.message)
        return report

    def _timeout_faults(self, silent: dict[str, float]) -> list[tuple[int, str]]:
        mismatched = [s for s in self.incompatible_qos if silent[s] > self.params.no_pair_warning]
        if mismatched:
            return [(ERROR, self._incompatible_text(mismatched[0]))]
        missing = self.missing_stream()
        if missing is None:
            return []
        live = next(s for s in STREAMS if s != missing)
        text = f"{self.topics[missing]} silent for {silent[missing]:.1f} s (input_timeout {self.params.input_timeout:g} s)"
        if self.params.input_fallback == "none":
            return [(ERROR, f"{text}: publishing nothing (input_fallback none)")]
        since = self.streams[missing].last_wall
        when = ("since " + datetime.datetime.fromtimestamp(since, datetime.timezone.utc).strftime("%H:%M:%S UTC")
                if since is not None else "since activation")
        return [(WARN, f"{text}, {when}: publishing from {self.topics[live]} alone with {missing} blanked "
                       f"(input_fallback blank), {self.degraded[missing]} frame(s) degraded")]

    def _frozen_warnings(self) -> list[tuple[int, str]]:
        limit = self.params.frozen_warning
        if limit <= 0:
            return []
        return [(WARN, f"{self.topics[s]} frozen: the same image for {w.frozen_for():.1f} s ({w.repeats + 1} frames); "
                       "a thermal camera's flat-field correction, or a hung driver?")
                for s, w in self.streams.items() if w.frozen_for() > limit]

    def _stream_values(self, silent: dict[str, float]) -> dict[str, str]:
        blanking = self.params.input_fallback == "blank" and self.missing_stream()
        values = {"input_fallback_active": blanking or ""}
        for s, w in self.streams.items():
            values[f"{s}_silent_s"] = f"{silent[s]:.1f}"
            values[f"{s}_frozen_s"] = f"{w.frozen_for():.1f}"
            values[f"degraded_{s}_blanked"] = str(self.degraded[s])
        return values
