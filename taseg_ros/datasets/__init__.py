"""RGB-thermal segmentation datasets: MFNet, PST900, FMB, KP and a plain folder format.

    from taseg_ros.datasets import build_dataset, IGNORE_INDEX
    ds = build_dataset("mfnet", "/data/MFNet", "test")
    sample = ds[0]   # dict(id, rgb (H,W,3) uint8, thermal (H,W) float32 [0,1],
                     #      label (H,W) int64 with IGNORE_INDEX, condition "day"|"night"|None)

numpy + OpenCV only; the datasets are torch-DataLoader compatible (__len__/__getitem__;
pass collate_fn=collate_samples so that condition=None and label=None batch).
The per-dataset protocol (classes, label mapping, thermal normalisation, how it is scored)
comes from `training/datasets/<name>.yaml`; see config.py for the keys.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from taseg_ros.classes import builtin_dataset_names
from taseg_ros.datasets.base import FolderSplitDataset, RGBTDataset, Sample, SampleRecord, Transform, collate_samples
from taseg_ros.datasets.config import (
    IGNORE_INDEX,
    DatasetConfig,
    HoldoutRule,
    LabelMap,
    MetricProtocol,
    ThermalConfig,
    load_dataset_config,
)
from taseg_ros.datasets.fmb import FMBDataset
from taseg_ros.datasets.folder import FolderDataset
from taseg_ros.datasets.kp import KPDataset
from taseg_ros.datasets.mfnet import MFNetDataset
from taseg_ros.datasets.pst900 import PST900Dataset
from taseg_ros.errors import InputError, MissingInputError
from taseg_ros.frames.thermal import ThermalNormalization

# layout name (the `layout` key of a dataset yaml) -> loader class
DATASETS: dict[str, type[RGBTDataset]] = {
    "mfnet": MFNetDataset,
    "pst900": PST900Dataset,
    "fmb": FMBDataset,
    "kp": KPDataset,
    "folder": FolderDataset,
}


def register_dataset(layout: str, cls: type[RGBTDataset]) -> None:
    """Add a loader for a new on-disk layout (then name it in a yaml's `layout` key)."""
    if not (isinstance(cls, type) and issubclass(cls, RGBTDataset)):
        raise TypeError(f"{cls!r} is not an RGBTDataset subclass")
    DATASETS[layout] = cls


def resolve_config(name_or_yaml: str | Path | DatasetConfig, root: str | Path) -> DatasetConfig:
    """A config from a built-in name, a yaml path, or `folder` (= <root>/classes.yaml)."""
    if isinstance(name_or_yaml, DatasetConfig):
        return name_or_yaml
    if str(name_or_yaml) == "folder":
        path = Path(root) / "classes.yaml"
        if not path.is_file():
            raise MissingInputError(f"folder dataset {root}: classes.yaml not found ({path})")
        return load_dataset_config(path)
    if not Path(str(name_or_yaml)).suffix and str(name_or_yaml) not in builtin_dataset_names():
        raise InputError(
            f"unknown dataset '{name_or_yaml}': use one of {builtin_dataset_names() + ['folder']} "
            "(folder: <data root>/classes.yaml) or a dataset YAML file"
        )
    return load_dataset_config(name_or_yaml)


def build_dataset(
    name_or_yaml: str | Path | DatasetConfig,
    root: str | Path,
    split: str,
    transform: Transform | None = None,
    *,
    seed: int = 0,
    thermal_source: str | None = None,
    inpaint_zeros: bool | None = None,
    thermal_normalization: ThermalNormalization | None = None,
) -> RGBTDataset:
    """The dataset `split` of `root`.

    name_or_yaml: mfnet | pst900 | fmb | kp | folder (reads <root>/classes.yaml) | a yaml path.
    The keyword options override the yaml's `thermal:` section (PST900: thermal_source=
    "thermal_raw" for the 16-bit images, inpaint_zeros=True for PSTNet's hole filling).
    """
    config = resolve_config(name_or_yaml, root)
    changes: dict[str, Any] = {}
    if thermal_source is not None:
        changes["source"] = thermal_source
    if inpaint_zeros is not None:
        changes["inpaint_zeros"] = bool(inpaint_zeros)
    if thermal_normalization is not None:
        changes["normalization"] = thermal_normalization
        changes["raw_normalization"] = thermal_normalization
    if changes:
        config = config.with_thermal(**changes)
    try:
        cls = DATASETS[config.layout]
    except KeyError:
        raise InputError(
            f"{config.source}: unknown layout '{config.layout}'; known layouts: {sorted(DATASETS)}"
        ) from None
    return cls(root, split, config, transform=transform, seed=seed)


__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "DatasetConfig",
    "FMBDataset",
    "FolderDataset",
    "FolderSplitDataset",
    "HoldoutRule",
    "KPDataset",
    "LabelMap",
    "MFNetDataset",
    "MetricProtocol",
    "PST900Dataset",
    "RGBTDataset",
    "Sample",
    "SampleRecord",
    "ThermalConfig",
    "Transform",
    "build_dataset",
    "collate_samples",
    "load_dataset_config",
    "register_dataset",
    "resolve_config",
]
