"""`taseg bag info`: is this recording usable for RGB-T segmentation, and with which settings?

For every topic: type, message count, rate. For the RGB and thermal topics (given, or guessed from the
image topics): resolution and encoding, camera rate from the header stamps, gaps (dropped frames),
zero / out-of-order stamps, delay from stamp to recording. Then the pairing as the node would do it
(``StampPairer`` at ``slop``) and the stamp offsets between the cameras: of the pairs made, and of
each RGB frame's nearest thermal frame (which shows what another slop would give).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from taseg_ros.frames.pairing import DEFAULT_SLOP_S
from taseg_ros.bag.pairs import BagPairing
from taseg_ros.bag.io.reader import Bag, BagError, open_bag
from taseg_ros.bag.io.topics import MissingStreamError, resolve_image_topics
from taseg_ros.timing import summarize_ms
from taseg_ros.errors import safe_text
from taseg_ros.formatting import fixed as _fmt
from taseg_ros.formatting import human_size as _size
from taseg_ros.errors import safe_lines

CANDIDATE_SLOPS_S = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1)


@dataclass
class StreamInfo:
    topic: str
    msgtype: str
    count: int
    width: int | None = None
    height: int | None = None
    encoding: str = ""
    rate_hz: float | None = None  # from header stamps
    median_period_ms: float | None = None
    gaps: int = 0  # intervals longer than 1.5 median periods
    missing_frames: int = 0  # frames those gaps would have held
    zero_stamps: int = 0
    out_of_order: int = 0
    delay_ms: dict = field(default_factory=dict)  # log time - stamp


@dataclass
class TopicRow:
    name: str
    msgtype: str
    count: int
    rate_hz: float | None


@dataclass
class BagInfo:
    path: str
    storage: str
    size_bytes: int
    message_count: int
    duration_s: float
    start: str | None
    note: str
    topics: list[TopicRow]
    slop_s: float
    rgb: StreamInfo | None = None
    thermal: StreamInfo | None = None
    topic_problem: str = ""  # why the RGB/thermal topics could not be chosen
    pairs: int = 0
    pairing: dict = field(default_factory=dict)  # PairingStats
    pair_offset_ms: dict = field(default_factory=dict)  # thermal - RGB stamp, over the pairs
    nearest_offset_ms: dict = field(
        default_factory=dict
    )  # per RGB frame: nearest thermal (within half a period), signed
    nearest_histogram: list = field(default_factory=list)  # [(low_ms, high_ms, count)]
    rgb_without_partner: int = 0  # RGB frames with no thermal frame within half a frame period
    within_slop: dict = field(default_factory=dict)  # slop s -> RGB frames with a thermal frame that close
    suggested_slop_s: float | None = None
    verdict: str = ""
    usable: bool = False
    registration: str = ""  # `taseg bag info`'s registration check (bag.calibrate.registration_check)

    def to_dict(self) -> dict:
        return asdict(self)


def _stream_info(topic, first, stamps: np.ndarray, log_times: np.ndarray) -> StreamInfo:
    info = StreamInfo(topic.name, topic.msgtype, len(stamps))
    if first is not None:
        info.width = int(getattr(first, "width", 0)) or None
        info.height = int(getattr(first, "height", 0)) or None
        # the recording's text: escaped before it reaches a terminal or a report
        info.encoding = safe_text(getattr(first, "encoding", "") or getattr(first, "format", ""))
        if info.width is None and hasattr(first, "format"):
            info.width, info.height = _compressed_size(first)
    info.zero_stamps = int(np.count_nonzero(stamps <= 0))
    valid = stamps[stamps > 0]
    if valid.size:
        info.out_of_order = int(np.count_nonzero(np.diff(valid) <= 0))
        info.delay_ms = summarize_ms((log_times[stamps > 0] - valid) * 1e-9)
    ordered = np.sort(valid)
    periods = np.diff(ordered)
    periods = periods[periods > 0]
    if periods.size:
        median = float(np.median(periods))
        info.median_period_ms = median * 1e-6
        span = ordered[-1] - ordered[0]
        info.rate_hz = (ordered.size - 1) / (span * 1e-9) if span > 0 else None
        long = periods[periods > 1.5 * median]
        info.gaps = int(long.size)
        info.missing_frames = int(np.sum(np.round(long / median) - 1))
    return info


def _compressed_size(msg) -> tuple[int | None, int | None]:
    import cv2

    image = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None, None
    return int(image.shape[1]), int(image.shape[0])


def _nearest_offsets(rgb: np.ndarray, thermal: np.ndarray) -> np.ndarray:
    """For each RGB stamp, the signed offset (ns) to the nearest thermal stamp."""
    if rgb.size == 0 or thermal.size == 0:
        return np.zeros(0, np.int64)
    thermal = np.sort(thermal)
    idx = np.clip(np.searchsorted(thermal, rgb), 1, thermal.size - 1) if thermal.size > 1 else np.zeros(rgb.size, int)
    if thermal.size == 1:
        return thermal[0] - rgb
    before, after = thermal[idx - 1] - rgb, thermal[idx] - rgb
    return np.where(np.abs(before) <= np.abs(after), before, after)


def _histogram(offsets_ms: np.ndarray, bins: int = 8) -> list[tuple[float, float, int]]:
    if offsets_ms.size == 0:
        return []
    low, high = np.percentile(offsets_ms, [1, 99])
    if high - low < 1e-3:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(np.clip(offsets_ms, low, high), bins=bins, range=(low, high))
    return [(float(edges[i]), float(edges[i + 1]), int(counts[i])) for i in range(bins)]


def inspect_bag(
    path: str | Path, rgb_topic: str | None = None, thermal_topic: str | None = None, slop_s: float = DEFAULT_SLOP_S
) -> BagInfo:
    """Read a recording once and describe it (see the module docstring). A topic given explicitly
    that is missing or of the wrong type is a BagError; a failed guess is reported in ``topic_problem``."""
    with open_bag(path) as bag:
        return _inspect(bag, rgb_topic, thermal_topic, slop_s)


def _inspect(bag: Bag, rgb_topic: str | None, thermal_topic: str | None, slop_s: float) -> BagInfo:
    duration = bag.duration_s
    start = None
    if bag.start_ns is not None:
        start = datetime.fromtimestamp(bag.start_ns * 1e-9, tz=timezone.utc).isoformat(timespec="milliseconds")
    info = BagInfo(
        path=str(bag.path),
        storage=bag.storage,
        size_bytes=bag.size_bytes,
        message_count=bag.message_count,
        duration_s=duration,
        start=start,
        note=bag.note,
        topics=[
            TopicRow(t.name, t.msgtype, t.count, (t.count - 1) / duration if duration > 0 and t.count > 1 else None)
            for t in bag.topics.values()
        ],
        slop_s=slop_s,
    )
    try:
        rgb, thermal = resolve_image_topics(bag, rgb_topic, thermal_topic)
    except MissingStreamError as exc:
        info.verdict = f"NOT USABLE: {exc.reason}"
        return info
    except BagError as exc:
        if rgb_topic or thermal_topic:
            raise
        info.topic_problem = str(exc)
        info.verdict = "cannot check pairing: " + str(exc)
        return info
    pairing = BagPairing(bag, rgb.name, thermal.name, slop_s)
    stamps: dict[str, list[int]] = {rgb.name: [], thermal.name: []}
    logs: dict[str, list[int]] = {rgb.name: [], thermal.name: []}
    firsts: dict[str, object] = {}
    skews: list[int] = []
    for arrival in pairing:
        frame = arrival.frame
        stamps[frame.topic].append(frame.stamp_ns)
        logs[frame.topic].append(frame.log_time_ns)
        firsts.setdefault(frame.topic, frame.msg)
        if arrival.pair is not None:
            skews.append(arrival.pair.skew_ns)
    arrays = {k: np.asarray(v, np.int64) for k, v in stamps.items()}
    info.rgb = _stream_info(rgb, firsts.get(rgb.name), arrays[rgb.name], np.asarray(logs[rgb.name], np.int64))
    info.thermal = _stream_info(
        thermal, firsts.get(thermal.name), arrays[thermal.name], np.asarray(logs[thermal.name], np.int64)
    )
    info.pairs = len(skews)
    info.pairing = pairing.pairer.stats.as_dict()
    info.pair_offset_ms = summarize_ms(np.asarray(skews) * 1e-9)
    rgb_valid = arrays[rgb.name][arrays[rgb.name] > 0]
    nearest = _nearest_offsets(rgb_valid, arrays[thermal.name][arrays[thermal.name] > 0])
    # An RGB frame whose thermal partner was dropped finds the neighbouring frame a whole period away:
    # that is a missing partner, not an offset, and would swamp the distribution.
    half_period_ns = 0.5 * (info.rgb.median_period_ms or 1e9) * 1e6
    close = nearest[np.abs(nearest) < half_period_ns]
    info.rgb_without_partner = int(nearest.size - close.size)
    info.nearest_offset_ms = summarize_ms(close * 1e-9)
    info.nearest_histogram = _histogram(close * 1e-6)
    abs_nearest = np.abs(close)
    info.within_slop = {f"{s:g}": int(np.count_nonzero(abs_nearest <= s * 1e9)) for s in CANDIDATE_SLOPS_S}
    _judge(info, abs_nearest)
    return info


def _judge(info: BagInfo, abs_nearest_ns: np.ndarray) -> None:
    rgb_count = info.rgb.count if info.rgb else 0
    period_s = (info.rgb.median_period_ms or 100.0) * 1e-3 if info.rgb else 0.1
    if abs_nearest_ns.size:
        need = float(np.percentile(abs_nearest_ns, 95)) * 1e-9 * 1.2
        fitting = [s for s in CANDIDATE_SLOPS_S if s >= need and s < period_s / 2]
        info.suggested_slop_s = fitting[0] if fitting else None
    if rgb_count == 0 or info.thermal is None or info.thermal.count == 0:
        info.verdict = "NOT USABLE: one of the cameras has no frames"
        return
    unstamped = [f"{name} ({s.count} frames)" for name, s in (("RGB", info.rgb), ("thermal", info.thermal))
                 if s.zero_stamps == s.count]
    if unstamped:  # a stamp <= 0 is never paired (as by the node): nothing to measure offsets with
        info.verdict = (f"NOT USABLE: every stamp of {' and '.join(unstamped)} is zero or negative: frames are paired "
                        "by their header stamps; have the camera drivers stamp them")
        return
    share = info.pairs / rgb_count
    median_offset_ms = info.nearest_offset_ms.get("median")
    if info.pairs == 0:
        if median_offset_ms is not None and abs(median_offset_ms) > 1000:
            info.verdict = (
                f"NOT USABLE: the cameras' stamps are {median_offset_ms / 1000:+.1f} s apart: they are not on one "
                "clock (use the drivers' ROS time stamps, or fix clock sync)"
            )
        else:
            better = f"; try --slop {info.suggested_slop_s:g}" if info.suggested_slop_s else ""
            offset = "no thermal frame within half a frame period" if median_offset_ms is None else \
                f"median offset {median_offset_ms:+.1f} ms"
            info.verdict = (
                f"NOT USABLE at slop {info.slop_s * 1e3:g} ms: no RGB frame has a thermal frame that close "
                f"({offset}){better}"
            )
        return
    info.usable = True
    quality = "USABLE" if share >= 0.8 else "PARTLY USABLE" if share >= 0.3 else "POOR"
    text = f"{quality}: {info.pairs} pairs = {100 * share:.0f}% of the RGB frames at slop {info.slop_s * 1e3:g} ms"
    if info.suggested_slop_s is not None and info.suggested_slop_s > info.slop_s:
        gain = info.within_slop.get(f"{info.suggested_slop_s:g}", 0)
        if gain > info.pairs:
            text += f"; --slop {info.suggested_slop_s:g} would pair about {gain}"
    info.verdict = text


def format_info(info: BagInfo) -> str:
    lines = [
        f"recording: {info.path} ({info.storage}, {_size(info.size_bytes)})",
        f"  {info.message_count} messages over {info.duration_s:.2f} s"
        + (f", from {info.start}" if info.start else ""),
    ]
    if info.note:
        lines.append(f"  note: {info.note}")
    roles = {}
    if info.rgb:
        roles[info.rgb.topic] = "RGB"
    if info.thermal:
        roles[info.thermal.topic] = "thermal"
    width = max([len(t.name) for t in info.topics] + [5])
    type_width = max([len(t.msgtype) for t in info.topics] + [4])
    lines.append("topics:")
    for t in info.topics:
        role = f"  <- {roles[t.name]}" if t.name in roles else ""
        lines.append(
            f"  {t.name:<{width}}  {t.msgtype:<{type_width}}  {t.count:>7} msgs  {_fmt(t.rate_hz, ' Hz'):>9}{role}"
        )
    if info.topic_problem:
        lines.append(info.topic_problem)
    for label, s in (("RGB", info.rgb), ("thermal", info.thermal)):
        if s is None:
            continue
        size = f"{s.width}x{s.height}" if s.width else "?x?"
        lines.append(
            f"{label} {s.topic}: {size} {s.encoding or '?'}, {s.count} frames, {_fmt(s.rate_hz, ' Hz')} from stamps "
            f"(period {_fmt(s.median_period_ms, ' ms')}), {s.gaps} gaps (~{s.missing_frames} frames missing)"
        )
        extra = []
        if s.zero_stamps:
            extra.append(f"{s.zero_stamps} ZERO stamps (never paired)")
        if s.out_of_order:
            extra.append(f"{s.out_of_order} stamps out of order")
        if s.delay_ms.get("count"):
            extra.append(
                f"recorded {_fmt(s.delay_ms['median'], ' ms')} after its stamp "
                f"(median; p90 {_fmt(s.delay_ms['p90'], ' ms')})"
            )
        if extra:
            lines.append("    " + "; ".join(extra))
    if info.rgb and info.thermal:
        p = info.pairing
        lines.append(
            f"pairs at slop {info.slop_s * 1e3:g} ms (the node's pairing): {info.pairs} "
            f"(unmatched: {p.get('unmatched_rgb', 0)} RGB, {p.get('unmatched_thermal', 0)} thermal)"
        )
        if info.pairs:
            o = info.pair_offset_ms
            lines.append(
                f"  thermal - RGB stamp of the pairs: median {o['median']:+.1f} ms, "
                f"range {o['min']:+.1f} .. {o['max']:+.1f} ms"
            )
        n = info.nearest_offset_ms
        if n.get("count"):
            lines.append(
                f"  nearest thermal frame to each RGB frame: median {n['median']:+.1f} ms, "
                f"range {n['min']:+.1f} .. {n['max']:+.1f} ms ({info.rgb_without_partner} RGB frames have none "
                "within half a frame period)"
            )
            peak = max(c for _, _, c in info.nearest_histogram) or 1
            for low, high, count in info.nearest_histogram:
                bar = "#" * int(round(30 * count / peak))
                lines.append(f"    {low:+8.1f} .. {high:+8.1f} ms  {count:>6}  {bar}")
            within = ", ".join(f"{float(s) * 1e3:g} ms: {c}" for s, c in info.within_slop.items())
            lines.append(f"  RGB frames with a thermal frame within {within}")
    lines.append(f"verdict: {info.verdict}")
    return safe_lines(lines)  # topic names, types and encodings are the recording's text
