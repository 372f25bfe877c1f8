"""`taseg bag extract`: a recording's RGB/thermal pairs -> the plain folder dataset format.

    <out>/rgb/<id>.png        8-bit RGB
    <out>/thermal/<id>.png    thermal exactly as the camera sent it: its own size and depth, 8- or 16-bit
                              PNG (float thermal as <id>.tiff, NaN kept); 3-channel thermal through the
                              frame layer's one grey rule
    <out>/labels/<id>.png     only with --label-topic: class ids from the recording
    <out>/classes.yaml        the class list to label with (kept if it exists), and the thermal
                              preparation the node will apply: ``thermal: {normalization, homography}``
    <out>/train.txt val.txt   ids; val is the last --val-fraction of each recording's frames (one
                              contiguous block: neighbouring frames are near-duplicates and must not
                              straddle train and val)
    <out>/frames.csv          id, recording, RGB and thermal stamps, stamp offset

Why raw thermal plus a recorded preparation: the loader (training, validation, ``taseg eval``) runs
the frame layer's ``ThermalPreparation`` with the recorded settings on these pixels, which is what the
node runs on the messages, so a training sample is bit-identical to the node's input (see
``frames/thermal.py``). A registration warp done here would come before the normalisation, and its
uncovered border would set the percentiles.

``<id>`` is ``[prefix]<sec>_<nanosec>`` of the RGB stamp, so labels made later find their frame again
(``taseg bag eval --labels``). Extracting more recordings into the same folder adds to it; extracting
the same one again rewrites its files and lists each id once.

Frames are paired exactly as the node pairs them (``StampPairer`` at ``slop``). ``every`` keeps every
N-th pair; ``hz`` keeps at most that many pairs per second (a pair is kept when at least 90% of
1/hz has passed since the last kept one: camera jitter must not make a frame miss its turn).
``stamps`` keeps only the pairs with these RGB stamps (``taseg bag select`` writes its choice so).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from taseg_ros.bag import DEFAULT_VAL_FRACTION
from taseg_ros.bag.info import inspect_bag
from taseg_ros.bag.labels import TopicLabels, check_tolerance, stamp_id
from taseg_ros.bag.pairs import BagPairing, PairSource, failure_summary
from taseg_ros.bag.io.reader import Bag, BagError, open_bag
from taseg_ros.bag.io.topics import resolve_image_topics
from taseg_ros.classes import ClassInfo, load_classes
from taseg_ros.config_io import read_text
from taseg_ros.datasets.config import load_dataset_config
from taseg_ros.errors import InputError
from taseg_ros.errors import safe_lines
from taseg_ros.frames.codec import ImageDecodeError, decode_pair
from taseg_ros.frames.files import write_image, write_rgb, write_thermal
from taseg_ros.frames.pairing import NS_PER_S, Pair
from taseg_ros.frames.thermal import ThermalNormalization, check_registration_size, validate_homography
from taseg_ros.outputs import output_dir, replacing, write_text_atomic


@dataclass(frozen=True)
class ExtractSettings:
    """Everything `taseg bag extract` is asked to do, checked once (before a recording is opened)."""

    source: PairSource
    output: Path
    every: int | None = None  # keep every N-th pair
    hz: float | None = None  # keep at most this many pairs per second
    classes: str | Path | ClassInfo | None = None  # None: the folder's classes.yaml, else mfnet's
    label_topic: str | None = None
    label_tolerance_s: float = 0.001
    prefix: str = ""
    val_fraction: float = DEFAULT_VAL_FRACTION
    thermal_norm: ThermalNormalization = field(default_factory=ThermalNormalization)
    homography: np.ndarray | None = None  # thermal px -> RGB px; recorded, applied by the loader
    stamps: frozenset[int] | None = None  # only the pairs with these RGB stamps (ns); None: all
    homography_size: tuple[int, int, int, int] | None = None  # thermal W, H, RGB W, H it was made for

    def __post_init__(self) -> None:
        PairThinning(self.every, self.hz)  # checks the two options
        if self.stamps is not None:
            object.__setattr__(self, "stamps", frozenset(int(s) for s in self.stamps))
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        check_tolerance(self.label_tolerance_s)
        if self.prefix and not all(c.isalnum() or c in "-_." for c in self.prefix):
            raise InputError(f"--prefix may only hold letters, digits, '-', '_' and '.', got {self.prefix!r}")
        if self.homography is not None:
            object.__setattr__(self, "homography", validate_homography(self.homography))
        object.__setattr__(self, "output", Path(self.output))

    def thermal_mapping(self) -> dict:
        """The ``thermal:`` section classes.yaml records (datasets.config.ThermalConfig keys)."""
        data: dict = {"normalization": self.thermal_norm.to_mapping()}
        if self.homography is not None:
            data["homography"] = [float(v) for v in self.homography.ravel()]
        if self.homography is not None and self.homography_size is not None:
            data["homography_size"] = [int(v) for v in self.homography_size]
        return data


class PairThinning:
    """Which pairs of a recording to keep: every N-th (``every``) or at most ``hz`` per second (a pair
    is kept when at least 90% of 1/hz has passed since the last kept one: camera jitter must not
    make a frame miss its turn); neither: all. ``keep`` asks, ``kept`` records a pair actually used
    (one that could not be decoded does not count)."""

    def __init__(self, every: int | None = None, hz: float | None = None) -> None:
        if every is not None and hz is not None:
            raise InputError("--every and --hz are alternatives; give one")
        if every is not None and every < 1:
            raise InputError(f"--every must be >= 1, got {every}")
        if hz is not None and not hz > 0:
            raise InputError(f"--hz must be > 0, got {hz}")
        self.every = every
        self.min_gap_ns = None if hz is None else int(0.9e9 / hz)
        self.last_kept_ns: int | None = None

    def keep(self, index: int, stamp_ns: int) -> bool:
        if self.every is not None and index % self.every:
            return False
        if self.min_gap_ns is not None and self.last_kept_ns is not None:
            return stamp_ns - self.last_kept_ns >= self.min_gap_ns
        return True

    def kept(self, stamp_ns: int) -> None:
        self.last_kept_ns = stamp_ns


@dataclass
class ExtractResult:
    out_dir: Path
    rgb_topic: str
    thermal_topic: str
    pairs: int = 0  # pairs in the recording (up to where extraction stopped)
    written: list[str] = field(default_factory=list)  # ids
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    labels_written: int = 0
    labels_total: int | None = None  # label messages on --label-topic (None: no label topic)
    failed: list[str] = field(default_factory=list)  # "stamp: reason"
    failure_reasons: Counter = field(default_factory=Counter)  # reason -> pairs skipped for it
    nonfinite_thermal: int = 0  # written frames with NaN/inf thermal pixels
    blank_thermal: int = 0  # ... of which without one finite pixel
    thermal_sizes: Counter = field(default_factory=Counter)  # (width, height) of the thermal frames written
    pairing: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False


def decode_recorded_pair(pair: Pair):
    """((rgb, thermal), None), or (None, the reason naming the camera and topic) when one of the pair's
    messages cannot be decoded: what bag extract and bag select count per reason."""
    try:
        return decode_pair(pair.rgb.msg, pair.thermal.msg), None
    except ImageDecodeError as exc:
        frame = pair.rgb if exc.stream == "rgb" else pair.thermal
        return None, f"{'RGB' if exc.stream == 'rgb' else 'thermal'} {frame.topic}: {exc}"


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line.strip() for line in read_text(path).splitlines() if line.strip() and not line.startswith("#")]


def _write_ids(path: Path, ids: list[str]) -> None:
    write_text_atomic(path, "".join(f"{i}\n" for i in ids))


_CLASSES_HEADER = (
    "# Class list of this dataset: label PNGs hold these ids (0..K-1) in this order;\n"
    "# pixels equal to ignore_index are not scored and get no loss. Edit it to your classes\n"
    "# before labelling (taseg train and taseg bag eval --labels read it).\n"
    "# thermal: how the raw thermal files become the model's input, as the node prepares a camera\n"
    "# frame (normalisation on the camera's pixels, then the registration homography; without one a\n"
    "# thermal frame of another size is resized). Run the node with the same thermal_* parameters.\n"
)


def _classes_file(out: Path, settings: ExtractSettings) -> str:
    """Write classes.yaml (class list + thermal preparation) unless the folder has one, which must
    then agree with this extraction; returns a note for the user."""
    target = out / "classes.yaml"
    if target.is_file():
        _check_existing_classes(target, settings)
        return f"kept {target}"
    classes = settings.classes
    info = classes if isinstance(classes, ClassInfo) else load_classes(classes or "mfnet")
    data = info.to_mapping()
    if data.get("ignore_index") is None:
        data["ignore_index"] = 255
    data["thermal"] = settings.thermal_mapping()
    write_text_atomic(target, _CLASSES_HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return f"wrote {target} ({len(info.names)} classes: {', '.join(info.names)})"


def check_dataset_folder(out: Path, settings: ExtractSettings) -> None:
    """Before any slow work: a folder that already holds a dataset must agree with this extraction
    (class list, thermal preparation), as ``extract_pairs`` will check again."""
    target = Path(out) / "classes.yaml"
    if target.is_file():
        _check_existing_classes(target, settings)


def _check_existing_classes(target: Path, settings: ExtractSettings) -> None:
    """A folder that already holds a dataset takes more frames only with its class list and its
    thermal preparation: frames prepared two ways in one dataset would train on two inputs."""
    config = load_dataset_config(target)
    if settings.classes is not None:
        wanted = settings.classes if isinstance(settings.classes, ClassInfo) else load_classes(settings.classes)
        if tuple(config.classes.names) != tuple(wanted.names):
            raise BagError(
                f"{target} lists classes {list(config.classes.names)}, not the requested {list(wanted.names)}; "
                "extract into another folder or drop --classes"
            )
    recorded = config.thermal
    wanted_h = None if settings.homography is None else tuple(float(v) for v in settings.homography.ravel())
    if recorded.normalization != settings.thermal_norm or recorded.homography != wanted_h:
        raise BagError(
            f"{target} records the thermal preparation {_describe(recorded.normalization, recorded.homography)}, "
            f"this extraction asks for {_describe(settings.thermal_norm, wanted_h)}; one dataset holds frames "
            "prepared one way: extract into another folder (or give the recorded --thermal-* options)"
        )


def _describe(norm: ThermalNormalization, homography) -> str:
    h = "no homography" if homography is None else "homography [" + " ".join(f"{v:g}" for v in homography) + "]"
    return f"normalization {norm.mode} (range {norm.low:g}..{norm.high:g}, percentiles {norm.percentiles}), {h}"


def extract_pairs(
    settings: ExtractSettings,
    *,
    stop: Callable[[], bool] | None = None,
    on_pair: Callable[[int], None] | None = None,
) -> ExtractResult:
    """Extract the pairs of ``settings.source`` into the dataset folder ``settings.output`` (see the
    module docstring). The folder is added to (as documented), but it must not be or hold the
    recording; a run that fails removes what it added. ``stop()`` is polled between messages
    (Ctrl-C); ``on_pair(n)`` is called after each written pair (progress)."""
    source = settings.source
    with open_bag(source.bag) as bag, output_dir(settings.output, force=True, inputs={"BAG": source.bag}) as out:
        rgb, thermal = resolve_image_topics(bag, source.rgb_topic, source.thermal_topic)
        result = ExtractResult(out, rgb.name, thermal.name)
        if bag.note:
            result.notes.append(bag.note)
        result.notes.append(_classes_file(out, settings))
        labels = None
        if settings.label_topic:
            class_info = load_classes(out / "classes.yaml")
            labels = TopicLabels(bag, settings.label_topic, class_info, settings.label_tolerance_s)
            _check_labels_reach_pairs(bag, rgb.name, thermal.name, source.slop_s, labels)
        extraction = _Extraction(bag, out, result, labels, settings)
        extraction.run(BagPairing(bag, rgb.name, thermal.name, source.slop_s), stop, on_pair)
        if not result.written and not result.interrupted:
            raise BagError(_nothing_extracted(source.bag, result, rgb.name, thermal.name, source.slop_s))
        _update_index(out, result, extraction.rows, settings.val_fraction)
    return result


class _Extraction:
    """Writes the selected pairs of one recording into the dataset folder, in named steps."""

    def __init__(self, bag: Bag, out: Path, result: ExtractResult, labels, settings: ExtractSettings):
        self.bag, self.out, self.result, self.labels, self.settings = bag, out, result, labels, settings
        if labels is not None:
            result.labels_total = len(labels)
        self.rows: list[list] = []  # frames.csv
        self.thinning = PairThinning(settings.every, settings.hz)
        self.sizes_differ = False  # some thermal frame is not at the RGB size

    def run(self, pairing: BagPairing, stop, on_pair) -> None:
        result, settings = self.result, self.settings
        max_pairs = settings.source.max_pairs
        for arrival in pairing:
            if stop is not None and stop():
                result.interrupted = True
                break
            pair = arrival.pair
            if pair is None:
                continue
            index = result.pairs
            result.pairs += 1
            if settings.stamps is not None and pair.rgb_stamp_ns not in settings.stamps:
                continue
            if not self.thinning.keep(index, pair.rgb_stamp_ns):
                continue
            if not self._write_pair(pair):
                continue
            if on_pair is not None:
                on_pair(len(result.written))
            if max_pairs is not None and len(result.written) >= max_pairs:
                break
            if settings.stamps is not None and len(result.written) == len(settings.stamps):
                break  # every wanted pair is written: the rest of the recording need not be read
        result.pairing = pairing.pairer.stats.as_dict()
        self._summarize()

    def _decode(self, pair: Pair):
        """(rgb, thermal) or None when a message cannot be decoded (counted per reason)."""
        images, reason = decode_recorded_pair(pair)
        if reason is not None:
            self.result.failed.append(f"{pair.rgb_stamp_ns / NS_PER_S:.6f} s: {reason}")
            self.result.failure_reasons[reason] += 1
        return images

    def _write_pair(self, pair: Pair) -> bool:
        images = self._decode(pair)
        if images is None:
            return False
        rgb_image, thermal_image = images
        self._check_registration(thermal_image.shape[:2], rgb_image.shape[:2])
        self._count_nonfinite(thermal_image)
        sample_id = stamp_id(pair.rgb_stamp_ns, self.settings.prefix)
        write_rgb(self.out / "rgb" / f"{sample_id}.png", rgb_image)
        write_thermal(self.out / "thermal", sample_id, thermal_image)
        self.result.thermal_sizes[(thermal_image.shape[1], thermal_image.shape[0])] += 1
        self.sizes_differ = self.sizes_differ or thermal_image.shape[:2] != rgb_image.shape[:2]
        if self.labels is not None:
            self._write_label(pair.rgb_stamp_ns, sample_id, rgb_image.shape[:2])
        self.thinning.kept(pair.rgb_stamp_ns)
        self.result.written.append(sample_id)
        self.rows.append(
            [sample_id, str(self.bag.path), pair.rgb_stamp_ns, pair.thermal_stamp_ns, f"{pair.skew_ns * 1e-6:.3f}"]
        )
        return True

    def _check_registration(self, thermal_hw, rgb_hw) -> None:
        """A homography made for other frame sizes (every pair: a camera may change its resolution
        mid-recording) or that warps these frames out of view is refused (before anything is written
        when the first pair shows it)."""
        if self.settings.homography is not None:
            try:
                check_registration_size(self.settings.homography_size, thermal_hw, rgb_hw)
                if not self.result.written:
                    validate_homography(self.settings.homography, thermal_hw, rgb_hw)
            except ValueError as exc:
                raise InputError(f"--thermal-homography: {str(exc).removeprefix('thermal homography: ')}") from None

    def _count_nonfinite(self, thermal: np.ndarray) -> None:
        if thermal.dtype.kind != "f":
            return
        finite = np.isfinite(thermal)
        if not finite.all():
            self.result.nonfinite_thermal += 1
            self.result.blank_thermal += int(not finite.any())

    def _write_label(self, rgb_stamp_ns: int, sample_id: str, rgb_hw: tuple[int, int]) -> None:
        key = self.labels.match(rgb_stamp_ns)
        if key is None:
            return
        raw, _, name = self.labels.load(key)  # load() checks the values against the class list
        if raw.shape != tuple(rgb_hw):
            raise BagError(
                f"{name}: label is {raw.shape[1]}x{raw.shape[0]}, the RGB frame {rgb_hw[1]}x{rgb_hw[0]}"
            )
        write_image(self.out / "labels" / f"{sample_id}.png", raw)
        self.result.labels_written += 1

    def _summarize(self) -> None:
        result, settings = self.result, self.settings
        if result.nonfinite_thermal:
            result.notes.append(
                f"{result.nonfinite_thermal} thermal frames hold NaN/inf pixels ({result.blank_thermal} without one "
                "finite pixel); written as recorded (float TIFF): training and eval read them as the node does "
                "(NaN/inf as the coldest value, a frame without finite pixels as a blank thermal image)"
            )
        sizes = ", ".join(f"{w}x{h}" for w, h in sorted(result.thermal_sizes))
        how = "warped by the recorded --thermal-homography" if settings.homography is not None else "resized"
        if settings.homography is not None or self.sizes_differ:
            result.notes.append(f"thermal frames ({sizes}) written at the camera's own size; the loader "
                                f"normalises them and then they are {how} onto the RGB grid, as the node does")
        if result.labels_total is not None:
            result.notes.append(
                f"labels: {result.labels_written} of the {result.labels_total} labels on {self.labels.topic} matched "
                f"an extracted pair (within {self.labels.tolerance_ns / 1e6:g} ms of its RGB stamp)"
            )


def _check_labels_reach_pairs(bag: Bag, rgb_topic: str, thermal_topic: str, slop_s: float, labels) -> None:
    """Before writing anything: a label topic whose stamps match no pair is a mistake (another
    camera's stamps, labels stamped on receipt, a too small tolerance), not an unlabelled dataset."""
    nearest = None
    pairs = 0
    for arrival in BagPairing(bag, rgb_topic, thermal_topic, slop_s):
        if arrival.pair is None:
            continue
        pairs += 1
        distance = labels.distance_ns(arrival.pair.rgb_stamp_ns)
        if distance is not None and distance <= labels.tolerance_ns:
            return
        if distance is not None and (nearest is None or distance < nearest):
            nearest = distance
    if pairs == 0:
        return  # no pairs at all: the caller's "no pair was extracted" says why
    closest = "" if nearest is None else f"; the closest is {nearest / 1e6:.1f} ms from a pair's RGB stamp"
    raise BagError(
        f"--label-topic {labels.topic}: none of its {len(labels)} labels matches one of the {pairs} pairs within "
        f"{labels.tolerance_ns / 1e6:g} ms{closest}. Labels must carry the header stamp of the RGB frame they label"
    )


def _nothing_extracted(bag_path, result: ExtractResult, rgb_topic: str, thermal_topic: str, slop_s: float) -> str:
    """Why no pair was written: the frames could not be decoded, or there are no pairs."""
    if result.failure_reasons:
        return (
            f"{bag_path}: no pair was extracted: {len(result.failed)} of {result.pairs} pairs could not be decoded: "
            + failure_summary(result.failure_reasons)
        )

    info = inspect_bag(bag_path, rgb_topic, thermal_topic, slop_s)
    return f"{bag_path}: no pair was extracted: {info.verdict}"


def _update_index(out: Path, result: ExtractResult, rows: list[list], val_fraction: float) -> None:
    """Split files and frames.csv, merged with what the folder already lists."""
    new = result.written  # in time order
    n_val = int(round(len(new) * val_fraction)) if len(new) > 1 else 0
    result.train, result.val = new[: len(new) - n_val], new[len(new) - n_val :]
    ours = set(new)
    train = [i for i in _read_ids(out / "train.txt") if i not in ours] + result.train
    val = [i for i in _read_ids(out / "val.txt") if i not in ours] + result.val
    _write_ids(out / "train.txt", train)
    if val:
        _write_ids(out / "val.txt", val)
    csv_path = out / "frames.csv"
    existing: list[list[str]] = []
    if csv_path.is_file():
        with csv_path.open(newline="") as f:
            existing = [row for row in list(csv.reader(f))[1:] if row and row[0] not in ours]
    with replacing(csv_path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "recording", "rgb_stamp_ns", "thermal_stamp_ns", "thermal_minus_rgb_ms"])
        w.writerows(existing)
        w.writerows(rows)


def format_extract(result: ExtractResult) -> str:
    lines = [
        f"{len(result.written)} of {result.pairs} pairs ({result.rgb_topic} + {result.thermal_topic}) -> "
        f"{result.out_dir}" + (" -- INTERRUPTED" if result.interrupted else ""),
        f"  train.txt +{len(result.train)}, val.txt +{len(result.val)}"
        + (f", labels {result.labels_written}" if result.labels_written else ""),
    ]
    if result.failed:
        lines.append(f"  {len(result.failed)} pairs could not be decoded, e.g. {result.failed[0]}")
    for note in result.notes:
        lines.append(f"  {note}")
    return safe_lines(lines)  # topic names are the recording's text
