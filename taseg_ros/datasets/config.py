"""Dataset configs: everything about a dataset that is not pixels, read from one YAML file.

`training/datasets/<name>.yaml` (built-in: mfnet, pst900, fmb, kp) or a user's own
`classes.yaml` holds the class list (the `taseg_ros.classes.ClassInfo` keys) plus:

    layout: mfnet | pst900 | fmb | kp | folder   # which loader reads the files (default folder)
    label_map:                  # how values in the label files become class ids
      ignore: [0]               #   raw values -> IGNORE_INDEX (255): not scored, no loss
      offset: 1                 #   any other raw value v -> v - offset (must land in 0..K-1)
    day_night: id_suffix | kaist_set | lists | none
    splits: [train, val, test]  # documentation of the split names the loader accepts
    val_holdout:                # datasets without a val split: how val is carved from train
      pattern: '^\\d+_bag(\\d+)'  # regex on the id; group 1 is the group key (whole groups move)
      modulus: 5                # key % modulus == 0 -> val (non-matching ids: crc32(id))
    thermal:
      normalization: {mode: fixed, low: 0, high: 255}   # a ThermalNormalization
      source: thermal           # loader-specific alternative folder (PST900: thermal_raw)
      raw_normalization: {...}  # normalization used with source thermal_raw
      inpaint_zeros: false      # fill zero-valued holes (PST900 official pipeline)
      homography: [9 numbers]   # thermal px -> RGB px registration applied after normalisation
                                # (what `taseg bag extract --thermal-homography` records; the
                                # node's thermal_homography); absent: a thermal image of another
                                # size is resized onto the RGB grid
      homography_size: [tw, th, rw, rh]  # the frame sizes the homography was made for (files of
                                # other sizes are refused); absent: not checked
    metric:
      nan_policy: zero | nanmean   # headline mIoU: NaN IoU (class absent and never predicted)
                                   # counts as 0, or is left out of the mean (default); both
                                   # are always reported
      classes_scored: all          # or a list of class names
      eval_resolution: native      # or [height, width]: labels and predictions resized (nearest)
      conditions: [day, night]     # also report each from its own confusion matrix
      reference: text              # which published code this protocol reproduces

For a folder dataset without these keys, `ignore_index` (a raw value in the label files)
is the only ignored value and labels are used as they are. Values are read and checked by
taseg_ros.config_io; a bad one is an error naming the file, the key and the expected form.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from taseg_ros.classes import ClassInfo, read_dataset_yaml
from taseg_ros.config_io import ConfigError, from_mapping, setting
from taseg_ros.errors import InputError
from taseg_ros.frames.thermal import ThermalNormalization, ThermalPreparation, validate_homography

IGNORE_INDEX = 255
"""Label value of ignored pixels in every loaded sample, whatever the dataset stores on disk."""

DAY_NIGHT_RULES = ("none", "id_suffix", "kaist_set", "lists")
NAN_POLICIES = ("zero", "nanmean")
_KAIST_DAY_SETS = frozenset({0, 1, 2, 6, 7, 8})
_KAIST_NIGHT_SETS = frozenset({3, 4, 5, 9, 10, 11})
_MFNET_ID = re.compile(r"^\d+([DN])")
_KAIST_ID = re.compile(r"^set(\d+)_")


@dataclass(frozen=True)
class LabelMap:
    """Raw label file values -> class ids 0..K-1 or IGNORE_INDEX; anything else is an error."""

    num_classes: int
    ignore: tuple[int, ...] = setting((), ge=0)
    offset: int = setting(0, ge=0)

    def __post_init__(self) -> None:
        for v in self.ignore:
            if self.offset <= v < self.offset + self.num_classes:
                raise InputError(
                    f"label_map: raw value {v} is both ignored and class {v - self.offset}; "
                    f"ignored values must lie outside {self.offset}..{self.offset + self.num_classes - 1}"
                )

    @property
    def valid_raw(self) -> str:
        text = f"{self.offset}..{self.offset + self.num_classes - 1}"
        if self.ignore:
            text += f", ignored {list(self.ignore)}"
        return text

    def lookup_table(self, size: int) -> np.ndarray:
        """int16 table raw -> id (IGNORE_INDEX for ignored, -1 for invalid)."""
        lut = np.full(size, -1, np.int16)
        lo, hi = self.offset, min(self.offset + self.num_classes, size)
        lut[lo:hi] = np.arange(hi - lo, dtype=np.int16)
        for v in self.ignore:
            if 0 <= v < size:
                lut[v] = IGNORE_INDEX
        return lut

    def apply(self, raw: np.ndarray, source: str = "label") -> np.ndarray:
        """(H, W) raw integer labels -> (H, W) int64 ids; ValueError naming `source` and the bad values."""
        if raw.dtype == np.uint8 or raw.dtype == np.uint16:
            lut = self.lookup_table(256 if raw.dtype == np.uint8 else 65536)
            mapped = lut[raw]
        else:
            raw64 = raw.astype(np.int64)
            mapped = np.full(raw.shape, -1, np.int16)
            inside = (raw64 >= self.offset) & (raw64 < self.offset + self.num_classes)
            mapped[inside] = (raw64[inside] - self.offset).astype(np.int16)
            mapped[np.isin(raw64, self.ignore)] = IGNORE_INDEX
        bad = mapped < 0
        if bad.any():
            values = np.unique(raw[bad])
            shown = ", ".join(str(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
            raise InputError(
                f"{source}: label values [{shown}] are outside the class range "
                f"(valid raw values: {self.valid_raw}; {int(bad.sum())} pixels)"
            )
        return mapped.astype(np.int64)


@dataclass(frozen=True)
class ThermalConfig:
    normalization: ThermalNormalization = field(default_factory=ThermalNormalization)
    source: str = "thermal"
    raw_normalization: ThermalNormalization = field(
        default_factory=lambda: ThermalNormalization("percentile", percentiles=(1.0, 99.0))
    )
    inpaint_zeros: bool = False
    inpaint_radius: float = setting(10.0, gt=0)
    # cv2.INPAINT_NS as PSTNet's pst_inference.py; "telea" as its toolkit
    inpaint_method: str = setting("ns", choices=("ns", "telea"))
    # Registration onto the RGB grid, as the node's thermal_homography (frames.thermal).
    homography: tuple[float, ...] | None = setting(None, form="9 numbers (3x3 row-major, thermal px -> RGB px)")
    # The frame sizes it was made for (thermal W, H, RGB W, H); files of other sizes are refused.
    homography_size: tuple[int, int, int, int] | None = setting(None, gt=0, form="[thermal W, H, RGB W, H]")

    def __post_init__(self) -> None:
        if self.homography is not None:
            object.__setattr__(self, "homography", tuple(float(v) for v in validate_homography(self.homography).ravel()))

    def preparation(self, normalization: ThermalNormalization | None = None) -> ThermalPreparation:
        """The frame layer's ThermalPreparation for this dataset's files (the node's, given the same
        settings): `normalization` overrides the configured one (PST900's thermal_raw)."""
        return ThermalPreparation(normalization or self.normalization, self.homography, made_for=self.homography_size)


@dataclass(frozen=True)
class MetricProtocol:
    """How a split is scored. One confusion matrix over the split; per-class IoU from it; mean last."""

    nan_policy: str = setting("zero", choices=NAN_POLICIES)
    classes_scored: tuple[int, ...] | None = None  # None: all classes
    # None: native (label file) size
    eval_resolution: tuple[int, int] | None = setting(None, ge=1, form="native or [height, width]")
    conditions: tuple[str, ...] = ()
    reference: str = ""


@dataclass(frozen=True)
class HoldoutRule:
    """Deterministic val split carved from train, moving whole groups (sequences) at once."""

    modulus: int = setting(5, ge=2)
    pattern: str | None = None

    def group_key(self, sample_id: str) -> int:
        if self.pattern:
            m = re.search(self.pattern, sample_id)
            if m:
                key = m.group(1) if m.groups() else m.group(0)
                return int(key) if key.isdigit() else zlib.crc32(key.encode())
        # crc32, not hash(): Python's str hash is salted per process.
        return zlib.crc32(sample_id.encode())

    def is_val(self, sample_id: str) -> bool:
        return self.group_key(sample_id) % self.modulus == 0


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    classes: ClassInfo
    layout: str = "folder"
    label_map: LabelMap | None = None
    day_night: str = setting("none", choices=DAY_NIGHT_RULES)
    splits: tuple[str, ...] = ()
    val_holdout: HoldoutRule | None = None
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    metric: MetricProtocol = field(default_factory=MetricProtocol)
    source: str = ""

    def __post_init__(self) -> None:
        if self.label_map is None:
            object.__setattr__(self, "label_map", LabelMap(self.classes.num_classes))

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    def condition_of(self, sample_id: str) -> str | None:
        """Day/night of a sample from its id (rules id_suffix, kaist_set); None otherwise."""
        return condition_from_id(self.day_night, sample_id)

    def with_thermal(self, **changes: Any) -> "DatasetConfig":
        return replace(self, thermal=replace(self.thermal, **changes))


def condition_from_id(rule: str, sample_id: str) -> str | None:
    if rule == "id_suffix":  # MFNet: 01402D / 01189N (and the _flip copies 00101D_flip)
        m = _MFNET_ID.match(sample_id)
        return None if m is None else ("day" if m.group(1) == "D" else "night")
    if rule == "kaist_set":  # KAIST: set00-02, 06-08 day; set03-05, 09-11 night
        m = _KAIST_ID.match(sample_id)
        if m is None:
            return None
        s = int(m.group(1))
        return "day" if s in _KAIST_DAY_SETS else "night" if s in _KAIST_NIGHT_SETS else None
    return None


# Keys of the file that ClassInfo reads; every other top-level key is a DatasetConfig field.
_CLASS_KEYS = ("classes", "palette", "prompts", "ignore_index")


def config_from_mapping(data: dict, source: str, default_name: str = "") -> DatasetConfig:
    """A DatasetConfig from a parsed YAML mapping (a dataset yaml or a user's classes.yaml)."""
    classes = ClassInfo.from_mapping(data, source=source)
    values = {k: v for k, v in data.items() if k not in _CLASS_KEYS}
    file_keys = sorted({*_CLASS_KEYS, *(f.name for f in fields(DatasetConfig))} - {"source"})
    for key in values.keys() - set(file_keys):
        raise ConfigError("", f"unknown key '{key}' (known: {', '.join(file_keys)})", where=source)
    values["name"] = values.get("name") or default_name
    values["label_map"] = _label_map(values.get("label_map"), classes)
    for key in ("thermal", "metric"):
        if values.get(key, "absent") is None:  # an empty section in the file
            del values[key]
    metric = values.get("metric", {})
    values["metric"] = _metric_in_file_form(metric, classes, source) if isinstance(metric, dict) else metric
    return from_mapping(DatasetConfig, {**values, "classes": classes, "source": source}, source)


def _label_map(data: Any, classes: ClassInfo) -> Any:
    if data is None:
        # Plain classes.yaml: ids are stored as they are; ignore_index is the raw ignored value.
        ignore = () if classes.ignore_index is None else (classes.ignore_index,)
        return {"num_classes": classes.num_classes, "ignore": ignore}
    return {"num_classes": classes.num_classes, **data} if isinstance(data, dict) else data


def _metric_in_file_form(data: dict, classes: ClassInfo, source: str) -> dict:
    """The file's spellings -> MetricProtocol values: class names -> ids, `all`/`native` -> None;
    a file that does not say scores with nanmean (MetricProtocol() itself defaults to zero)."""
    metric = {"nan_policy": "nanmean", **data}
    scored = metric.get("classes_scored", "all")
    if scored in (None, "all"):
        metric["classes_scored"] = None
    elif isinstance(scored, list):
        unknown = [n for n in scored if n not in classes.names]
        if unknown:
            raise ConfigError("metric.classes_scored", f"unknown classes {unknown} (known: {list(classes.names)})", where=source)
        metric["classes_scored"] = tuple(classes.names.index(n) for n in scored)
    if metric.get("eval_resolution") == "native":
        metric["eval_resolution"] = None
    return metric


def load_dataset_config(name_or_path: str | Path) -> DatasetConfig:
    """Config of a built-in dataset (`mfnet`, `pst900`, `fmb`, `kp`) or of a YAML file."""
    path, data = read_dataset_yaml(name_or_path, "dataset", "dataset config")
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with a 'classes' list")
    return config_from_mapping(data, source=str(path), default_name=path.stem)
