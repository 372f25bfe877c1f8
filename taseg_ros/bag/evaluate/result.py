"""What `taseg bag eval` found: per-pair results and the run's totals, timings and report dictionary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taseg_ros.evaluation.report import to_dict as scores_to_dict
from taseg_ros.frames.pairing import NS_PER_S
from taseg_ros.frames.settings import STEPS
from taseg_ros.timing import summarize_ms

# What depends on how fast this run went (the machine, its load), in the report dictionary and in each
# frame's: a fleet writes these apart (timings.json), so the rest compares byte for byte between runs.
TIMING_KEYS = ("timing", "realtime")
FRAME_TIMING_KEYS = ("processing_ms", "inference_ms", "steps_ms", "latency_ms")


@dataclass
class PairResult:
    """One pair's result in `bag eval` (inference.pipeline.FrameResult is the pipeline's, per frame)."""

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
    quality: dict | None = None  # evaluation.quality.FrameQuality.to_dict()
    baseline_quality: dict | None = None  # ... of the baseline model on the same pair

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
            "quality": self.quality,
            **({"baseline_quality": self.baseline_quality} if self.baseline_quality is not None else {}),
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
    frames: list[PairResult] = field(default_factory=list)
    scores: Any = None  # taseg_ros.evaluation.metrics.EvaluationResult
    interrupted: bool = False
    output_bag: str | None = None
    output_topics: dict = field(default_factory=dict)
    recording_duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    note_counts: dict = field(default_factory=dict)  # frames per FrameNote kind (e.g. nonfinite_thermal)
    recording_start_ns: int | None = None  # the recording's first log time: a report's identity for --baseline
    quality: Any = None  # evaluation.quality.RecordingQuality: the label-free figures
    baseline_quality: Any = None  # ... of a baseline model on the same pairs
    segment_window_s: float = 2.0  # worst segments: window length and how many
    worst_segments: int = 3
    palette: Any = None  # class colours (K x 3 RGB), for the plots
    comparison: dict | None = None  # bag.evaluate.compare.Comparison.to_dict(): change vs a baseline, gates

    @property
    def dropped_share(self) -> float | None:
        return self.dropped / self.pairs if self.pairs else None

    def timing(self) -> dict:
        ok = [f for f in self.frames if f.error is None]
        out = {
            "processing_ms": summarize_ms(f.processing_s for f in ok),
            "inference_ms": summarize_ms(f.inference_s for f in ok),
            "steps_ms": {step: summarize_ms(f.steps_s.get(step, 0.0) for f in ok) for step in STEPS},
        }
        total = sum(f.processing_s for f in ok)
        out["throughput_fps"] = len(ok) / total if total > 0 else None
        out["input_pair_rate_hz"] = self.pairs / self.recording_duration_s if self.recording_duration_s > 0 else None
        if self.mode == "offline":
            out["simulated_realtime_latency_ms"] = summarize_ms(self.simulated_latency_s)
        if self.mode == "realtime":
            timed = [f for f in self.frames if f.finish_ns is not None]
            out["latency_ms"] = summarize_ms((f.finish_ns - f.rgb_stamp_ns) / NS_PER_S for f in timed)
            out["queue_wait_ms"] = summarize_ms((f.start_ns - f.arrival_ns) / NS_PER_S for f in timed)
        return out

    def quality_dict(self, quality) -> dict | None:
        return None if quality is None else quality.to_dict(self.segment_window_s, self.worst_segments)

    def to_dict(self) -> dict:
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
            "class_names": list(self.class_names),
            "recording_start_ns": self.recording_start_ns,
            "quality": self.quality_dict(self.quality),
            "baseline_quality": self.quality_dict(self.baseline_quality),
            "comparison": self.comparison,
            "per_frame": [f.to_dict() for f in self.frames],
        }


def split_timings(report: dict) -> tuple[dict, dict]:
    """(the report without its timings, the timings: TIMING_KEYS and per frame its stamp and
    FRAME_TIMING_KEYS)."""
    rest = {k: v for k, v in report.items() if k not in TIMING_KEYS}
    timings = {k: report[k] for k in TIMING_KEYS if k in report}
    rest["per_frame"] = [{k: v for k, v in f.items() if k not in FRAME_TIMING_KEYS} for f in report["per_frame"]]
    timings["per_frame"] = [{"rgb_stamp_ns": f["rgb_stamp_ns"], **{k: f[k] for k in FRAME_TIMING_KEYS if k in f}}
                            for f in report["per_frame"]]
    return rest, timings
