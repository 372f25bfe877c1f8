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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from taseg_ros.bag.reader import BagError, open_bag
from taseg_ros.bag.labels import TopicLabels, stamp_id
from taseg_ros.bag.pairs import BagPairing
from taseg_ros.bag.topics import resolve_image_topics
from taseg_ros.classes import ClassInfo, load_classes


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
    failed: list[str] = field(default_factory=list)  # "stamp: reason"
    pairing: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _write_ids(path: Path, ids: list[str]) -> None:
    tmp = path.with_suffix(".txt.tmp")
    tmp.write_text("".join(f"{i}\n" for i in ids))
    tmp.replace(path)


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
    from taseg_ros.datasets.io import write_image
    from taseg_ros.preprocessing import ThermalAligner
    from taseg_ros.ros.image_codec import ImageDecodeError, decode_rgb, decode_thermal

    if every is not None and hz is not None:
        raise ValueError("--every and --hz are alternatives; give one")
    if every is not None and every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    if hz is not None and not hz > 0:
        raise ValueError(f"--hz must be > 0, got {hz}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if prefix and not all(c.isalnum() or c in "-_." for c in prefix):
        raise ValueError(f"--prefix may only hold letters, digits, '-', '_' and '.', got {prefix!r}")
    out = Path(out_dir)
    min_gap_ns = None if hz is None else int(0.9e9 / hz)

    with open_bag(bag_path) as bag:
        rgb, thermal = resolve_image_topics(bag, rgb_topic, thermal_topic)
        class_info = (
            classes
            if isinstance(classes, ClassInfo)
            else load_classes(classes or (out / "classes.yaml" if (out / "classes.yaml").is_file() else "mfnet"))
        )
        labels = TopicLabels(bag, label_topic, class_info, label_tolerance_s) if label_topic else None
        result = ExtractResult(out, rgb.name, thermal.name)
        if bag.note:
            result.notes.append(bag.note)
        out.mkdir(parents=True, exist_ok=True)
        result.notes.append(_classes_file(out, classes))
        pairing = BagPairing(bag, rgb.name, thermal.name, slop_s)
        rows: list[list] = []
        last_kept_ns: int | None = None
        aligner = ThermalAligner(homography)
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
            if min_gap_ns is not None and last_kept_ns is not None and pair.rgb_stamp_ns - last_kept_ns < min_gap_ns:
                continue
            try:
                rgb_image = decode_rgb(pair.rgb.msg)
                thermal_image = decode_thermal(pair.thermal.msg)
            except ImageDecodeError as exc:
                result.failed.append(f"{pair.rgb_stamp_ns * 1e-9:.6f} s: {exc}")
                continue
            thermal_image, note = aligner(thermal_image, rgb_image.shape[:2])
            if note is not None:
                result.notes.append(note)
            sample_id = stamp_id(pair.rgb_stamp_ns, prefix)
            write_image(out / "rgb" / f"{sample_id}.png", np.ascontiguousarray(rgb_image[:, :, ::-1]))
            if thermal_image.dtype.kind == "f":
                write_image(out / "thermal" / f"{sample_id}.tiff", thermal_image.astype(np.float32))
            else:
                write_image(out / "thermal" / f"{sample_id}.png", thermal_image)
            if labels is not None:
                key = labels.match(pair.rgb_stamp_ns)
                if key is not None:
                    raw, _, name = labels.load(key)  # load() checks the values against the class list
                    if raw.shape != rgb_image.shape[:2]:
                        raise BagError(
                            f"{name}: label is {raw.shape[1]}x{raw.shape[0]}, the RGB frame "
                            f"{rgb_image.shape[1]}x{rgb_image.shape[0]}"
                        )
                    write_image(out / "labels" / f"{sample_id}.png", raw)
                    result.labels_written += 1
            last_kept_ns = pair.rgb_stamp_ns
            result.written.append(sample_id)
            rows.append(
                [sample_id, str(bag.path), pair.rgb_stamp_ns, pair.thermal_stamp_ns, f"{pair.skew_ns * 1e-6:.3f}"]
            )
            if on_pair is not None:
                on_pair(len(result.written))
            if max_pairs is not None and len(result.written) >= max_pairs:
                break
        result.pairing = pairing.pairer.stats.as_dict()

    if not result.written and not result.interrupted:
        from taseg_ros.bag.info import inspect_bag

        info = inspect_bag(bag_path, rgb.name, thermal.name, slop_s)
        raise BagError(f"{bag_path}: no pair was extracted: {info.verdict}")
    _update_index(out, result, rows, val_fraction)
    return result


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
