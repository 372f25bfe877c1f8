"""`taseg bag eval`: run a checkpoint on a recording, score it against labels matched by stamp, time it,
and write a report plus an output recording for RViz / Foxglove.

Two modes, both pairing frames with the node's own ``StampPairer`` in the order the recorder got them:

offline (default)
    Every pair is processed, as fast as the machine allows, by the node's own per-frame pipeline
    (``taseg_ros.frame.FramePipeline``: decode, thermal normalisation/alignment, model, colourise and
    overlay). Each pair's processing time is measured per step; their sum is the node's per-pair work
    when somebody subscribes to its colourised and overlay outputs (publishing itself not included),
    and ``RealTimeWorker`` then replays the stream against those times to tell which pairs a node
    running live on this machine would have dropped (its newest-pair-wins slot). Scores cover every
    labelled pair.
realtime
    The recording is played through ``RealTimeWorker`` at its real rate: only the pairs the node
    would have processed are run and scored (the accuracy a live node delivers, stale frames
    included), and outputs are written at the simulated time the node would have published them.

The output recording (mcap, zstd chunks) holds the input topics as recorded, the model's
``<ns>/labels`` (mono8 class ids), ``<ns>/colorized`` and ``<ns>/overlay`` (rgb8) with the RGB
frame's header, as the node publishes them, ``<ns>/class_info`` (JSON, as the node's), and for
labelled frames ``<ns>/ground_truth`` and ``<ns>/ground_truth/colorized``.

Ctrl-C stops after the current frame; the output recording and the report are still written, for
the frames done so far, and marked interrupted.
"""

from __future__ import annotations

import heapq
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from taseg_ros.bag.io import (
    IMAGE,
    STRING,
    BagError,
    BagWriter,
    image_message,
    open_bag,
    resolve_image_topics,
    string_message,
)
from taseg_ros.bag.labels import FolderLabels, LabelSource, TopicLabels
from taseg_ros.bag.pairs import NS, BagPairing, RealTimeWorker, simulate_realtime, summarize
from taseg_ros.frame import STEPS, FramePipeline, FrameSettings
from taseg_ros.preprocessing import ThermalNormalization, colorize
from taseg_ros.ros.pairing import Pair

MODES = ("offline", "realtime")


@dataclass
class FrameResult:
    rgb_stamp_ns: int
    thermal_stamp_ns: int
    arrival_ns: int
    processing_s: float
    inference_s: float
    steps_s: dict = field(default_factory=dict)  # FramePipeline timings: decode, thermal, inference, render
    start_ns: int | None = None  # realtime: when the simulated worker took it
    finish_ns: int | None = None
    label: str | None = None  # label source name when scored
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "rgb_stamp_ns": self.rgb_stamp_ns,
            "thermal_stamp_ns": self.thermal_stamp_ns,
            "processing_ms": self.processing_s * 1e3,
            "inference_ms": self.inference_s * 1e3,
            "steps_ms": {step: seconds * 1e3 for step, seconds in self.steps_s.items()},
            "latency_ms": None if self.finish_ns is None else (self.finish_ns - self.rgb_stamp_ns) * 1e-6,
            "label": self.label,
            "error": self.error,
        }


