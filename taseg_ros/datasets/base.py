"""The sample contract shared by every dataset loader, and the loader base class.

A sample is a dict:
    id:        str, the file stem (MFNet `01402D`, KP `set07_V000_I00050`, ...)
    rgb:       (H, W, 3) uint8, RGB order
    thermal:   (H, W) float32 in [0, 1] on the RGB grid: the file's raw thermal through the frame
               layer's ThermalPreparation (grey rule, normalisation, registration) with the
               dataset config's settings, exactly as the node prepares a camera frame
    label:     (H, W) int64 class ids, ignored pixels = IGNORE_INDEX (255); None when the
               dataset has no labels (a folder dataset without labels/)
    condition: "day" | "night" | None

Datasets are plain Python sequences (__len__/__getitem__), so a torch DataLoader can use
them (with `collate_fn=collate_samples`, which keeps the None values); nothing here imports
torch at import time.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from taseg_ros.datasets.config import IGNORE_INDEX, DatasetConfig, HoldoutRule
from taseg_ros.datasets.io import index_by_stem, read_label, read_split_file
from taseg_ros.errors import InputError, InputWarning, MissingInputError
from taseg_ros.frames.files import read_rgb, read_thermal
from taseg_ros.frames.thermal import ThermalPreparation

Sample = dict
Transform = Callable[[Sample, np.random.Generator], Sample]

__all__ = [
    "IGNORE_INDEX", "RGBTDataset", "FolderSplitDataset", "SampleRecord", "Sample", "Transform", "augmentation_rng",
    "collate_samples",
]


@dataclass(frozen=True)
class SampleRecord:
    id: str
    rgb: Path
    thermal: Path | None  # None where thermal lives inside the RGB file (MFNet RGBA PNGs)
    label: Path | None
    condition: str | None = None


class RGBTDataset:
    """Base loader. Subclasses implement `_records(split)`; they may override `_read`."""

    label_channel = "same"  # how a multi-channel label file is read, see io.label_single_channel

    def __init__(
        self,
        root: str | Path,
        split: str,
        config: DatasetConfig,
        transform: Transform | None = None,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingInputError(f"{config.name} dataset folder not found: {self.root}")
        self.split = split
        self.config = config
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.records: list[SampleRecord] = self._records(split)
        self._thermal: ThermalPreparation | None = None  # made on first use (it says its notes once)
        if not self.records:
            cond = self._condition_filter(split)[1]
            hint = f" (no sample of its base split is known to be a {cond} sample)" if cond else ""
            raise InputError(f"{config.name} dataset {self.root}: split '{split}' has no samples{hint}")
        missing = [
            p for r in self.records for p in (r.rgb, r.thermal, r.label) if p is not None and not p.is_file()
        ]
        if missing:
            shown = "\n  ".join(str(p) for p in missing[:5])
            more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise MissingInputError(
                f"{config.name} split '{split}': {len(missing)} file(s) missing:\n  {shown}{more}"
            )

    # --- to implement -------------------------------------------------------------------
    def _records(self, split: str) -> list[SampleRecord]:
        raise NotImplementedError

    # --- public -------------------------------------------------------------------------
    @property
    def class_info(self):
        return self.config.classes

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def has_labels(self) -> bool:
        return all(r.label is not None for r in self.records)

    def set_epoch(self, epoch: int) -> None:
        """Augmentations depend on (seed, epoch, index) only: reproducible with any worker count."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return self.sample(index % len(self), self.epoch)

    def sample(self, index: int, epoch: int) -> Sample:
        """Sample `index` as the transform augments it in `epoch` (training keys its data
        loader by (epoch, index) and calls this; `__getitem__` uses `set_epoch`'s epoch)."""
        sample = self.load(index)
        if self.transform is not None:
            sample = self.transform(sample, augmentation_rng(self.seed, epoch, index))
        return sample

    def load(self, index: int) -> Sample:
        """The sample without the transform."""
        record = self.records[index]
        rgb, thermal, label = self._read(record)
        if label is not None and label.shape[:2] != rgb.shape[:2]:
            (rh, rw), (lh, lw) = rgb.shape[:2], label.shape[:2]
            raise InputError(f"{self.config.name} sample '{record.id}': sizes differ (WxH): rgb {record.rgb} is "
                             f"{rw}x{rh}, label {record.label} is {lw}x{lh}")
        thermal = self._prepare_thermal(thermal, record, rgb.shape[:2])
        if label is not None:
            label = self.config.label_map.apply(label, source=str(record.label))
        return {"id": record.id, "rgb": rgb, "thermal": thermal, "label": label, "condition": record.condition}

    def load_inputs(self, index: int) -> Sample:
        """The sample's RGB and prepared thermal without its label (label None), also where the
        label file does not exist yet: frames still to be labelled (``taseg label export``)."""
        record = replace(self.records[index], label=None)
        rgb, thermal, _ = self._read(record)
        thermal = self._prepare_thermal(thermal, record, rgb.shape[:2])
        return {"id": record.id, "rgb": rgb, "thermal": thermal, "label": None, "condition": record.condition}

    # --- helpers for subclasses -----------------------------------------------------------
    def _read(self, record: SampleRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        rgb = read_rgb(record.rgb)
        thermal = read_thermal(record.thermal)
        label = None if record.label is None else read_label(record.label, self.label_channel)
        return rgb, thermal, label

    def _thermal_normalization(self):
        return self.config.thermal.normalization

    def _prepare_thermal(self, thermal: np.ndarray, record: SampleRecord, rgb_hw: tuple[int, int]) -> np.ndarray:
        """Raw thermal of a file -> [0, 1] on the RGB grid (frames.thermal.ThermalPreparation, as the node);
        its notes become InputWarnings naming the file (NaN pixels per file, a resize or warp once)."""
        cfg = self.config.thermal
        if cfg.inpaint_zeros:  # PST900's own pipeline fills its reprojection holes before anything else
            thermal = inpaint_zeros(thermal, cfg.inpaint_radius, cfg.inpaint_method)
        if self._thermal is None:
            self._thermal = cfg.preparation(self._thermal_normalization())
        try:
            thermal01, notes = self._thermal(thermal, rgb_hw)
        except ValueError as exc:  # a recorded homography that maps this frame size out of view
            raise InputError(f"{record.thermal or record.rgb}: {exc}") from None
        for note in notes:
            warnings.warn(InputWarning(f"{record.thermal or record.rgb}: {note.text}", note.kind), stacklevel=3)
        return thermal01

    def _split_ids(self, split: str, candidates: Sequence[str | tuple[str, ...]]) -> list[str]:
        """Ids from the first candidate whose split file(s) all exist (a tuple is a union)."""
        tried = []
        for cand in candidates:
            names = (cand,) if isinstance(cand, str) else tuple(cand)
            paths = [self.root / n for n in names]
            tried.append(" + ".join(n for n in names))
            if all(p.is_file() for p in paths):
                ids: list[str] = []
                for p in paths:
                    part = read_split_file(p)
                    if not part:
                        raise InputError(f"{p}: split file lists no ids")
                    dup = set(ids) & set(part)
                    if dup:
                        raise InputError(f"{p}: ids also listed in another file of split '{split}': {sorted(dup)[:5]}")
                    ids.extend(part)
                return ids
        raise MissingInputError(
            f"{self.config.name} dataset {self.root}: no split file for split '{split}' "
            f"(looked for {', '.join(tried)}); split files present: {self._present_split_files()}"
        )

    def _resolve_split(
        self, split: str, candidates_for: Callable[[str], Sequence[str | tuple[str, ...]]]
    ) -> tuple[list[str], str | None]:
        """Ids of a split and a day/night filter: 'X_day' without split files of its own is
        split X restricted to day samples (the day/night rule of the config decides)."""
        base, cond = self._condition_filter(split)
        try:
            return self._split_ids(split, candidates_for(split)), None
        except FileNotFoundError as own_file_missing:
            if cond is None:
                raise
            try:
                return self._split_ids(base, candidates_for(base)), cond
            except FileNotFoundError:
                raise own_file_missing from None

    def _records_of(
        self,
        ids: Sequence[str],
        only: str | None,
        files: Callable[[str], tuple[Path, Path | None, Path | None]],
        condition_of: Callable[[str], str | None] | None = None,
    ) -> list[SampleRecord]:
        """Records for ``ids`` (``files(id)`` -> rgb, thermal, label paths), keeping those whose
        day/night condition is ``only`` when a filter is set (see ``_resolve_split``)."""
        condition_of = condition_of or self.config.condition_of
        records = []
        for i in ids:
            condition = condition_of(i)
            if only is None or condition == only:
                records.append(SampleRecord(i, *files(i), condition=condition))
        return records

    def _present_split_files(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("*.txt"))

    @staticmethod
    def _condition_filter(split: str) -> tuple[str, str | None]:
        """'test_day' -> ('test', 'day'); 'test' -> ('test', None)."""
        for cond in ("day", "night"):
            if split.endswith("_" + cond):
                return split[: -len(cond) - 1], cond
        return split, None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, samples={len(self)})"


