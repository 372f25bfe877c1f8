"""Segmentation augmentations on the sample dict, numpy + OpenCV, deterministic given a Generator.

Every transform is a callable `(sample, rng) -> sample`. Geometric ones (scale, crop, flip,
resize, pad) move rgb, thermal and label together (label with nearest neighbour, padding with
IGNORE_INDEX); photometric ones touch RGB only: thermal intensities carry temperature.

Hand-written rather than torchvision: these run at dataset level without torch, on numpy
arrays, take their randomness from a numpy Generator (so a sample's augmentation depends only
on (seed, epoch, index)), and must keep thermal/label aligned with RGB.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from taseg_ros.datasets.config import IGNORE_INDEX
from taseg_ros.errors import InputError

Sample = dict


def resize_labels(label: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map (values 0..255) to (h, w)."""
    h, w = size_hw
    if label.shape[:2] == (h, w):
        return label
    if label.size and (label.min() < 0 or label.max() > 255):
        raise InputError(f"resize_labels: values must lie in 0..255, got {label.min()}..{label.max()}")
    # cv2.resize has no int64 support; labels fit uint8 (<= 255 classes incl. IGNORE_INDEX).
    small = label.astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST).astype(label.dtype)


def resize_sample(sample: Sample, size_hw: tuple[int, int]) -> Sample:
    h, w = size_hw
    out = dict(sample)
    out["rgb"] = cv2.resize(sample["rgb"], (w, h), interpolation=cv2.INTER_LINEAR)
    out["thermal"] = cv2.resize(sample["thermal"], (w, h), interpolation=cv2.INTER_LINEAR)
    if sample.get("label") is not None:
        out["label"] = resize_labels(sample["label"], (h, w))
    return out


def pad_sample(sample: Sample, size_hw: tuple[int, int], rgb_fill: int = 0, thermal_fill: float = 0.0) -> Sample:
    """Pad bottom/right up to at least (h, w); label padding is IGNORE_INDEX (no loss, no score)."""
    h, w = sample["rgb"].shape[:2]
    ph, pw = max(size_hw[0] - h, 0), max(size_hw[1] - w, 0)
    if ph == 0 and pw == 0:
        return sample
    out = dict(sample)
    out["rgb"] = np.pad(sample["rgb"], ((0, ph), (0, pw), (0, 0)), constant_values=rgb_fill)
    out["thermal"] = np.pad(sample["thermal"], ((0, ph), (0, pw)), constant_values=thermal_fill)
    if sample.get("label") is not None:
        out["label"] = np.pad(sample["label"], ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
    return out


class Compose:
    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


@dataclass
class Resize:
    """Deterministic resize to (height, width)."""

    height: int
    width: int

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return resize_sample(sample, (self.height, self.width))


@dataclass
class RandomScale:
    """Resize by a factor drawn uniformly from [low, high]."""

    low: float = 0.5
    high: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high:
            raise InputError(f"RandomScale: need 0 < low <= high, got {self.low}, {self.high}")

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        s = rng.uniform(self.low, self.high)
        h, w = sample["rgb"].shape[:2]
        return resize_sample(sample, (max(1, round(h * s)), max(1, round(w * s))))


@dataclass
class RandomCrop:
    """Crop (height, width) at a random position, padding first when the image is smaller."""

    height: int
    width: int

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sample = pad_sample(sample, (self.height, self.width))
        h, w = sample["rgb"].shape[:2]
        y = int(rng.integers(0, h - self.height + 1))
        x = int(rng.integers(0, w - self.width + 1))
        out = dict(sample)
        window = (slice(y, y + self.height), slice(x, x + self.width))
        out["rgb"] = np.ascontiguousarray(sample["rgb"][window])
        out["thermal"] = np.ascontiguousarray(sample["thermal"][window])
        if sample.get("label") is not None:
            out["label"] = np.ascontiguousarray(sample["label"][window])
        return out


@dataclass
class RandomHorizontalFlip:
    p: float = 0.5

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        out = dict(sample)
        for key in ("rgb", "thermal", "label"):
            if sample.get(key) is not None:
                out[key] = np.ascontiguousarray(sample[key][:, ::-1])
        return out


@dataclass
class ColorJitter:
    """Brightness, contrast, saturation (factors in [1-x, 1+x]) and hue (shift in [-x, x] of a
    full turn) on RGB only, applied in that order, each with probability `p`."""

    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.03
    p: float = 0.8

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        # Draw every random number whether or not it is used: the stream stays aligned.
        apply = rng.random(4) < self.p
        factors = rng.uniform(-1.0, 1.0, 4) * np.array([self.brightness, self.contrast, self.saturation, self.hue])
        rgb = sample["rgb"].astype(np.float32)
        if apply[0] and self.brightness:
            rgb *= 1.0 + factors[0]
        if apply[1] and self.contrast:
            mean = float(cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).mean())
            rgb = (rgb - mean) * (1.0 + factors[1]) + mean
        if apply[2] and self.saturation:
            grey = cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
            rgb = (rgb - grey[:, :, None]) * (1.0 + factors[2]) + grey[:, :, None]
        out_rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        if apply[3] and self.hue:
            hsv = cv2.cvtColor(out_rgb, cv2.COLOR_RGB2HSV)  # 8-bit hue is 0..179
            shift = int(round(factors[3] * 180))
            hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int16) + shift) % 180).astype(np.uint8)
            out_rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        out = dict(sample)
        out["rgb"] = out_rgb
        return out


def train_transform(
    crop_hw: tuple[int, int],
    scale: tuple[float, float] = (0.5, 2.0),
    flip: bool = True,
    color_jitter: bool = True,
) -> Compose:
    """The usual semantic-segmentation recipe: random scale, crop (label padded with 255), flip,
    colour jitter on RGB."""
    steps: list = [RandomScale(*scale), RandomCrop(*crop_hw)]
    if flip:
        steps.append(RandomHorizontalFlip())
    if color_jitter:
        steps.append(ColorJitter())
    return Compose(steps)


def eval_transform(size_hw: tuple[int, int] | None = None) -> Compose:
    """Evaluation: nothing, or a deterministic resize (labels nearest)."""
    return Compose([] if size_hw is None else [Resize(*size_hw)])
