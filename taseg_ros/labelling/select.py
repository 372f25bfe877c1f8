"""`taseg bag select`: choose the K frames of one or more recordings most worth labelling.

The method (score, describe, choose, write) and the defaults are in ``labelling/settings.py``, the
text `taseg bag select --help` shows; the steps below are named after it.
"""
from __future__ import annotations

import math

import csv
import io
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from taseg_ros.bag.fleet.engines import DEFAULT_THREADS_PER_WORKER, Task, set_threads
from taseg_ros.bag import DEFAULT_VAL_FRACTION
from taseg_ros.bag.extract import (
    ExtractSettings,
    PairThinning,
    check_dataset_folder,
    decode_recorded_pair,
    extract_pairs,
)
from taseg_ros.bag.io.reader import BagError, open_bag
from taseg_ros.bag.io.topics import resolve_image_topics
from taseg_ros.bag.labels import stamp_id
from taseg_ros.bag.pairs import BagPairing, PairSource, failure_summary
from taseg_ros.datasets import build_dataset
from taseg_ros.errors import InputError, TasegError
from taseg_ros.errors import safe_lines
from taseg_ros.frames.pairing import DEFAULT_SLOP_S, NS_PER_S
from taseg_ros.frames.thermal import ThermalNormalization, ThermalPreparation
from taseg_ros.labelling.settings import DEFAULT_LOW_CONFIDENCE, DEFAULT_MIN_DISTANCE, DEFAULT_MIN_GAP_S, DEFAULT_SCORE, SCORES
from taseg_ros.labelling.uncertainty import FrameUncertainty, frame_uncertainty
from taseg_ros.outputs import output_dir, write_text_atomic

THUMBNAIL_SIZE = (16, 12)  # (width, height): coarse enough that sensor noise averages out
SELECTION_COLUMNS = ["id", "recording", "rgb_stamp_ns", "uncertainty", "entropy", "low_confidence", "rank"]