class FolderSplitDataset(RGBTDataset):
    """Datasets split by folder (`<root>/<split>/<modality>/<name>`), with a val split carved
    from train by the config's `val_holdout` rule."""

    modality_dirs: tuple[str, str, str] = ("rgb", "thermal", "labels")
    folder_splits: tuple[str, ...] = ("train", "test")

    def _thermal_dir(self) -> str:
        return self.modality_dirs[1]

    def _records(self, split: str) -> list[SampleRecord]:
        holdout = self.config.val_holdout or HoldoutRule()
        if split in ("train", "val", "trainval"):
            folder = "train"
        elif split in self.folder_splits:
            folder = split
        else:
            raise InputError(
                f"{self.config.name}: unknown split '{split}'; use one of "
                f"{sorted(set(self.folder_splits) | {'train', 'val', 'trainval'})}"
            )
        rgb_name, _, label_name = self.modality_dirs
        split_dir = self.root / folder
        rgb_dir = split_dir / rgb_name
        if not rgb_dir.is_dir():
            raise MissingInputError(f"{self.config.name} dataset {self.root}: folder not found: {rgb_dir}")
        rgb_files = index_by_stem(rgb_dir)
        if not rgb_files:
            raise InputError(f"{self.config.name} dataset: split '{split}' is empty: no images in {rgb_dir}")
        ids = sorted(rgb_files)
        if split == "train":
            ids = [i for i in ids if not holdout.is_val(i)]
        elif split == "val":
            ids = [i for i in ids if holdout.is_val(i)]
        thermal_files = index_by_stem(split_dir / self._thermal_dir())
        label_files = index_by_stem(split_dir / label_name)
        return [
            SampleRecord(
                id=i,
                rgb=rgb_files[i],
                thermal=thermal_files.get(i, split_dir / self._thermal_dir() / rgb_files[i].name),
                label=label_files.get(i, split_dir / label_name / rgb_files[i].name),
                condition=None,
            )
            for i in ids
        ]


