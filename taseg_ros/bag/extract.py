"""`taseg bag extract`: a recording's RGB/thermal pairs -> the plain folder dataset format.

    <out>/rgb/<id>.png        8-bit RGB
    <out>/thermal/<id>.png    thermal on the RGB pixel grid, at the depth the camera sent: 8- or 16-bit
                              PNG (float thermal as <id>.tiff); resized/warped to the RGB size when the
                              thermal camera's resolution differs
    <out>/labels/<id>.png     only with --label-topic: class ids from the recording
    <out>/classes.yaml        the class list to label with (kept if it exists)
    <out>/train.txt val.txt   ids; val is the last --val-fraction of each recording's frames (one
                              contiguous block: neighbouring frames are near-duplicates and must not
                              straddle train and val)
    <out>/frames.csv          id, recording, RGB and thermal stamps, stamp offset

``<id>`` is ``[prefix]<sec>_<nanosec>`` of the RGB stamp, so labels made later find their frame again
(``taseg bag eval --labels``). Extracting more recordings into the same folder adds to it; extracting
the same one again rewrites its files and lists each id once.

Frames are paired exactly as the node pairs them (``StampPairer`` at ``slop``). ``every`` keeps every
N-th pair; ``hz`` keeps at most that many pairs per second (a pair is kept when at least 90% of
1/hz has passed since the last kept one: camera jitter must not make a frame miss its turn).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from taseg_ros.bag.labels import TopicLabels, stamp_id
from taseg_ros.bag.pairs import BagPairing, check_max_pairs, failure_summary
from taseg_ros.bag.reader import Bag, BagError, open_bag
from taseg_ros.bag.topics import resolve_image_topics
from taseg_ros.classes import ClassInfo, load_classes
from taseg_ros.errors import InputError
from taseg_ros.outputs import write_text_atomic
from taseg_ros.ros.pairing import NS_PER_S, Pair


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
    pairing: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _write_ids(path: Path, ids: list[str]) -> None:
    write_text_atomic(path, "".join(f"{i}\n" for i in ids))


def _classes_file(out: Path, classes: str | Path | ClassInfo | None) -> str:
    """Write classes.yaml unless the folder has one; returns a note for the user."""
    target = out / "classes.yaml"
    if target.is_file():
        if classes is not None:
            wanted = classes if isinstance(classes, ClassInfo) else load_classes(classes)
            existing = load_classes(target)
            if tuple(existing.names) != tuple(wanted.names):
                raise BagError(
                    f"{target} lists classes {list(existing.names)}, not the requested {list(wanted.names)}; "
                    "extract into another folder or drop --classes"
                )
        return f"kept {target}"
    info = classes if isinstance(classes, ClassInfo) else load_classes(classes or "mfnet")
    data = info.to_mapping()
    if data.get("ignore_index") is None:
        data["ignore_index"] = 255
    text = (
        "# Class list of this dataset: label PNGs hold these ids (0..K-1) in this order;\n"
        "# pixels equal to ignore_index are not scored and get no loss. Edit it to your classes\n"
        "# before labelling (taseg train and taseg bag eval --labels read it).\n"
    )
    target.write_text(text + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return f"wrote {target} ({len(info.names)} classes: {', '.join(info.names)})"


def _check_options(every, hz, val_fraction, prefix, max_pairs) -> None:
    if every is not None and hz is not None:
        raise InputError("--every and --hz are alternatives; give one")
    if every is not None and every < 1:
        raise InputError(f"--every must be >= 1, got {every}")
    if hz is not None and not hz > 0:
        raise InputError(f"--hz must be > 0, got {hz}")
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if prefix and not all(c.isalnum() or c in "-_." for c in prefix):
        raise InputError(f"--prefix may only hold letters, digits, '-', '_' and '.', got {prefix!r}")
    check_max_pairs(max_pairs)


def extract_pairs(
    bag_path: str | Path,
    out_dir: str | Path,
    *,
    rgb_topic: str | None = None,
    thermal_topic: str | None = None,
    slop_s: float = 0.02,
    every: int | None = None,
    hz: float | None = None,
    classes: str | Path | ClassInfo | None = None,
    label_topic: str | None = None,
    label_tolerance_s: float = 0.001,
    prefix: str = "",
    val_fraction: float = 0.2,
    homography: np.ndarray | None = None,
    max_pairs: int | None = None,
    stop: Callable[[], bool] | None = None,
    on_pair: Callable[[int], None] | None = None,
) -> ExtractResult:
    """Extract the pairs of ``bag_path`` into the dataset folder ``out_dir`` (see the module
    docstring). The folder is added to (as documented), but it must not be or hold the recording;
    a run that fails removes what it added."""
    from taseg_ros.outputs import output_dir

    _check_options(every, hz, val_fraction, prefix, max_pairs)
    with open_bag(bag_path) as bag, output_dir(out_dir, force=True, inputs={"BAG": bag_path}) as out:
        rgb, thermal = resolve_image_topics(bag, rgb_topic, thermal_topic)
        class_info = (
            classes
            if isinstance(classes, ClassInfo)
            else load_classes(classes or (out / "classes.yaml" if (out / "classes.yaml").is_file() else "mfnet"))
        )
        labels = TopicLabels(bag, label_topic, class_info, label_tolerance_s) if label_topic else None
        if labels is not None:
            _check_labels_reach_pairs(bag, rgb.name, thermal.name, slop_s, labels)
        extraction = _Extraction(bag, out, rgb.name, thermal.name, labels, prefix, homography)
        result = extraction.result
        if bag.note:
            result.notes.append(bag.note)
        result.notes.append(_classes_file(out, classes))
        extraction.run(BagPairing(bag, rgb.name, thermal.name, slop_s), every, hz, max_pairs, stop, on_pair)
        if not result.written and not result.interrupted:
            raise BagError(_nothing_extracted(bag_path, result, rgb.name, thermal.name, slop_s))
        _update_index(out, result, extraction.rows, val_fraction)
    return result


class _Extraction:
    """Writes the selected pairs of one recording into the dataset folder, in named steps."""

    def __init__(self, bag: Bag, out: Path, rgb_topic: str, thermal_topic: str, labels, prefix: str, homography):
        from taseg_ros.preprocessing import ThermalAligner

        self.bag, self.out, self.labels, self.prefix = bag, out, labels, prefix
        self.aligner = ThermalAligner(homography)
        self.result = ExtractResult(out, rgb_topic, thermal_topic)
        if labels is not None:
            self.result.labels_total = len(labels)
        self.rows: list[list] = []  # frames.csv
        self.last_kept_ns: int | None = None

    def run(self, pairing: BagPairing, every, hz, max_pairs, stop, on_pair) -> None:
        result = self.result
        min_gap_ns = None if hz is None else int(0.9e9 / hz)
        for arrival in pairing:
            if stop is not None and stop():
                result.interrupted = True
                break
            pair = arrival.pair
            if pair is None:
                continue
            index = result.pairs
            result.pairs += 1
            if every is not None and index % every:
                continue
            if min_gap_ns is not None and self.last_kept_ns is not None:
                if pair.rgb_stamp_ns - self.last_kept_ns < min_gap_ns:
                    continue
            if not self._write_pair(pair):
                continue
            if on_pair is not None:
                on_pair(len(result.written))
            if max_pairs is not None and len(result.written) >= max_pairs:
                break
        result.pairing = pairing.pairer.stats.as_dict()
        self._summarize()

    def _decode(self, pair: Pair):
        """(rgb, thermal) or None when a message cannot be decoded (counted per reason)."""
        from taseg_ros.ros.image_codec import ImageDecodeError, decode_rgb, decode_thermal

        images = []
        for stream, decode, frame in (("RGB", decode_rgb, pair.rgb), ("thermal", decode_thermal, pair.thermal)):
            try:
                images.append(decode(frame.msg))
            except ImageDecodeError as exc:
                reason = f"{stream} {frame.topic}: {exc}"
                self.result.failed.append(f"{pair.rgb_stamp_ns / NS_PER_S:.6f} s: {reason}")
                self.result.failure_reasons[reason] += 1
                return None
        return images

    def _write_pair(self, pair: Pair) -> bool:
        from taseg_ros.datasets.io import write_image

        images = self._decode(pair)
        if images is None:
            return False
        rgb_image, thermal_image = images
        self._count_nonfinite(thermal_image)
        thermal_image, note = self.aligner(thermal_image, rgb_image.shape[:2])
        if note is not None:
            self.result.notes.append(note)
        sample_id = stamp_id(pair.rgb_stamp_ns, self.prefix)
        write_image(self.out / "rgb" / f"{sample_id}.png", np.ascontiguousarray(rgb_image[:, :, ::-1]))
        if thermal_image.dtype.kind == "f":
            write_image(self.out / "thermal" / f"{sample_id}.tiff", thermal_image.astype(np.float32))
        else:
            write_image(self.out / "thermal" / f"{sample_id}.png", thermal_image)
        if self.labels is not None:
            self._write_label(pair.rgb_stamp_ns, sample_id, rgb_image.shape[:2])
        self.last_kept_ns = pair.rgb_stamp_ns
        self.result.written.append(sample_id)
        self.rows.append(
            [sample_id, str(self.bag.path), pair.rgb_stamp_ns, pair.thermal_stamp_ns, f"{pair.skew_ns * 1e-6:.3f}"]
        )
        return True

    def _count_nonfinite(self, thermal: np.ndarray) -> None:
        if thermal.dtype.kind != "f":
            return
        finite = np.isfinite(thermal)
        if not finite.all():
            self.result.nonfinite_thermal += 1
            self.result.blank_thermal += int(not finite.any())

    def _write_label(self, rgb_stamp_ns: int, sample_id: str, rgb_hw: tuple[int, int]) -> None:
        from taseg_ros.datasets.io import write_image

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
        result = self.result
        if result.nonfinite_thermal:
            result.notes.append(
                f"{result.nonfinite_thermal} thermal frames hold NaN/inf pixels ({result.blank_thermal} without one "
                "finite pixel); written as recorded (float TIFF): training and eval read them as the node does "
                "(NaN/inf as the coldest value, a frame without finite pixels as a blank thermal image)"
            )
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
    from taseg_ros.bag.info import inspect_bag

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
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "recording", "rgb_stamp_ns", "thermal_stamp_ns", "thermal_minus_rgb_ms"])
        w.writerows(existing)
        w.writerows(rows)
    tmp.replace(csv_path)


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
    return "\n".join(lines)
