"""The demo's data on disk: procedural street scenes (taseg_ros.scenes) written as a plain-folder
dataset (rgb/ thermal/ labels/ classes.yaml split files day.txt/night.txt)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import yaml

from taseg_ros.classes import ClassInfo
from taseg_ros.frames.files import write_image
from taseg_ros.outputs import write_text_atomic
from taseg_ros.scenes import CLASSES, SceneFrame, street_scene


def bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, :, ::-1])


def write_label(path: Path, label: np.ndarray | None) -> None:
    if label is None:
        return
    label = np.asarray(label)
    write_image(path, label.astype(np.uint16 if label.max(initial=0) > 255 else np.uint8))


def write_split_files(root: Path, splits: Mapping[str, Sequence[str]], suffix: str = "") -> None:
    for split, ids in splits.items():
        write_text_atomic(root / f"{split}.txt", "".join(f"{i}{suffix}\n" for i in ids))


def write_folder(
    root: str | Path,
    frames: Mapping[str, SceneFrame],
    splits: Mapping[str, Sequence[str]],
    classes: ClassInfo | Mapping,
    day: Sequence[str] = (),
    night: Sequence[str] = (),
) -> Path:
    """The plain folder format: thermal saved as 8/16-bit PNG, or TIFF when float."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    data = classes.to_mapping() if isinstance(classes, ClassInfo) else dict(classes)
    write_text_atomic(root / "classes.yaml", yaml.safe_dump(data, sort_keys=False))
    for i, f in frames.items():
        write_image(root / "rgb" / f"{i}.png", bgr(f.rgb))
        th = f.thermal
        ext = ".tiff" if th.dtype.kind == "f" else ".png"
        write_image(root / "thermal" / f"{i}{ext}", th.astype(np.float32) if ext == ".tiff" else th)
        write_label(root / "labels" / f"{i}.png", f.label)
    write_split_files(root, splits)
    if day:
        write_text_atomic(root / "day.txt", "".join(f"{i}\n" for i in day))
    if night:
        write_text_atomic(root / "night.txt", "".join(f"{i}\n" for i in night))
    return root


def write_street_dataset(
    root: str | Path,
    *,
    num_train: int = 48,
    num_val: int = 12,
    num_test: int = 24,
    height: int = 96,
    width: int = 128,
    night_fraction: float = 0.5,
    seed: int = 0,
) -> Path:
    """A plain-folder dataset (rgb/ thermal/ labels/ classes.yaml split files day/night.txt)."""
    rng = np.random.default_rng(seed)
    frames, splits, day, night = {}, {}, [], []
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        ids = []
        for i in range(count):
            is_night = i < round(count * night_fraction)
            frame_id = f"{split}_{i:04d}{'N' if is_night else 'D'}"
            frames[frame_id] = street_scene(rng, height, width, night=is_night)
            (night if is_night else day).append(frame_id)
            ids.append(frame_id)
        splits[split] = ids
    return write_folder(root, frames, splits, CLASSES, day=day, night=night)
