"""Write small dataset trees in each dataset's exact on-disk layout, with real file formats.

For the tests (the plain folder writer is the demo's, taseg_ros.demo.data.write_folder):

    from dataset_fixtures import FixtureFrame, synthetic_frame, write_mfnet
    rng = np.random.default_rng(0)
    frames = {"00001D": synthetic_frame(rng, 48, 64, num_classes=9), ...}
    write_mfnet(tmp / "MFNet", frames, {"train": ["00001D"], "test": [...]})

Labels in a FixtureFrame are the *raw* values as the dataset stores them (FMB: 0 = unlabeled,
1..14 classes; KP: 19 = void). Formats written:
    MFNet   images/<id>.png 4-channel RGBA (thermal in alpha), labels/<id>.png 8-bit grey,
            bare-id split files; or the CMX layout RGB/ Modal/ Label/
    PST900  {train,test}/{rgb,thermal,labels}/<name>.png, optional 16-bit thermal_raw/
    FMB     {train,test}/{Visible,Infrared,Label,color}/<name>.png
    KP      images/setXX/VYYY/{visible,lwir}/IZZZZZ.jpg (lwir: grey in 3 channels, JPEG),
            labels/setXX_VYYY_IZZZZZ.png, split files with `.png` entries as CRM's
    folder  rgb/ thermal/ labels/ classes.yaml split files (+ day.txt / night.txt)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from taseg_ros.demo.data import bgr as _bgr, write_folder, write_label as _write_label, write_split_files as _write_split_files  # noqa: F401
from taseg_ros.frames.files import write_image
from taseg_ros.errors import InputError

__all__ = [
    "FixtureFrame",
    "synthetic_frame",
    "write_fmb",
    "write_folder",
    "write_kp",
    "write_mfnet",
    "write_pst900",
]


@dataclass
class FixtureFrame:
    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    thermal: np.ndarray  # (H, W) uint8 (uint16 or float32 for the folder format)
    label: np.ndarray | None = None  # (H, W) raw label values as the dataset stores them
    thermal_raw: np.ndarray | None = None  # (H, W) uint16, PST900 thermal_raw/

    def __post_init__(self) -> None:
        h, w = self.rgb.shape[:2]
        if self.rgb.shape != (h, w, 3) or self.rgb.dtype != np.uint8:
            raise InputError(f"FixtureFrame.rgb must be (H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        for name in ("thermal", "label", "thermal_raw"):
            a = getattr(self, name)
            if a is not None and a.shape[:2] != (h, w):
                raise InputError(f"FixtureFrame.{name} is {a.shape[:2]}, rgb is {(h, w)}")


def synthetic_frame(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_classes: int,
    label_offset: int = 0,
    num_blobs: int = 4,
) -> FixtureFrame:
    """A frame whose label is a few rectangles of random classes (raw ids offset+0..offset+K-1),
    with RGB and thermal that depend on the label (so a model can learn it) plus noise."""
    label = np.zeros((height, width), np.int64)
    for _ in range(num_blobs):
        c = int(rng.integers(0, num_classes))
        y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        y1 = min(height, y0 + int(rng.integers(height // 8 + 1, height // 2 + 2)))
        x1 = min(width, x0 + int(rng.integers(width // 8 + 1, width // 2 + 2)))
        label[y0:y1, x0:x1] = c
    colours = rng.integers(0, 256, (num_classes, 3))
    temps = np.linspace(30, 230, num_classes)
    rgb = np.clip(colours[label] + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)
    thermal = np.clip(temps[label] + rng.normal(0, 4, (height, width)), 0, 255).astype(np.uint8)
    return FixtureFrame(rgb=rgb, thermal=thermal, label=(label + label_offset).astype(np.uint8))


def write_mfnet(
    root: str | Path,
    frames: Mapping[str, FixtureFrame],
    splits: Mapping[str, Sequence[str]],
    layout: str = "rtfnet",
) -> Path:
    """MFNet: ids like `00001D` / `00002N`. layout "rtfnet" (images/ RGBA + labels/) or "cmx"."""
    root = Path(root)
    for i, f in frames.items():
        if layout == "rtfnet":
            bgra = np.dstack([_bgr(f.rgb), f.thermal.astype(np.uint8)])
            write_image(root / "images" / f"{i}.png", bgra)
            _write_label(root / "labels" / f"{i}.png", f.label)
        elif layout == "cmx":
            write_image(root / "RGB" / f"{i}.png", _bgr(f.rgb))
            write_image(root / "Modal" / f"{i}.png", f.thermal.astype(np.uint8))
            _write_label(root / "Label" / f"{i}.png", f.label)
        else:
            raise InputError(f"write_mfnet: layout must be 'rtfnet' or 'cmx', got {layout!r}")
    _write_split_files(root, splits)
    return root


def write_pst900(
    root: str | Path,
    train: Mapping[str, FixtureFrame],
    test: Mapping[str, FixtureFrame],
) -> Path:
    """PST900: names like `31_bag1a_rect_rgb_frame0000000001`; thermal_raw/ (16-bit) written
    for frames that have `thermal_raw`."""
    root = Path(root)
    for split, frames in (("train", train), ("test", test)):
        for name, f in frames.items():
            d = root / split
            write_image(d / "rgb" / f"{name}.png", _bgr(f.rgb))
            write_image(d / "thermal" / f"{name}.png", f.thermal.astype(np.uint8))
            if f.thermal_raw is not None:
                write_image(d / "thermal_raw" / f"{name}.png", f.thermal_raw.astype(np.uint16))
            _write_label(d / "labels" / f"{name}.png", f.label)
    return root


def write_fmb(
    root: str | Path,
    train: Mapping[str, FixtureFrame],
    test: Mapping[str, FixtureFrame],
    palette: np.ndarray | None = None,
    label_channels: int = 1,
) -> Path:
    """FMB: raw labels 0 (unlabeled) and 1..14; `color/` written when a (14, 3) RGB palette is
    given; label_channels=3 stores Label/ as a grey 3-channel PNG (MMSFormer reads channel 0)."""
    root = Path(root)
    for split, frames in (("train", train), ("test", test)):
        for name, f in frames.items():
            d = root / split
            write_image(d / "Visible" / f"{name}.png", _bgr(f.rgb))
            write_image(d / "Infrared" / f"{name}.png", f.thermal.astype(np.uint8))
            if f.label is not None:
                lab = f.label.astype(np.uint8)
                write_image(d / "Label" / f"{name}.png", np.dstack([lab] * 3) if label_channels == 3 else lab)
                if palette is not None:
                    lut = np.zeros((256, 3), np.uint8)
                    lut[1 : 1 + len(palette)] = palette
                    write_image(d / "color" / f"{name}.png", _bgr(lut[lab]))
    return root


def write_kp(
    root: str | Path,
    frames: Mapping[str, FixtureFrame],
    splits: Mapping[str, Sequence[str]],
    jpeg_quality: int = 95,
) -> Path:
    """KP in CRM's pre-organised layout: ids `setXX_VYYY_IZZZZZ`; split files list `<id>.png`.
    Typical split names: train_day, train_night, val_day, val_night, test_day, test_night,
    train, val, test."""
    root = Path(root)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    for i, f in frames.items():
        parts = i.split("_")
        if len(parts) != 3:
            raise InputError(f"write_kp: id '{i}' is not of the form setXX_VYYY_IZZZZZ")
        s, v, img = parts
        d = root / "images" / s / v
        write_image(d / "visible" / f"{img}.jpg", _bgr(f.rgb), params)
        write_image(d / "lwir" / f"{img}.jpg", np.dstack([f.thermal.astype(np.uint8)] * 3), params)
        _write_label(root / "labels" / f"{i}.png", f.label)
    _write_split_files(root, splits, suffix=".png")
    return root


