"""Class lists: names, CLIP prompts and palette of a dataset, in one object.

A class list comes from a dataset config (`training/datasets/<name>.yaml`, selected by
name: mfnet, pst900, kp, fmb) or from a user's YAML file with the same keys:

    classes: [background, person, car]      # required, label ids 0..K-1 in this order
    palette: [[0,0,0], [220,20,60], [0,0,142]]  # optional, RGB; generated when absent
    prompts: [background, person, car]      # optional, the text fed to CLIP
    ignore_index: 255                       # optional, label value that is not scored
"""
from __future__ import annotations

import colorsys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taseg_ros.config_io import read_yaml
from taseg_ros.errors import InputError, MissingInputError
from taseg_ros.resources import training_dir


@dataclass(frozen=True)
class ClassInfo:
    names: tuple[str, ...]
    palette: np.ndarray = field(compare=False)  # (K, 3) uint8, RGB
    prompts: tuple[str, ...] = ()
    ignore_index: int | None = None
    source: str = ""

    def __post_init__(self) -> None:
        k = len(self.names)
        if k < 1:
            raise InputError(f"{self.source or 'class list'}: 'classes' is empty")
        if len(set(self.names)) != k:
            raise InputError(f"{self.source or 'class list'}: duplicate class names in {list(self.names)}")
        if k > 255:
            raise InputError(f"{self.source or 'class list'}: {k} classes; at most 255 fit a mono8 label image")
        if self.palette.shape != (k, 3):
            raise InputError(
                f"{self.source or 'class list'}: 'palette' has {self.palette.shape[0]} colours for {k} classes"
            )
        for kind, texts in (("class name", self.names), ("prompt", self.prompts)):
            bad = next((t for t in texts if _has_control_characters(t)), None)
            if bad is not None:  # they reach terminals, report.md and the node's class_info raw
                raise InputError(f"{self.source or 'class list'}: {kind} {ascii(bad)} contains control characters")
        if not self.prompts:
            object.__setattr__(self, "prompts", tuple(n.replace("_", " ") for n in self.names))
        elif len(self.prompts) != k:
            raise InputError(f"{self.source or 'class list'}: 'prompts' has {len(self.prompts)} entries for {k} classes")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @classmethod
    def from_mapping(cls, data: dict, source: str = "") -> "ClassInfo":
        if not isinstance(data, dict) or "classes" not in data:
            raise InputError(f"{source or 'class list'}: expected a mapping with a 'classes' list")
        if not isinstance(data["classes"], list) or not isinstance(data.get("prompts") or [], list):
            raise InputError(f"{source or 'class list'}: 'classes' (and 'prompts') must be lists of names")
        names = tuple(str(n) for n in data["classes"])
        palette = data.get("palette")
        palette = default_palette(len(names)) if palette is None else np.asarray(palette)
        if palette.ndim != 2 or palette.shape[-1] != 3 or palette.min() < 0 or palette.max() > 255:
            raise InputError(f"{source or 'class list'}: 'palette' must be a list of [r, g, b] in 0..255")
        return cls(
            names=names,
            palette=palette.astype(np.uint8),
            prompts=tuple(str(p) for p in data.get("prompts") or ()),
            ignore_index=data.get("ignore_index"),
            source=source,
        )

    def to_mapping(self) -> dict:
        return {
            "classes": list(self.names),
            "prompts": list(self.prompts),
            "palette": self.palette.astype(int).tolist(),
            "ignore_index": self.ignore_index,
        }


def _has_control_characters(text: str) -> bool:
    """ANSI escapes, newlines, bidi overrides: Unicode categories Cc (control), Cf (format),
    Zl/Zp (line/paragraph separators)."""
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text)


def default_palette(num_classes: int) -> np.ndarray:
    """Distinct colours (golden-ratio hue walk), black for class 0 as in most datasets."""
    colours = [(0, 0, 0)]
    for i in range(1, num_classes):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.asarray(colours[:num_classes], dtype=np.uint8)


def builtin_dataset_names() -> list[str]:
    return sorted(p.stem for p in (training_dir() / "datasets").glob("*.yaml"))


def read_dataset_yaml(name_or_path: str | Path, unknown: str, kind: str) -> tuple[Path, object]:
    """(path, parsed YAML) of a built-in dataset name (`mfnet`, ...: training/datasets/<name>.yaml)
    or of a YAML file; errors say "unknown <unknown> 'x'" and "<kind> file not found: path"."""
    path = Path(name_or_path)
    if not path.suffix:
        builtin = training_dir() / "datasets" / f"{name_or_path}.yaml"
        if not builtin.is_file():
            raise InputError(f"unknown {unknown} '{name_or_path}': use one of {builtin_dataset_names()} or a YAML file")
        path = builtin
    if not path.is_file():
        raise MissingInputError(f"{kind} file not found: {path}")
    return path, read_yaml(path)


def load_classes(name_or_path: str | Path) -> ClassInfo:
    """Class list of a built-in dataset (`mfnet`, `pst900`, `kp`, `fmb`) or of a YAML file."""
    path, data = read_dataset_yaml(name_or_path, "class list", "class list")
    return ClassInfo.from_mapping(data, source=str(path))