@dataclass
class BagEvalResult:
    bag: str
    checkpoint: str
    model: str
    device: str
    precision: str
    mode: str
    slop_s: float
    rgb_topic: str
    thermal_topic: str
    label_source: str | None
    class_names: tuple[str, ...]
    pairing: dict = field(default_factory=dict)
    pairs: int = 0
    processed: int = 0
    failed: int = 0
    scored: int = 0
    labels_total: int = 0
    labels_unmatched: int = 0
    dropped: int = 0  # by a real-time node (simulated)
    dropped_arrivals_ns: list[int] = field(default_factory=list)  # when the dropped pairs were complete
    simulated_latency_s: list[float] = field(default_factory=list)  # offline: output - RGB stamp of a real-time node
    frames: list[FrameResult] = field(default_factory=list)
    scores: Any = None  # taseg_ros.evaluation.metrics.EvaluationResult
    interrupted: bool = False
    output_bag: str | None = None
    output_topics: dict = field(default_factory=dict)
    recording_duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    note_counts: dict = field(default_factory=dict)  # frames per FrameNote kind (e.g. nonfinite_thermal)

    @property
    def dropped_share(self) -> float | None:
        return self.dropped / self.pairs if self.pairs else None

    def timing(self) -> dict:
        ok = [f for f in self.frames if f.error is None]
        out = {
            "processing_ms": summarize(f.processing_s for f in ok),
            "inference_ms": summarize(f.inference_s for f in ok),
            "steps_ms": {step: summarize(f.steps_s.get(step, 0.0) for f in ok) for step in STEPS},
        }
        total = sum(f.processing_s for f in ok)
        out["throughput_fps"] = len(ok) / total if total > 0 else None
        out["input_pair_rate_hz"] = self.pairs / self.recording_duration_s if self.recording_duration_s > 0 else None
        if self.mode == "offline":
            out["simulated_realtime_latency_ms"] = summarize(self.simulated_latency_s)
        if self.mode == "realtime":
            timed = [f for f in self.frames if f.finish_ns is not None]
            out["latency_ms"] = summarize((f.finish_ns - f.rgb_stamp_ns) / NS for f in timed)
            out["queue_wait_ms"] = summarize((f.start_ns - f.arrival_ns) / NS for f in timed)
        return out

    def to_dict(self) -> dict:
        from taseg_ros.evaluation.report import to_dict as scores_to_dict

        return {
            "bag": self.bag,
            "checkpoint": self.checkpoint,
            "model": self.model,
            "device": self.device,
            "precision": self.precision,
            "mode": self.mode,
            "slop_s": self.slop_s,
            "topics": {"rgb": self.rgb_topic, "thermal": self.thermal_topic, "labels": self.label_source},
            "interrupted": self.interrupted,
            "recording_duration_s": self.recording_duration_s,
            "pairing": self.pairing,
            "frames": {
                "pairs": self.pairs,
                "processed": self.processed,
                "failed": self.failed,
                "scored": self.scored,
                "labels_total": self.labels_total,
                "labels_unmatched": self.labels_unmatched,
            },
            "realtime": {
                "dropped": self.dropped,
                "dropped_share": self.dropped_share,
                "simulated": (
                    "newest-pair-wins worker fed with the measured per-pair processing times"
                    if self.mode == "offline"
                    else "pairs were run at the recording's rate; dropped pairs were not processed"
                ),
            },
            "timing": self.timing(),
            "scores": None if self.scores is None else scores_to_dict(self.scores),
            "output_bag": self.output_bag,
            "output_topics": self.output_topics,
            "notes": self.notes,
            "note_counts": self.note_counts,
            "per_frame": [f.to_dict() for f in self.frames],
        }


class _OrderedOutput:
    """Writes to a BagWriter in log-time order although outputs are produced later than the inputs
    they belong to (realtime mode stamps them with their simulated publish time)."""

    def __init__(self, writer: BagWriter | None) -> None:
        self.writer = writer
        self._heap: list[tuple[int, int, str, str, Any, bool]] = []
        self._seq = 0

    def put(self, log_ns: int, topic: str, msgtype: str, payload: Any, raw: bool = False) -> None:
        if self.writer is None:
            return
        heapq.heappush(self._heap, (int(log_ns), self._seq, topic, msgtype, payload, raw))
        self._seq += 1

    def flush(self, until_ns: int | None = None) -> None:
        while self._heap and (until_ns is None or self._heap[0][0] <= until_ns):
            log_ns, _, topic, msgtype, payload, raw = heapq.heappop(self._heap)
            if raw:
                self.writer.write_raw(topic, msgtype, log_ns, payload)
            else:
                self.writer.write(topic, msgtype, log_ns, payload)


def _frame_id(msg: Any) -> str:
    return str(msg.header.frame_id)