def augmentation_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The one source of a sample's augmentation randomness: a function of (seed, epoch,
    index) alone, so any worker count, process count or resumed run draws the same crop."""
    return np.random.default_rng([seed, epoch, index])


def collate_samples(batch: Sequence[Sample]) -> dict:
    """DataLoader collate_fn for samples: arrays stacked into tensors, strings and None kept as
    lists (torch's default_collate rejects the None of `condition` / unlabelled `label`).

        DataLoader(dataset, batch_size=8, collate_fn=collate_samples)
        -> {id: [str], rgb: (B,H,W,3) uint8, thermal: (B,H,W) float32,
            label: (B,H,W) int64 or None, condition: [str | None]}
    """
    import torch

    out: dict = {}
    for key in batch[0]:
        values = [s[key] for s in batch]
        if all(isinstance(v, np.ndarray) for v in values):
            out[key] = torch.from_numpy(np.stack(values))
        elif key == "label" and all(v is None for v in values):
            out[key] = None
        elif any(isinstance(v, np.ndarray) for v in values):
            raise InputError(f"collate_samples: '{key}' is missing in some samples of the batch")
        else:
            out[key] = values
    return out


def inpaint_zeros(thermal: np.ndarray, radius: float = 10.0, method: str = "ns") -> np.ndarray:
    """Fill zero-valued pixels (holes left by reprojecting thermal into the RGB frame), as
    PSTNet's pipeline does: cv2.inpaint(img, img == 0, 10, INPAINT_NS)."""
    holes = thermal == 0
    if not holes.any() or holes.all():
        return thermal
    flag = cv2.INPAINT_NS if method == "ns" else cv2.INPAINT_TELEA
    src = thermal
    if src.dtype not in (np.uint8, np.uint16, np.float32):
        src = src.astype(np.float32)
    return cv2.inpaint(src, holes.astype(np.uint8), float(radius), flag)
