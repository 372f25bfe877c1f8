"""`taseg bag eval`: run a checkpoint on a recording, score it against labels matched by stamp, time it,
and write a report plus an output recording for RViz / Foxglove.

Two modes, both pairing frames with the node's own ``StampPairer`` in the order the recorder got them:

offline (default)
    Every pair is processed, as fast as the machine allows, by the node's own per-frame pipeline
    (``taseg_ros.inference.pipeline.FramePipeline``: decode, thermal normalisation/alignment, model, colourise and
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
labelled frames ``<ns>/ground_truth`` and ``<ns>/ground_truth/colorized``, and the label-free
figures: ``<ns>/confidence`` and ``<ns>/quality/<figure>`` (see output.py).

Label-free quality (``evaluation.quality``) is computed for every processed pair, with or without
labels: confidence, entropy, flicker against the previous processed pair (raw and motion
compensated), class shares; with ``thermal_reliance`` a second forward with the thermal input
blanked; with a ``baseline`` model the same pipeline runs it on the same decoded pair (its own
figures, and the share of pixels where both chose the same class). None of this is in the per-pair
times (the entropy map comes with the model's output but is timed apart: inference.pipeline.FrameResult.timings).

Ctrl-C stops after the current frame; the output recording and the report are still written, for
the frames done so far, and marked interrupted.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from taseg_ros.bag.evaluate.output import EvalRecording
from taseg_ros.bag.evaluate.result import BagEvalResult, PairResult
from taseg_ros.bag.info import inspect_bag
from taseg_ros.bag.labels import FolderLabels, LabelSource, TopicLabels, check_tolerance
from taseg_ros.bag.pairs import BagPairing, PairSource, RealTimeWorker, failure_summary, simulate_realtime
from taseg_ros.bag.io.reader import Bag, BagError, open_bag
from taseg_ros.bag.io.topics import resolve_image_topics
from taseg_ros.datasets.config import MetricProtocol
from taseg_ros.errors import InputError
from taseg_ros.evaluation.metrics import SegmentationEvaluator
from taseg_ros.evaluation.quality import (
    DEFAULT_LOW_CONFIDENCE,
    DEFAULT_SEGMENT_WINDOW_S,
    DEFAULT_WORST_SEGMENTS,
    QualityTracker,
    RecordingQuality,
    disagreement,
)
from taseg_ros.frames.blank import blank_thermal
from taseg_ros.frames.pairing import NS_PER_S, Pair
from taseg_ros.frames.settings import STEPS, FrameSettings
from taseg_ros.inference.pipeline import SAID_ONCE, FramePipeline
from taseg_ros.ros.names import check_namespace

MODES = ("offline", "realtime")


@dataclass(frozen=True)
class EvalSettings:
    """Everything `taseg bag eval` is asked to do, checked once (before the model is loaded)."""

    source: PairSource
    frame: FrameSettings = field(default_factory=FrameSettings)  # thermal preparation, overlay alpha: the node's
    mode: str = "offline"
    labels_dir: Path | None = None  # label PNGs named by stamp
    label_topic: str | None = None  # or class-id images recorded in the bag
    label_tolerance_s: float = 0.001
    output_namespace: str = "/taseg"
    checkpoint_name: str = ""  # how the report names the model
    low_confidence: float = DEFAULT_LOW_CONFIDENCE
    thermal_reliance: bool = False  # a second forward with the thermal input blanked
    segment_window_s: float = DEFAULT_SEGMENT_WINDOW_S
    worst_segments: int = DEFAULT_WORST_SEGMENTS

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.labels_dir is not None and self.label_topic is not None:
            raise InputError("give labels either as a folder (--labels) or as a topic (--label-topic), not both")
        check_tolerance(self.label_tolerance_s)
        if not 0 < self.segment_window_s < math.inf:  # report.json holds it: JSON has no inf
            raise InputError(f"--segment-window must be a finite number of seconds > 0, got {self.segment_window_s}")
        object.__setattr__(self, "output_namespace", check_namespace(self.output_namespace, "--namespace"))


def evaluate_bag(
    settings: EvalSettings,
    segmenter: Any,
    *,
    output_bag: str | Path | None = None,
    baseline: Any = None,
    stop: Callable[[], bool] | None = None,
    on_pair: Callable[[int], None] | None = None,
) -> BagEvalResult:
    """Evaluate ``segmenter`` (a ``taseg_ros.inference.Segmenter``) on ``settings.source``; see the module
    docstring. ``output_bag``: the output recording (None: none). ``baseline``: a second Segmenter (same
    class list) run on the same pairs. ``stop()`` is polled between messages (Ctrl-C handling);
    ``on_pair(n)`` is called after each processed pair (progress)."""
    source, s = settings.source, settings
    with open_bag(source.bag) as bag:
        rgb, thermal = resolve_image_topics(bag, source.rgb_topic, source.thermal_topic)
        labels = _label_source(bag, segmenter.class_info, s.labels_dir, s.label_topic, s.label_tolerance_s)
        result = _new_result(bag, segmenter, s.checkpoint_name, s.mode, source.slop_s, rgb.name, thermal.name, labels)
        result.segment_window_s, result.worst_segments = s.segment_window_s, s.worst_segments
        quality = _Quality(result, segmenter, s.low_confidence, s.thermal_reliance,
                           None if baseline is None else FramePipeline(baseline, s.frame))
        evaluation = _Evaluation(
            bag,
            FramePipeline(segmenter, s.frame),
            result,
            labels,
            EvalRecording(output_bag, s.output_namespace, segmenter.class_info),
            quality,
            stop=stop or (lambda: False),
            on_pair=on_pair,
        )
        extra = [s.label_topic] if s.label_topic else []
        evaluation.run(BagPairing(bag, rgb.name, thermal.name, source.slop_s, extra_topics=extra), source.max_pairs)
        if labels is not None and not result.scored:
            result.notes.append(
                f"no label matched a processed pair within {s.label_tolerance_s * 1e3:g} ms "
                f"({len(labels)} labels in {labels.description})"
            )
        if result.pairs and not result.processed and not result.interrupted:
            reasons = Counter(frame.error for frame in result.frames if frame.error is not None)
            raise BagError(
                f"{bag.path}: no pair could be evaluated: {result.failed} of {result.pairs} pairs failed: "
                + failure_summary(reasons)
            )
        if result.pairs == 0 and not result.interrupted:
            info = inspect_bag(source.bag, rgb.name, thermal.name, source.slop_s)
            raise BagError(f"{bag.path}: no RGB/thermal pair within slop {source.slop_s * 1e3:g} ms: {info.verdict}")
    return result


def _label_source(bag: Bag, class_info, labels_dir, label_topic, tolerance_s: float) -> LabelSource | None:
    if labels_dir is not None:
        return FolderLabels(labels_dir, class_info, tolerance_s)
    if label_topic is not None:
        return TopicLabels(bag, label_topic, class_info, tolerance_s)
    return None


def _new_result(bag: Bag, segmenter, checkpoint_name, mode, slop_s, rgb_topic, thermal_topic, labels) -> BagEvalResult:
    result = BagEvalResult(
        bag=str(bag.path),
        checkpoint=checkpoint_name,
        model=getattr(getattr(segmenter, "cfg", None), "name", ""),
        device=str(getattr(segmenter, "device", "")),
        precision=str(getattr(segmenter, "precision", "")),
        mode=mode,
        slop_s=slop_s,
        rgb_topic=rgb_topic,
        thermal_topic=thermal_topic,
        label_source=None if labels is None else labels.description,
        class_names=tuple(segmenter.class_info.names),
        labels_total=0 if labels is None else len(labels),
        recording_duration_s=bag.duration_s,
        recording_start_ns=bag.start_ns,
        palette=segmenter.class_info.palette,
    )
    if bag.note:
        result.notes.append(bag.note)
    return result


class _Evaluation:
    """One `bag eval` run in named steps: read the recording and process its pairs (every pair, or the
    ones the simulated real-time worker takes), record and score each, then count the drops."""

    def __init__(
        self,
        bag: Bag,
        pipeline: FramePipeline,
        result: BagEvalResult,
        labels: LabelSource | None,
        recording: EvalRecording,
        quality: "_Quality",
        *,
        stop: Callable[[], bool],
        on_pair: Callable[[int], None] | None,
    ) -> None:
        self.bag, self.pipeline, self.result, self.labels, self.recording = bag, pipeline, result, labels, recording
        self.stop, self.on_pair, self.quality = stop, on_pair, quality
        protocol = labels.metric if labels is not None and labels.metric is not None else None
        self.evaluator = SegmentationEvaluator(
            result.class_names, protocol or MetricProtocol(nan_policy="nanmean"), dataset=Path(result.bag).name
        )
        self.warmed = False
        # (arrival, stamps-only pair): the frames themselves must not stay in memory for the whole recording
        self.arrivals: list[tuple[int, Pair]] = []
        self.durations: dict[int, float] = {}
        self.worker = RealTimeWorker(self._process) if result.mode == "realtime" else None
        self.handled = 0  # worker.processed entries recorded so far

    def run(self, pairing: BagPairing, max_pairs: int | None) -> None:
        try:
            self.recording.put_class_info(self.bag.start_ns or 0)
            self._read(pairing, max_pairs)
        finally:
            self.recording.close()
        self.result.pairs = len(self.arrivals)
        self.result.pairing = pairing.pairer.stats.as_dict()
        self._count_drops()
        if self.labels is not None:
            self.result.labels_unmatched = len(self.labels) - len(self.labels.matched)
            if self.result.scored:
                self.result.scores = self.evaluator.result()
        if self.recording.writer is not None:
            self.result.output_bag = str(self.recording.writer.path)
            self.result.output_topics = dict(self.recording.writer.counts)

    def _read(self, pairing: BagPairing, max_pairs: int | None) -> None:
        """Messages in log-time order: inputs copied to the output recording, pairs processed."""
        worker = self.worker
        for arrival in pairing:
            if self.stop():
                self.result.interrupted = True
                break
            now = arrival.message.log_time_ns
            if worker is not None:
                worker.advance(now)
                self._drain_worker()
            self.recording.flush(now)
            self.recording.copy(arrival.message)
            pair = arrival.pair
            if pair is None:
                continue
            self.arrivals.append((now, Pair(pair.rgb_stamp_ns, pair.thermal_stamp_ns, None, None)))
            if worker is not None:
                worker.offer(pair, now)
                self._drain_worker()
            else:
                seconds, outputs = self._process(pair)
                self.durations[pair.rgb_stamp_ns] = seconds
                self._record(pair, seconds, outputs, now, now)
            if max_pairs is not None and len(self.arrivals) >= max_pairs:
                break
        if worker is not None and not self.result.interrupted:
            worker.finish()
            self._drain_worker()

    # --- one pair -------------------------------------------------------------------------------

    def _warm_up(self, pair: Pair) -> None:
        """The first call at a frame size allocates and plans kernels (seconds on a GPU); a node pays
        that once at start-up, so it is kept out of the per-pair times (a throw-away pipeline, so the
        once-only notes still come with the first timed pair)."""
        self.warmed = True
        FramePipeline(self.pipeline.segmenter, self.pipeline.settings).process_messages(pair.rgb.msg, pair.thermal.msg)

    def _process(self, pair: Pair) -> tuple[float, dict]:
        """The node's per-pair work (FramePipeline); returns (seconds, outputs)."""
        if not self.warmed:
            self._warm_up(pair)
        frame = self.pipeline.process_messages(pair.rgb.msg, pair.thermal.msg, entropy=True)
        topics = {"rgb": self.result.rgb_topic, "thermal": self.result.thermal_topic}
        for note in frame.notes + ([frame.error] if frame.error is not None else []):
            _note(self.result, note, topics)
        if not frame.ok:
            error = f"{topics.get(frame.error.stream, frame.error.stream)}: {frame.error.text}"
            return frame.timings.get("decode", 0.0), {"error": error, "steps_s": frame.timings}
        quality, baseline_quality = self.quality.measure(pair, frame)
        return frame.timings["total"], {
            "labels": frame.labels,
            "colorized": frame.colorized,
            "overlay": frame.overlay,
            "confidence": frame.confidence,
            "quality": quality,
            "baseline_quality": baseline_quality,
            "inference_s": frame.timings["inference"],
            "steps_s": {step: frame.timings[step] for step in STEPS},
        }

    def _record(self, pair, seconds: float, outputs: dict, arrival_ns: int, publish_ns: int, start_ns=None,
                finish_ns=None) -> None:
        """Keep a processed pair's result, write its outputs, score it."""
        frame = PairResult(
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
        self.result.frames.append(frame)
        if frame.error is not None:
            self.result.failed += 1
            return
        self.result.processed += 1
        frame_id = str(pair.rgb.msg.header.frame_id)
        self.recording.put_prediction(publish_ns, pair.rgb_stamp_ns, frame_id, outputs)
        self.quality.record(frame, arrival_ns, outputs)
        self.recording.put_quality(publish_ns, pair.rgb_stamp_ns, frame_id, outputs["confidence"], outputs["quality"])
        self._score(frame, outputs["labels"], publish_ns, frame_id)
        if self.on_pair is not None:
            self.on_pair(self.result.processed + self.result.failed)

    def _score(self, frame: PairResult, predicted: np.ndarray, publish_ns: int, frame_id: str) -> None:
        key = self.labels.match(frame.rgb_stamp_ns) if self.labels is not None else None
        if key is None:
            return
        raw, ids, name = self.labels.load(key)
        if ids.shape != predicted.shape:
            raise BagError(
                f"{name}: label is {ids.shape[1]}x{ids.shape[0]} but the RGB frame is "
                f"{predicted.shape[1]}x{predicted.shape[0]} (WxH)"
            )
        self.evaluator.update(ids, predicted, source=name)
        frame.label = name
        self.result.scored += 1
        self.recording.put_ground_truth(publish_ns, frame.rgb_stamp_ns, frame_id, raw, ids)

    # --- the real-time node -----------------------------------------------------------------------

    def _drain_worker(self) -> None:
        """Record the pairs the simulated worker finished since the last call."""
        for item in self.worker.processed[self.handled :]:
            seconds = (item.finish_ns - item.start_ns) / NS_PER_S
            finish = item.finish_ns
            self._record(item.pair, seconds, item.result, item.arrival_ns, finish, item.start_ns, finish)
            # Done with the images: keep the stamps only, or a long recording would pile up in memory.
            item.pair, item.result = Pair(item.pair.rgb_stamp_ns, item.pair.thermal_stamp_ns, None, None), None
        self.handled = len(self.worker.processed)

    def _count_drops(self) -> None:
        """Which pairs a real-time node drops: offline, the stream replayed against the measured times."""
        result, worker = self.result, self.worker
        if worker is None:
            worker = simulate_realtime(self.arrivals, self.durations)
        elif result.interrupted and worker.slot.pending:
            result.notes.append("interrupted: the pair waiting for the worker was not processed")
        result.dropped = worker.dropped
        taken = {item.pair.rgb_stamp_ns for item in worker.processed}
        if result.mode == "offline":
            result.simulated_latency_s = [
                (item.finish_ns - item.pair.rgb_stamp_ns) / NS_PER_S for item in worker.processed
            ]
        not_taken = [t for t, pair in self.arrivals if pair.rgb_stamp_ns not in taken]
        # A pair still pending (interrupted run) is the newest one offered, and was not dropped.
        result.dropped_arrivals_ns = not_taken[:-1] if worker.slot.pending else not_taken


class _Quality:
    """The label-free figures of each processed pair (module docstring), kept in the result."""

    def __init__(self, result: BagEvalResult, segmenter, low_confidence: float, thermal_reliance: bool,
                 baseline: FramePipeline | None) -> None:
        self.segmenter = segmenter
        classes = len(result.class_names)
        self.start_ns = result.recording_start_ns or 0
        self.tracker = QualityTracker(classes, low_confidence)
        self.thermal_reliance = thermal_reliance
        self.baseline = baseline
        result.quality = RecordingQuality(result.class_names, low_confidence)
        if baseline is not None:
            self.baseline_tracker = QualityTracker(classes, low_confidence)
            result.baseline_quality = RecordingQuality(result.class_names, low_confidence)
        self.result = result

    def measure(self, pair: Pair, frame) -> tuple:
        """(FrameQuality of the model, FrameQuality of the baseline model or None) for a processed pair."""
        quality = self.tracker.update(frame.labels, frame.confidence, frame.entropy, frame.rgb)
        if self.thermal_reliance:
            quality.thermal_reliance = _thermal_reliance(self.segmenter, frame)
        if self.baseline is None:
            return quality, None
        base = self.baseline.process_messages(pair.rgb.msg, pair.thermal.msg, outputs=(), entropy=True)
        if not base.ok:  # decoding and thermal preparation are the model's; only the model itself can fail
            return quality, None
        quality.baseline_agreement = 1.0 - disagreement(frame.labels, base.labels)
        base_quality = self.baseline_tracker.update(base.labels, base.confidence, base.entropy, base.rgb)
        if self.thermal_reliance:
            base_quality.thermal_reliance = _thermal_reliance(self.baseline.segmenter, base)
        return quality, base_quality

    def record(self, frame: PairResult, arrival_ns: int, outputs: dict) -> None:
        time_s = (arrival_ns - self.start_ns) / NS_PER_S  # seconds into the recording (its log time)
        frame.quality = outputs["quality"].to_dict()
        self.result.quality.add(time_s, outputs["quality"])
        if outputs.get("baseline_quality") is not None:
            frame.baseline_quality = outputs["baseline_quality"].to_dict()
            self.result.baseline_quality.add(time_s, outputs["baseline_quality"])


def _thermal_reliance(segmenter, frame) -> float:
    """Share of pixels whose label changes when the thermal input is blanked (zeros after
    normalisation, as the `taseg eval` blank-thermal ablation): a second forward of the model."""
    return disagreement(frame.labels, segmenter.predict_prepared(frame.rgb, blank_thermal(frame.rgb.shape[:2])).labels)


def _note(result: BagEvalResult, note, topics: dict[str, str]) -> None:
    """Count a FrameNote by kind; its text goes into the notes the first time, worded as the node logs it."""
    if note.kind not in result.note_counts:
        said_once = note.kind in SAID_ONCE
        result.notes.append(note.text if said_once else f"{topics.get(note.stream, note.stream)}: {note.text}")
    result.note_counts[note.kind] = result.note_counts.get(note.kind, 0) + 1