def evaluate_bag(
    bag_path: str | Path,
    segmenter: Any,
    *,
    checkpoint_name: str = "",
    rgb_topic: str | None = None,
    thermal_topic: str | None = None,
    slop_s: float = 0.02,
    mode: str = "offline",
    labels_dir: str | Path | None = None,
    label_topic: str | None = None,
    label_tolerance_s: float = 0.001,
    output_bag: str | Path | None = None,
    output_namespace: str = "/taseg",
    thermal_norm: ThermalNormalization | None = None,
    homography: np.ndarray | None = None,
    overlay_alpha: float = 0.5,
    max_pairs: int | None = None,
    stop: Callable[[], bool] | None = None,
    on_pair: Callable[[int], None] | None = None,
) -> BagEvalResult:
    """Evaluate ``segmenter`` (a ``taseg_ros.inference.Segmenter``) on a recording; see the module
    docstring. ``stop()`` is polled between messages (Ctrl-C handling); ``on_pair(n)`` is called after
    each processed pair (progress)."""
    from taseg_ros.evaluation.metrics import SegmentationEvaluator
    from taseg_ros.ros.image_codec import ImageDecodeError, decode_rgb, decode_thermal

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if labels_dir is not None and label_topic is not None:
        raise ValueError("give labels either as a folder (--labels) or as a topic (--label-topic), not both")
    thermal_norm = thermal_norm or ThermalNormalization()
    class_info = segmenter.class_info
    palette = class_info.palette
    ns = "/" + output_namespace.strip("/")
    topics_out = {
        "labels": f"{ns}/labels",
        "colorized": f"{ns}/colorized",
        "overlay": f"{ns}/overlay",
        "class_info": f"{ns}/class_info",
        "ground_truth": f"{ns}/ground_truth",
        "ground_truth_colorized": f"{ns}/ground_truth/colorized",
    }

    with open_bag(bag_path) as bag:
        rgb, thermal = resolve_image_topics(bag, rgb_topic, thermal_topic)
        labels: LabelSource | None = None
        if labels_dir is not None:
            labels = FolderLabels(labels_dir, class_info, label_tolerance_s)
        elif label_topic is not None:
            labels = TopicLabels(bag, label_topic, class_info, label_tolerance_s)
        result = BagEvalResult(
            bag=str(bag.path),
            checkpoint=checkpoint_name,
            model=getattr(getattr(segmenter, "cfg", None), "name", ""),
            device=str(getattr(segmenter, "device", "")),
            precision=str(getattr(segmenter, "precision", "")),
            mode=mode,
            slop_s=slop_s,
            rgb_topic=rgb.name,
            thermal_topic=thermal.name,
            label_source=None if labels is None else labels.description,
            class_names=tuple(class_info.names),
            labels_total=0 if labels is None else len(labels),
            recording_duration_s=bag.duration_s,
        )
        if bag.note:
            result.notes.append(bag.note)
        from taseg_ros.datasets.config import MetricProtocol

        protocol = (
            labels.metric if labels is not None and labels.metric is not None else MetricProtocol(nan_policy="nanmean")
        )
        evaluator = SegmentationEvaluator(class_info.names, protocol, dataset=Path(str(bag.path)).name)
        copy_topics = [rgb.name, thermal.name] + ([label_topic] if label_topic else [])
        pairing = BagPairing(bag, rgb.name, thermal.name, slop_s, extra_topics=copy_topics[2:])

        writer = BagWriter(output_bag, storage="mcap") if output_bag is not None else None
        out = _OrderedOutput(writer)
        pipeline = FramePipeline(segmenter, FrameSettings(thermal_norm, homography, overlay_alpha))
        warmed = False

        def process(pair) -> tuple[float, dict]:
            """The node's per-pair work (FramePipeline); returns (seconds, outputs)."""
            nonlocal warmed
            if not warmed:
                # The first call at a frame size allocates and plans kernels (seconds on a GPU); a node
                # pays that once at start-up, so it is kept out of the per-pair times.
                warmed = True
                FramePipeline(segmenter, pipeline.settings).process_messages(pair.rgb.msg, pair.thermal.msg)
            frame = pipeline.process_messages(pair.rgb.msg, pair.thermal.msg)
            for note in frame.notes + ([frame.error] if frame.error is not None else []):
                _note(result, note, {"rgb": rgb.name, "thermal": thermal.name})
            if not frame.ok:
                return frame.timings.get("decode", 0.0), {"error": frame.error.text, "steps_s": frame.timings}
            return frame.timings["total"], {
                "labels": frame.labels,
                "colour": frame.colorized,
                "overlay": frame.overlay,
                "inference_s": frame.timings["inference"],
                "steps_s": {step: frame.timings[step] for step in STEPS},
            }

        def record(
            pair, seconds: float, outputs: dict, arrival_ns: int, publish_ns: int, start_ns=None, finish_ns=None
        ) -> None:
            frame = FrameResult(
                rgb_stamp_ns=pair.rgb_stamp_ns,
                thermal_stamp_ns=pair.thermal_stamp_ns,
                arrival_ns=arrival_ns,
                processing_s=seconds,
                inference_s=outputs.get("inference_s", 0.0),
                steps_s=outputs.get("steps_s", {}),
                start_ns=start_ns,
                finish_ns=finish_ns,
                error=outputs.get("error"),
            )
            result.frames.append(frame)
            if frame.error is not None:
                result.failed += 1
                return
            result.processed += 1
            stamp, frame_id = pair.rgb_stamp_ns, _frame_id(pair.rgb.msg)
            predicted = outputs["labels"]
            out.put(publish_ns, topics_out["labels"], IMAGE, image_message(stamp, frame_id, predicted, "mono8"))
            out.put(
                publish_ns, topics_out["colorized"], IMAGE, image_message(stamp, frame_id, outputs["colour"], "rgb8")
            )
            out.put(
                publish_ns, topics_out["overlay"], IMAGE, image_message(stamp, frame_id, outputs["overlay"], "rgb8")
            )
            key = labels.match(stamp) if labels is not None else None
            if key is not None:
                raw, ids, name = labels.load(key)
                if ids.shape != predicted.shape:
                    raise BagError(
                        f"{name}: label is {ids.shape[1]}x{ids.shape[0]} but the RGB frame is "
                        f"{predicted.shape[1]}x{predicted.shape[0]} (WxH)"
                    )
                evaluator.update(ids, predicted, source=name)
                frame.label = name
                result.scored += 1
                stored = raw.astype(np.uint8) if raw.max(initial=0) <= 255 else raw.astype(np.uint16)
                out.put(
                    publish_ns,
                    topics_out["ground_truth"],
                    IMAGE,
                    image_message(stamp, frame_id, stored, "mono8" if stored.dtype == np.uint8 else "mono16"),
                )
                gt_colour = colorize(ids, palette)  # ignored pixels (255) come out black
                out.put(
                    publish_ns,
                    topics_out["ground_truth_colorized"],
                    IMAGE,
                    image_message(stamp, frame_id, gt_colour, "rgb8"),
                )
            if on_pair is not None:
                on_pair(result.processed + result.failed)

        # (arrival, stamps-only pair): the frames themselves must not stay in memory for the whole recording
        arrivals: list[tuple[int, Pair]] = []
        durations: dict[int, float] = {}
        worker = None
        handled = 0
        if mode == "realtime":
            worker = RealTimeWorker(process)
        try:
            if writer is not None:
                start = bag.start_ns or 0
                out.put(start, topics_out["class_info"], STRING, string_message(json.dumps(class_info.to_mapping())))
            for arrival in pairing:
                if stop is not None and stop():
                    result.interrupted = True
                    break
                now = arrival.message.log_time_ns
                if worker is not None:
                    worker.advance(now)
                    handled = _drain(worker, handled, record)
                out.flush(now)
                if arrival.message.topic in copy_topics:
                    out.put(now, arrival.message.topic, arrival.message.msgtype, arrival.message.data, raw=True)
                pair = arrival.pair
                if pair is None:
                    continue
                arrivals.append((now, Pair(pair.rgb_stamp_ns, pair.thermal_stamp_ns, None, None)))
                if worker is not None:
                    worker.offer(pair, now)
                    handled = _drain(worker, handled, record)
                else:
                    seconds, outputs = process(pair)
                    durations[pair.rgb_stamp_ns] = seconds
                    record(pair, seconds, outputs, now, now)
                if max_pairs is not None and len(arrivals) >= max_pairs:
                    break
            if worker is not None and not result.interrupted:
                worker.finish()
                handled = _drain(worker, handled, record)
        finally:
            try:
                out.flush()
            finally:
                if writer is not None:
                    writer.close()
        result.pairs = len(arrivals)
        result.pairing = pairing.pairer.stats.as_dict()
        if worker is None:
            worker = simulate_realtime(arrivals, durations)
        elif result.interrupted and worker.slot.pending:
            result.notes.append("interrupted: the pair waiting for the worker was not processed")
        result.dropped = worker.dropped
        taken = {item.pair.rgb_stamp_ns for item in worker.processed}
        if mode == "offline":
            result.simulated_latency_s = [(item.finish_ns - item.pair.rgb_stamp_ns) / NS for item in worker.processed]
        not_taken = [t for t, pair in arrivals if pair.rgb_stamp_ns not in taken]
        # A pair still pending (interrupted run) is the newest one offered, and was not dropped.
        result.dropped_arrivals_ns = not_taken[:-1] if worker.slot.pending else not_taken
        if labels is not None:
            result.labels_unmatched = len(labels) - len(labels.matched)
            if result.scored:
                result.scores = evaluator.result()
            else:
                result.notes.append(
                    f"no label matched a processed pair within {label_tolerance_s * 1e3:g} ms "
                    f"({len(labels)} labels in {labels.description})"
                )
        if result.pairs == 0 and not result.interrupted:
            from taseg_ros.bag.info import inspect_bag

            info = inspect_bag(bag_path, rgb.name, thermal.name, slop_s)
            raise BagError(f"{bag.path}: no RGB/thermal pair within slop {slop_s * 1e3:g} ms: {info.verdict}")
        if writer is not None:
            result.output_bag = str(writer.path)
            result.output_topics = {k: v for k, v in writer.counts.items()}
    return result


