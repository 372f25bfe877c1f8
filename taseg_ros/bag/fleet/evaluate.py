"""`taseg bag eval` over a fleet: the work of one worker (``EvalWorker``) and of the whole run (``run_fleet``).

A worker loads the model (and a baseline model) once and then evaluates the recordings it is
given, one at a time, exactly as `bag eval` does for one recording (``evaluate_bag``, the baseline
comparison and the gates), with a fixed number of CPU threads: a matrix product sums in an order
that depends on the thread count, so bit-identical figures need the same count on every worker.
It renders the recording's folder into memory (report.json, report.md, plots: nothing that depends
on speed; timings.json apart) and returns it; the run writes it (``store``), never a worker.

A recording that cannot be evaluated (unreadable, no pair) comes back as failed with its one-line
reason; the others go on.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from taseg_ros.bag.evaluate.compare import check_baseline_model, compare, load_baseline_report
from taseg_ros.bag.evaluate.report import write_eval_report
from taseg_ros.bag.evaluate.run import EvalSettings, evaluate_bag
from taseg_ros.bag.fleet.engines import DEFAULT_THREADS_PER_WORKER, Event, Task, set_threads
from taseg_ros.bag.fleet.progress import FleetProgress, print_now
from taseg_ros.bag.fleet.recordings import fingerprint
from taseg_ros.bag.fleet.rollup import write_fleet_report
from taseg_ros.bag.fleet.store import SUMMARY_FILE, FleetRun, RecordingStore, dumps, one_line
from taseg_ros.bag.io.reader import open_bag
from taseg_ros.bag.io.topics import resolve_image_topics
from taseg_ros.config_io import parse_json, read_bytes
from taseg_ros.errors import TasegError
from taseg_ros.evaluation.figures import FIGURES
from taseg_ros.inference.spec import ModelSpec


@dataclass(frozen=True)
class EvalJob:
    """One recording: where it is, its folder name, and (baseline given as a fleet folder) its
    previous report."""

    recording: Path
    name: str
    baseline_report: Path | None = None


@dataclass
class RecordingOutcome:
    name: str
    status: str  # done | failed
    reason: str = ""
    files: dict[str, bytes] = field(default_factory=dict)  # file name -> content: the same on every machine
    timings: dict = field(default_factory=dict)  # timings.json: this run's speed
    pairs: int = 0  # pairs evaluated (processed)
    seconds: float = 0.0


@dataclass(frozen=True)
class EvalWorker:
    """The WorkerSpec of a fleet `bag eval` (see engines.WorkerSpec)."""

    model: ModelSpec
    settings: EvalSettings  # its source's bag is replaced per recording
    baseline_model: ModelSpec | None = None
    baseline_name: str | None = None  # how the report names the baseline (the --baseline value)
    threads: int = DEFAULT_THREADS_PER_WORKER

    def setup(self) -> tuple[Any, Any]:
        import warnings

        set_threads(self.threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # model-building noise; checkpoint problems raise
            segmenter = self.model.load()
            baseline = None if self.baseline_model is None else self.baseline_model.load()
        if baseline is not None:
            check_baseline_model(baseline, segmenter, self.baseline_name)
        return segmenter, baseline

    def run(self, state, job: EvalJob) -> RecordingOutcome:
        segmenter, baseline = state
        start = time.perf_counter()
        try:
            settings = replace(self.settings, source=replace(self.settings.source, bag=job.recording))
            result = evaluate_bag(settings, segmenter, baseline=baseline)
            report = None
            if job.baseline_report is not None:
                report = _baseline_report(job, settings, segmenter)
            compare(result, [], self.baseline_name, report)  # gates: the fleet report's (rollup.py)
            with tempfile.TemporaryDirectory(prefix="taseg-fleet-") as tmp:
                write_eval_report(result, tmp, timings=False)
                files = {p.name: read_bytes(p, limit=None) for p in sorted(Path(tmp).iterdir())}
            files[SUMMARY_FILE] = dumps(recording_summary(result)).encode()
        except (TasegError, OSError) as exc:  # a recording or baseline this run cannot use: its own words
            return RecordingOutcome(job.name, "failed", one_line(exc), seconds=time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - anything else a damaged recording can raise deep in a reader: the others go on
            reason = f"{job.recording}: {type(exc).__name__}: {one_line(exc)}"
            return RecordingOutcome(job.name, "failed", reason, seconds=time.perf_counter() - start)
        timings = parse_json(files.pop("timings.json"), "timings.json")
        return RecordingOutcome(job.name, "done", files=files, timings=timings,
                                pairs=result.processed, seconds=time.perf_counter() - start)


def recording_summary(result) -> dict:
    """What the fleet report needs of a recording (summary.json: small, whatever the recording's length)."""
    comparison = result.comparison or {}
    rows = comparison.get("figures") or {}
    baseline = {name: row["baseline"] for name, row in rows.items()} if comparison.get("kind") else None
    if result.baseline_quality is not None:
        baseline_frames = _counts(result.baseline_quality)
    elif baseline is not None:
        baseline_frames = {n: comparison["baseline_frames"] if v is not None else 0 for n, v in baseline.items()}
    else:
        baseline_frames = None
    scores = None
    if result.scores is not None:
        overall = result.scores.overall
        scores = {"miou": _finite(overall.miou), "nan_policy": overall.nan_policy,
                  "classes_scored": [int(i) for i in overall.scored], "confusion_matrix": overall.matrix.tolist()}
    quality = result.quality
    return {
        "recording": result.bag, "class_names": list(result.class_names), "pairs": result.pairs,
        "processed": result.processed, "failed": result.failed, "scored": result.scored,
        "figures": quality.summary(), "figure_frames": _counts(quality),
        "baseline_kind": comparison.get("kind"), "baseline_figures": baseline, "baseline_frames": baseline_frames,
        "worst_segments": quality.worst(result.segment_window_s, result.worst_segments), "scores": scores,
    }


def _counts(quality) -> dict[str, int]:
    return {name: int(np.count_nonzero(~np.isnan(quality.series(name)))) for name in FIGURES}


def _finite(value: float):
    return None if value is None or not np.isfinite(value) else float(value)


def _baseline_report(job: EvalJob, settings: EvalSettings, segmenter):
    with open_bag(job.recording) as bag:
        rgb, thermal = resolve_image_topics(bag, settings.source.rgb_topic, settings.source.thermal_topic)
        start = bag.start_ns
    return load_baseline_report(job.baseline_report, segmenter.class_info.names, start, (rgb.name, thermal.name))


def run_fleet(run: FleetRun, worker: EvalWorker, engine, out_root: Path, *, rerun: bool = False,
              print_line: Callable[[str], None] = print_now) -> dict:
    """Evaluate ``run.recordings`` with ``engine`` into ``out_root``: skip those done with the same
    model and settings (unless ``rerun``), write each folder as its result comes, then the fleet
    report from the folders. Returns the fleet report's dictionary."""
    store = RecordingStore(out_root)
    store.begin(run)
    fingerprints = {}
    todo, progress = [], FleetProgress(run.recordings, print_line)
    for recording in run.recordings:
        try:
            fingerprints[recording.name] = fingerprint(recording.path)
        except TasegError as exc:
            store.write_failure(run, recording, None, one_line(exc))
            progress.failed(recording.name, one_line(exc))
            continue
        if not rerun and store.is_done(run, recording, fingerprints[recording.name]):
            progress.skipped(recording.name)
            continue
        todo.append(Task(recording.name, EvalJob(recording.path, recording.name, run.baseline_report_for(recording))))
    by_name = {r.name: r for r in run.recordings}

    def on_event(event: Event) -> None:
        progress.event(event)
        if event.kind == "finished":
            outcome: RecordingOutcome = event.result
            recording = by_name[event.key]
            timings = {**outcome.timings, "seconds": outcome.seconds, "attempt": event.attempt, "worker": event.worker}
            if outcome.status == "done":
                store.write_done(run, recording, fingerprints[recording.name], outcome.files, timings)
            else:
                store.write_failure(run, recording, fingerprints[recording.name], outcome.reason, timings)
        elif event.kind == "lost":
            store.write_failure(run, by_name[event.key], fingerprints[event.key], event.reason)

    try:
        if todo:
            engine.run(worker, todo, on_event)
    except KeyboardInterrupt:  # the folders done so far stay; the report says what is pending
        write_fleet_report(out_root, timings=progress.summary())
        raise
    report = write_fleet_report(out_root, timings=progress.summary())
    progress.final(report)
    return report