@dataclass(frozen=True)
class SelectSettings:
    """What `taseg bag select` is asked to do, checked before a recording is opened."""

    recordings: tuple[Path, ...]
    output: Path
    k: int
    rgb_topic: str | None = None
    thermal_topic: str | None = None
    slop_s: float = DEFAULT_SLOP_S
    score: str = DEFAULT_SCORE
    low_confidence: float = DEFAULT_LOW_CONFIDENCE
    min_gap_s: float = DEFAULT_MIN_GAP_S
    min_distance: float = DEFAULT_MIN_DISTANCE
    every: int | None = None
    hz: float | None = None
    prefix: str = ""
    val_fraction: float = DEFAULT_VAL_FRACTION
    thermal_norm: ThermalNormalization | None = None  # None: the node's default (auto)
    homography: np.ndarray | None = None
    homography_size: tuple[int, int, int, int] | None = None  # thermal W, H, RGB W, H it was made for

    def __post_init__(self) -> None:
        if self.thermal_norm is None:
            object.__setattr__(self, "thermal_norm", ThermalNormalization())
        object.__setattr__(self, "recordings", tuple(Path(r) for r in self.recordings))
        object.__setattr__(self, "output", Path(self.output))
        if not self.recordings:
            raise InputError("give at least one recording to select from")
        if self.k < 1:
            raise InputError(f"-k must be >= 1 (the number of frames to select), got {self.k}")
        if self.score not in SCORES:
            raise InputError(f"--score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if not 0.0 < self.low_confidence <= 1.0:
            raise InputError(f"--low-confidence must be in (0, 1], got {self.low_confidence}")
        if not 0 <= self.min_gap_s < math.inf:  # it becomes integer nanoseconds: inf has none
            raise InputError(f"--min-gap must be a finite number of seconds >= 0, got {self.min_gap_s}")
        if not self.min_distance >= 0:
            raise InputError(f"--min-distance must be >= 0, got {self.min_distance}")
        PairThinning(self.every, self.hz)  # checks --every / --hz
        for recording in self.recordings:
            PairSource(recording, self.rgb_topic, self.thermal_topic, self.slop_s)  # checks --slop

    def extract_settings(self, recording: Path, classes, stamps):
        """The `bag extract` settings (ExtractSettings) that write ``stamps`` of ``recording``."""
        return ExtractSettings(
            source=PairSource(recording, self.rgb_topic, self.thermal_topic, self.slop_s),
            output=self.output,
            classes=classes,
            prefix=self.prefix,
            val_fraction=self.val_fraction,
            thermal_norm=self.thermal_norm,
            homography=self.homography,
            stamps=stamps,
            homography_size=self.homography_size,
        )


@dataclass
class Candidate:
    """One scored pair."""

    recording: int  # index into SelectSettings.recordings
    stamp_ns: int  # RGB stamp
    uncertainty: FrameUncertainty
    score: float  # the --score figure
    thumbnail: np.ndarray  # (D,) float32, 0..1


@dataclass
class SelectResult:
    out_dir: Path
    chosen: list[Candidate] = field(default_factory=list)  # in the order chosen (rank 1 first)
    ids: list[str] = field(default_factory=list)
    scored: int = 0  # pairs scored
    already_in_folder: int = 0  # pairs not scored: their frame is in the output folder already
    failures: Counter = field(default_factory=Counter)  # reason -> pairs that could not be decoded
    notes: list[str] = field(default_factory=list)


def thumbnail(rgb: np.ndarray, thermal01: np.ndarray) -> np.ndarray:
    """The appearance descriptor: grey RGB and prepared thermal, each area-averaged to THUMBNAIL_SIZE."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    small = [cv2.resize(image, THUMBNAIL_SIZE, interpolation=cv2.INTER_AREA)
             for image in (grey, np.asarray(thermal01, dtype=np.float32))]
    return np.concatenate([s.ravel() for s in small])


def thumbnail_distance(thumbnails: np.ndarray, one: np.ndarray) -> np.ndarray:
    """RMS difference of each row of ``thumbnails`` (N, D) to ``one`` (D,)."""
    return np.sqrt(np.mean((thumbnails - one) ** 2, axis=1))


def choose(
    scores: np.ndarray,
    thumbnails: np.ndarray,
    recordings: np.ndarray,
    stamps_ns: np.ndarray,
    k: int,
    min_gap_ns: int,
    min_distance: float,
    *,
    nearest: np.ndarray | None = None,
    blocked: np.ndarray | None = None,
) -> list[int]:
    """The greedy choice (step 3 of the method, labelling/settings.py): indices into the candidates
    (given in recording, stamp order), in the order chosen. ``nearest``: each candidate's distance
    to the nearest frame chosen before (an earlier round; default none: inf), ``blocked``:
    candidates within --min-gap of one."""
    n = len(scores)
    nearest = np.full(n, np.inf) if nearest is None else np.asarray(nearest, dtype=np.float64).copy()
    open_ = np.ones(n, dtype=bool) if blocked is None else ~np.asarray(blocked, dtype=bool)
    chosen: list[int] = []
    while len(chosen) < k:
        eligible = open_ & (nearest >= min_distance)
        if not eligible.any():
            break
        value = np.where(np.isfinite(nearest), scores * nearest, scores)  # nothing chosen yet: uncertainty alone
        j = int(np.argmax(np.where(eligible, value, -np.inf)))  # first maximum: the earlier frame
        chosen.append(j)
        nearest = np.minimum(nearest, thumbnail_distance(thumbnails, thumbnails[j]))
        open_ &= ~((recordings == recordings[j]) & (np.abs(stamps_ns - stamps_ns[j]) < min_gap_ns))
        open_[j] = False
    return chosen


@dataclass
class ScoreOutcome:
    """One recording's candidates, scored by a worker (or the reason it could not be)."""

    index: int
    candidates: list[Candidate] = field(default_factory=list)
    scored: int = 0
    already_in_folder: int = 0
    failures: Counter = field(default_factory=Counter)
    error: str | None = None


@dataclass(frozen=True)
class ScoreWorker:
    """The WorkerSpec (bag.fleet.engines) that scores one recording per task."""

    model: object  # inference.spec.ModelSpec
    settings: SelectSettings
    existing: frozenset = frozenset()  # ids already in the output folder
    threads: int = DEFAULT_THREADS_PER_WORKER

    def setup(self):
        set_threads(self.threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # model-building noise; checkpoint problems raise
            return self.model.load()

    def run(self, segmenter, index: int) -> ScoreOutcome:
        partial = SelectResult(self.settings.output)
        try:
            candidates = _score_recording(index, self.settings, segmenter, set(self.existing), partial, None)
        except (TasegError, OSError) as exc:
            return ScoreOutcome(index, error=" ".join(str(exc).split()) or type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - anything else a damaged recording can raise deep in a reader
            return ScoreOutcome(index, error=f"{self.settings.recordings[index]}: {type(exc).__name__}: {exc}")
        return ScoreOutcome(index, candidates, partial.scored, partial.already_in_folder, partial.failures)


def select_frames(
    settings: SelectSettings, segmenter=None, *, on_pair: Callable[[int], None] | None = None, engine=None,
    model=None, threads: int = DEFAULT_THREADS_PER_WORKER, on_event: Callable | None = None,
) -> SelectResult:
    """Score, choose and write (the method, labelling/settings.py). Nothing is written when nothing can be
    chosen or a step fails. Scores with ``segmenter`` in this process, or with ``engine``
    (bag.fleet.engines) on workers that load ``model`` (an inference.spec.ModelSpec), one
    recording per task; ``on_event`` gets the engine's events (progress)."""
    out = settings.output
    classes = segmenter.class_info if segmenter is not None else model.class_info()
    for recording in settings.recordings:  # a folder that cannot take these frames: say so before scoring
        check_dataset_folder(out, settings.extract_settings(recording, classes, None))
    existing = {p.stem for p in (out / "rgb").glob("*")} if (out / "rgb").is_dir() else set()
    result = SelectResult(out)
    candidates: list[Candidate] = []
    if engine is None:
        for index, recording in enumerate(settings.recordings):
            candidates += _score_recording(index, settings, segmenter, existing, result, on_pair)
    else:
        worker = ScoreWorker(model, settings, frozenset(existing), threads)
        candidates = _score_on(engine, worker, result, on_event)
    if not candidates:
        raise BagError(_nothing_to_choose(settings, result))
    thumbnails = np.stack([c.thumbnail for c in candidates])
    recordings = np.array([c.recording for c in candidates])
    stamps = np.array([c.stamp_ns for c in candidates], dtype=np.int64)
    min_gap_ns = int(round(settings.min_gap_s * NS_PER_S))
    nearest, blocked = _earlier_round(settings, thumbnails, recordings, stamps, min_gap_ns)
    picks = choose(
        np.array([c.score for c in candidates], dtype=np.float64), thumbnails, recordings, stamps, settings.k,
        min_gap_ns, settings.min_distance, nearest=nearest, blocked=blocked,
    )
    result.chosen = [candidates[j] for j in picks]
    result.ids = [stamp_id(c.stamp_ns, settings.prefix) for c in result.chosen]
    _check_unique_ids(settings, result)
    if len(picks) < settings.k:
        result.notes.append(
            f"only {len(picks)} of the {settings.k} frames asked for: the other {len(candidates) - len(picks)} scored "
            f"pairs lie within --min-gap {settings.min_gap_s:g} s or --min-distance {settings.min_distance:g} of a "
            "chosen frame"
        )
    _write(settings, classes, result)
    return result


def _score_on(engine, worker: ScoreWorker, result: SelectResult, on_event) -> list[Candidate]:
    """Every recording scored on ``engine``; the candidates in recording order (as in one process)."""
    outcomes: dict[int, ScoreOutcome] = {}
    lost: dict[int, str] = {}

    def collect(event) -> None:
        if on_event is not None:
            on_event(event)
        if event.kind == "finished":
            outcomes[event.result.index] = event.result
        elif event.kind == "lost":
            lost[int(event.key)] = event.reason

    recordings = worker.settings.recordings
    engine.run(worker, [Task(str(i), i) for i in range(len(recordings))], collect)
    problems = [f"{recordings[i]}: {lost[i]}" for i in sorted(lost)]
    problems += [outcomes[i].error for i in sorted(outcomes) if outcomes[i].error]
    if problems:  # the choice needs every recording: one that cannot be scored stops the selection
        raise BagError("; ".join(problems))
    candidates = []
    for i in sorted(outcomes):
        outcome = outcomes[i]
        candidates += outcome.candidates
        result.scored += outcome.scored
        result.already_in_folder += outcome.already_in_folder
        result.failures.update(outcome.failures)
    return candidates


def _earlier_round(settings: SelectSettings, thumbnails, recordings, stamps, min_gap_ns):
    """(nearest, blocked) of the candidates with respect to the frames already in the output folder:
    thumbnails from their files (read as the loader reads them), stamps from frames.csv."""
    out = settings.output
    nearest = np.full(len(thumbnails), np.inf)
    blocked = np.zeros(len(thumbnails), dtype=bool)
    if not (out / "classes.yaml").is_file() or not any((out / "rgb").glob("*")):
        return nearest, blocked

    dataset = build_dataset("folder", out, "all")
    for i in range(len(dataset)):
        sample = dataset.load_inputs(i)
        nearest = np.minimum(nearest, thumbnail_distance(thumbnails, thumbnail(sample["rgb"], sample["thermal"])))
    if (out / "frames.csv").is_file():
        where = {Path(r).resolve(): i for i, r in enumerate(settings.recordings)}
        with (out / "frames.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                index = where.get(Path(row.get("recording") or "-").resolve())
                if index is not None and row.get("rgb_stamp_ns", "").isdigit():
                    blocked |= (recordings == index) & (np.abs(stamps - int(row["rgb_stamp_ns"])) < min_gap_ns)
    return nearest, blocked


def _score_recording(index, settings: SelectSettings, segmenter, existing: set[str], result: SelectResult, on_pair):

    recording = settings.recordings[index]
    prepare = ThermalPreparation(settings.thermal_norm, settings.homography, made_for=settings.homography_size)
    thinning = PairThinning(settings.every, settings.hz)
    candidates = []
    with open_bag(recording) as bag:
        rgb_topic, thermal_topic = resolve_image_topics(bag, settings.rgb_topic, settings.thermal_topic)
        pairs = 0
        for arrival in BagPairing(bag, rgb_topic.name, thermal_topic.name, settings.slop_s):
            pair = arrival.pair
            if pair is None:
                continue
            pairs += 1
            if not thinning.keep(pairs - 1, pair.rgb_stamp_ns):
                continue
            if stamp_id(pair.rgb_stamp_ns, settings.prefix) in existing:
                result.already_in_folder += 1
                continue
            frames = _decode(pair, result.failures)
            if frames is None:
                continue
            thinning.kept(pair.rgb_stamp_ns)
            candidates.append(_candidate(index, pair.rgb_stamp_ns, *frames, prepare, segmenter, settings))
            result.scored += 1
            if on_pair is not None:
                on_pair(result.scored)
    return candidates


def _decode(pair, failures: Counter):
    """(rgb, thermal), or None when a message cannot be decoded (counted per reason)."""
    images, reason = decode_recorded_pair(pair)
    if reason is not None:
        failures[reason] += 1
    return images


def _candidate(index, stamp_ns, rgb, thermal, prepare, segmenter, settings: SelectSettings) -> Candidate:
    try:
        thermal01, _ = prepare(thermal, rgb.shape[:2])
    except ValueError as exc:  # a homography that warps this frame size out of view
        raise InputError(f"--thermal-homography: {exc}") from None
    prediction = segmenter.predict_prepared(rgb, thermal01, return_entropy=True)
    uncertainty = frame_uncertainty(prediction, settings.low_confidence)
    return Candidate(index, stamp_ns, uncertainty, uncertainty.score(settings.score), thumbnail(rgb, thermal01))


def _nothing_to_choose(settings: SelectSettings, result: SelectResult) -> str:

    names = ", ".join(str(r) for r in settings.recordings)
    if result.failures:
        return f"{names}: no frame to select: no pair could be decoded: {failure_summary(result.failures)}"
    if result.already_in_folder:
        return (f"{names}: no frame to select: all {result.already_in_folder} pairs are in {settings.output} "
                "already")
    return f"{names}: no frame to select: no RGB/thermal pair matched (see `taseg bag info`)"


def _check_unique_ids(settings: SelectSettings, result: SelectResult) -> None:
    """Two recordings with equal stamps (simulated time, say) would write one file twice."""
    seen: dict[str, Candidate] = {}
    for sample_id, c in zip(result.ids, result.chosen):
        if sample_id in seen:
            first = settings.recordings[seen[sample_id].recording]
            raise BagError(
                f"{first} and {settings.recordings[c.recording]} both have a frame stamped {sample_id}; select "
                "from them one at a time with different --prefix values"
            )
        seen[sample_id] = c


def _write(settings: SelectSettings, classes, result: SelectResult) -> None:

    inputs = {f"REC {r}": r for r in settings.recordings}
    with output_dir(settings.output, force=True, inputs=inputs) as out:  # one undo for every recording
        for index, recording in enumerate(settings.recordings):
            ours = [i for i, c in zip(result.ids, result.chosen) if c.recording == index]
            if not ours:
                continue
            stamps = frozenset(c.stamp_ns for c in result.chosen if c.recording == index)
            written = set(extract_pairs(settings.extract_settings(recording, classes, stamps)).written)
            if written != set(ours):  # they decoded while scoring: the recording changed under us
                raise BagError(f"{recording}: {len(set(ours) - written)} chosen pairs were not found again while writing")
        _write_selection(out / "selection.csv", settings, result)


def _write_selection(path: Path, settings: SelectSettings, result: SelectResult) -> None:
    """selection.csv, merged with an earlier round's rows (other ids kept)."""
    rows = []
    if path.is_file():
        with path.open(newline="") as f:
            rows = [row for row in list(csv.reader(f))[1:] if row and row[0] not in set(result.ids)]
    for rank, (sample_id, c) in enumerate(zip(result.ids, result.chosen), start=1):
        rows.append([sample_id, str(settings.recordings[c.recording]), c.stamp_ns, f"{c.score:.6f}",
                     f"{c.uncertainty.entropy:.6f}", f"{c.uncertainty.low_confidence:.6f}", rank])
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(SELECTION_COLUMNS)
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def format_select(result: SelectResult, settings: SelectSettings) -> str:

    lines = [f"{len(result.chosen)} frames chosen of {result.scored} scored pairs -> {result.out_dir}"
             + (f" ({result.already_in_folder} pairs skipped: already in the folder)" if result.already_in_folder else "")]
    for rank, (sample_id, c) in enumerate(zip(result.ids, result.chosen), start=1):
        lines.append(f"  {rank:3d}. {sample_id}  {settings.score} {c.score:.3f}  "
                     f"({Path(settings.recordings[c.recording]).name})")
    if result.failures:
        lines.append(f"  {sum(result.failures.values())} pairs could not be decoded: {failure_summary(result.failures)}")
    lines += [f"  {note}" for note in result.notes]
    lines.append(f"  next: taseg label export {result.out_dir} --checkpoint MODEL -o prelabels.zip")
    return safe_lines(lines)  # notes name the recordings' topics