def _note(result: BagEvalResult, note, topics: dict[str, str]) -> None:
    """Count a FrameNote by kind; its text goes into the notes the first time, worded as the node logs it."""
    if note.kind not in result.note_counts:
        said_once = note.kind == "thermal_aligned"
        result.notes.append(note.text if said_once else f"{topics.get(note.stream, note.stream)}: {note.text}")
    result.note_counts[note.kind] = result.note_counts.get(note.kind, 0) + 1


def _drain(worker: RealTimeWorker, handled: int, record: Callable) -> int:
    """Write out pairs the simulated worker finished since the last call."""
    for item in worker.processed[handled:]:
        seconds = (item.finish_ns - item.start_ns) / NS
        record(item.pair, seconds, item.result, item.arrival_ns, item.finish_ns, item.start_ns, item.finish_ns)
        # Done with the images: keep the stamps only, or a long recording would pile up in memory.
        item.pair, item.result = Pair(item.pair.rgb_stamp_ns, item.pair.thermal_stamp_ns, None, None), None
    return len(worker.processed)


# --- report ------------------------------------------------------------------------------------------


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_summary(result: BagEvalResult) -> str:
    t = result.timing()
    lines = [
        f"{result.bag}: {result.pairs} RGB/thermal pairs at slop {result.slop_s * 1e3:g} ms "
        f"({result.rgb_topic} + {result.thermal_topic}), mode {result.mode}"
        + (" -- INTERRUPTED" if result.interrupted else ""),
        f"  processed {result.processed}"
        + (f", failed {result.failed}" if result.failed else "")
        + f"; per pair {_ms(t['processing_ms']['median'])} ms median, {_ms(t['processing_ms']['p90'])} ms p90 "
        f"(model {_ms(t['inference_ms']['median'])} ms) on {result.device} {result.precision}",
    ]
    share = result.dropped_share
    verb = "dropped" if result.mode == "realtime" else "would drop"
    lines.append(
        f"  a real-time node on this machine {verb} {result.dropped} of {result.pairs} pairs"
        + (f" ({100 * share:.1f}%)" if share is not None else "")
        + (
            f"; throughput {t['throughput_fps']:.1f} pairs/s vs {t['input_pair_rate_hz']:.1f} pairs/s recorded"
            if t.get("throughput_fps") and t.get("input_pair_rate_hz")
            else ""
        )
    )
    latency = t.get("latency_ms") or t.get("simulated_realtime_latency_ms")
    if latency and latency["count"]:
        lines.append(
            f"  latency of a real-time node (output - RGB stamp): median {_ms(latency['median'])} ms, p90 "
            f"{_ms(latency['p90'])} ms, max {_ms(latency['max'])} ms"
        )
    if result.label_source is not None:
        lines.append(
            f"  labels: {result.labels_total} in {result.label_source}; {result.scored} pairs scored, "
            f"{result.labels_unmatched} labels matched no processed pair"
        )
    if result.scores is not None:
        s = result.scores.overall
        lines.append(f"  mIoU {100 * s.miou:.1f}% ({s.nan_policy}), pixel accuracy {100 * s.pixel_accuracy:.1f}%")
        for i, name in enumerate(result.class_names):
            iou = s.iou[i]
            lines.append(f"    {name:<20} IoU {'n/a' if np.isnan(iou) else f'{100 * iou:5.1f}%'}")
    for note in result.notes:
        lines.append(f"  note: {note}")
    if result.output_bag:
        lines.append(f"  output recording: {result.output_bag}")
    return "\n".join(lines)


