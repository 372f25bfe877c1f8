"""Procedural RGB-T street scenes with day and night frames: the demo's data, the frame an export is
verified on, the benchmarks' frames. Realistic enough for a network to see image statistics (edges,
regions, sensor noise), generated in milliseconds, shipped with the package (no download).

The point of the data: by day the RGB camera sees everything; at night the RGB image is dark and
noisy and cars and people are close to invisible in it, while the thermal image shows them as warm
as by day. A model that uses the thermal branch should keep its night accuracy; the same model with
the thermal input blanked should lose the objects at night.

numpy only: no torch, no ROS.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taseg_ros.classes import ClassInfo


@dataclass
class SceneFrame:
    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    thermal: np.ndarray  # (H, W) uint8 apparent temperature
    label: np.ndarray | None  # (H, W) uint8 class ids of CLASSES (None: unlabelled)


CLASSES = ClassInfo.from_mapping(
    {
        "classes": ["background", "road", "car", "person"],
        "prompts": ["background", "road", "car", "person"],
        "palette": [[0, 0, 0], [128, 64, 128], [0, 0, 142], [220, 20, 60]],
    },
    source="taseg_ros.scenes",
)
BACKGROUND, ROAD, CAR, PERSON = range(4)

# Apparent temperature (8-bit thermal counts) of each class, day and night alike.
_THERMAL = {BACKGROUND: 70.0, ROAD: 105.0, CAR: 185.0, PERSON: 225.0}


def street_scene(rng: np.random.Generator, height: int, width: int, night: bool) -> SceneFrame:
    """One frame: sky/buildings, a road in perspective, 1-3 cars and 1-3 people."""
    label = np.full((height, width), BACKGROUND, np.uint8)
    horizon = int(height * rng.uniform(0.35, 0.5))
    ys = np.arange(height)[:, None]
    xs = np.arange(width)[None, :]
    spread = (ys - horizon) / max(1, height - horizon)  # 0 at the horizon, 1 at the bottom
    centre = width * rng.uniform(0.4, 0.6)
    road = (ys >= horizon) & (np.abs(xs - centre) <= width * (0.08 + 0.55 * spread))
    label[road] = ROAD
    objects = [(CAR, n) for n in range(int(rng.integers(1, 4)))] + [(PERSON, n) for n in range(int(rng.integers(1, 4)))]
    for cls, _ in objects:
        base_y = int(rng.uniform(horizon + 0.15 * (height - horizon), height - 2))
        depth = (base_y - horizon) / max(1, height - horizon)  # nearer = larger
        if cls == CAR:
            h, w = int(height * (0.08 + 0.22 * depth)), int(width * (0.10 + 0.25 * depth))
        else:
            h, w = int(height * (0.15 + 0.30 * depth)), int(width * (0.04 + 0.06 * depth))
        x0 = int(rng.uniform(0, max(1, width - w)))
        label[max(0, base_y - h) : base_y, x0 : x0 + max(2, w)] = cls

    # RGB: class colours with per-object variation and texture.
    palette = {
        BACKGROUND: rng.uniform([90, 110, 140], [140, 160, 200]),
        ROAD: rng.uniform([80, 80, 80], [120, 120, 120]),
        CAR: rng.uniform([20, 20, 20], [230, 230, 230]),
        PERSON: rng.uniform([40, 30, 30], [200, 160, 140]),
    }
    rgb = np.zeros((height, width, 3), np.float32)
    for cls, colour in palette.items():
        rgb[label == cls] = colour
    rgb += rng.normal(0, 6, rgb.shape)
    thermal = np.zeros((height, width), np.float32)
    for cls, temp in _THERMAL.items():
        thermal[label == cls] = temp + rng.normal(0, 6)
    thermal += rng.normal(0, 5, thermal.shape)
    if night:
        # Low light: almost no signal, strong sensor noise; headlights do not help here.
        rgb = rgb * 0.08 + rng.normal(0, 10, rgb.shape) + 6
        thermal -= 15  # a colder ambient; objects stay warm relative to it
    return SceneFrame(
        rgb=np.clip(rgb, 0, 255).astype(np.uint8),
        thermal=np.clip(thermal, 0, 255).astype(np.uint8),
        label=label,
    )


def scene_pair(height: int, width: int, seed: int = 0, night: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, thermal) of one seeded scene: the export check's and the benchmarks' frame."""
    frame = street_scene(np.random.default_rng(seed), height, width, night)
    return frame.rgb, frame.thermal


def thermal_counts(thermal8: np.ndarray) -> np.ndarray:
    """8-bit thermal -> plausible 16-bit radiometric counts (a Boson-like 7000..14650 range)."""
    return (7000 + 30 * thermal8.astype(np.uint16)).astype(np.uint16)


def scene_pair16(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, 16-bit thermal counts) of one seeded day scene: the benchmarks' frame."""
    rgb, thermal8 = scene_pair(height, width, seed)
    return rgb, thermal_counts(thermal8)


def panned(frame, count: int, width: int, step: int = 3) -> list[SceneFrame]:
    """``count`` crops ``width`` px wide of a wider frame (anything with rgb, thermal and label), each
    ``step`` px further right: a camera turning, the scene moving left by ``step`` px per frame, so
    consecutive frames overlap as a recording's do (flicker and near-duplicate frames mean something)."""
    if frame.rgb.shape[1] < width + step * (count - 1):
        raise ValueError(f"a {frame.rgb.shape[1]} px wide frame is too narrow for {count} crops of {width} px "
                         f"{step} px apart")

    def crop(array, i):
        return None if array is None else array[:, step * i : step * i + width].copy()

    return [SceneFrame(crop(frame.rgb, i), crop(frame.thermal, i), crop(frame.label, i)) for i in range(count)]


def panned_street(height: int, width: int, count: int, step: int = 3, seed: int = 0,
                  night: bool = False) -> list[SceneFrame]:
    """``count`` frames of one street scene panned ``step`` px per frame (see ``panned``)."""
    wide = street_scene(np.random.default_rng(seed), height, width + step * (count - 1), night)
    return panned(wide, count, width, step)