def _markdown(result: BagEvalResult, plots: dict[str, Path]) -> str:
    from taseg_ros.evaluation.report import to_markdown

    t = result.timing()
    rows = [
        ("recording", f"`{result.bag}`"),
        ("topics", f"`{result.rgb_topic}` + `{result.thermal_topic}`"),
        ("checkpoint", f"`{result.checkpoint}` ({result.model}, {result.device} {result.precision})"),
        ("mode", result.mode + (" (interrupted)" if result.interrupted else "")),
        ("pairs (slop)", f"{result.pairs} ({result.slop_s * 1e3:g} ms)"),
        ("processed / failed", f"{result.processed} / {result.failed}"),
        (
            "dropped by a real-time node",
            f"{result.dropped} ({'-' if result.dropped_share is None else f'{100 * result.dropped_share:.1f}%'})",
        ),
        (
            "processing per pair, median / p90 / max",
            " / ".join(_ms(t["processing_ms"][k]) for k in ("median", "p90", "max")) + " ms",
        ),
        ("model per pair, median", f"{_ms(t['inference_ms']['median'])} ms"),
    ]
    latency = t.get("latency_ms") or t.get("simulated_realtime_latency_ms")
    if latency and latency["count"]:
        rows.append(
            (
                "latency of a real-time node (output - RGB stamp), median / p90 / max",
                f"{_ms(latency['median'])} / {_ms(latency['p90'])} / {_ms(latency['max'])} ms",
            )
        )
    if result.label_source is not None:
        rows.append(
            (
                "labels",
                f"{result.labels_total} in `{result.label_source}`, {result.scored} scored, "
                f"{result.labels_unmatched} unmatched",
            )
        )
    if result.output_bag:
        rows.append(("output recording", f"`{result.output_bag}`"))
    text = ["# Recording evaluation", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]
    if result.mode == "offline":
        text.append(
            "Drops are simulated: the recording's pairs replayed at their recorded times against the "
            "measured per-pair processing times, with the node's newest-pair-wins policy.\n"
        )
    for note in result.notes:
        text.append(f"- note: {note}")
    if "latency" in plots:
        text += ["", f"![processing time per pair]({plots['latency'].name})", ""]
    if result.scores is not None:
        scores_md = to_markdown(result.scores).replace("# Evaluation", "## Scores", 1)
        text += [scores_md]
        for key in ("iou_bars", "confusion"):
            if key in plots:
                text.append(f"![{key}]({plots[key].name})\n")
    return "\n".join(text) + "\n"


def plot_timing(result: BagEvalResult, path: Path) -> Path:
    """Processing time of every pair over the recording, and where a real-time node dropped pairs."""
    from matplotlib.figure import Figure

    frames = [f for f in result.frames if f.error is None]
    fig = Figure(figsize=(9, 3.2))
    ax = fig.subplots()
    if frames:
        t0 = min(f.arrival_ns for f in frames)
        x = [(f.arrival_ns - t0) / NS for f in frames]
        ax.plot(x, [f.processing_s * 1e3 for f in frames], ".", label="processing per pair")
        if result.mode == "realtime":
            ax.plot(
                x, [(f.finish_ns - f.rgb_stamp_ns) * 1e-6 for f in frames], "x", label="latency (output - RGB stamp)"
            )
        if result.dropped_arrivals_ns:
            drops = [(t - t0) / NS for t in result.dropped_arrivals_ns]
            ax.plot(drops, [0] * len(drops), "|", color="red", markersize=14, label="pair dropped by a real-time node")
        period = result.recording_duration_s / result.pairs * 1e3 if result.pairs else None
        if period:
            ax.axhline(period, color="red", linestyle="--", linewidth=1, label=f"mean pair interval {period:.0f} ms")
    ax.set_xlabel("recording time (s)")
    ax.set_ylabel("ms")
    share = result.dropped_share
    ax.set_title(
        f"{result.mode}: {result.processed} processed, {result.dropped} dropped by a real-time node"
        + (f" ({100 * share:.1f}%)" if share is not None else "")
    )
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def write_eval_report(result: BagEvalResult, out_dir: str | Path) -> dict[str, Path]:
    """report.json, report.md, timing.png and (with labels) iou_per_class.png and confusion_matrix.png."""
    from taseg_ros.evaluation.report import plot_confusion, plot_iou_bars

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"latency": plot_timing(result, out / "timing.png")}
    if result.scores is not None:
        files["iou_bars"] = plot_iou_bars(result.scores, out / "iou_per_class.png")
        files["confusion"] = plot_confusion(result.scores.overall, result.class_names, out / "confusion_matrix.png")
    files["json"] = out / "report.json"
    files["json"].write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    files["markdown"] = out / "report.md"
    files["markdown"].write_text(_markdown(result, files))
    return files
