"""Dataset files besides the frames: label images, split files, the folder index. Every error names
the file. (Image files themselves are read and written by ``taseg_ros.frames.files``.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from taseg_ros.config_io import read_text
from taseg_ros.errors import InputError, MissingInputError
from taseg_ros.frames.files import IMAGE_EXTENSIONS, read_image


def label_single_channel(image: np.ndarray, path: Path, channel: str = "same") -> np.ndarray:
    """A label image -> (H, W) integer ids.

    channel="same": a multi-channel label must have identical channels (a grey image saved as
    RGB); different channels mean a colour visualisation, which is an error.
    channel="red": use the red channel (FMB's Label/ as MMSFormer reads it: channel 0 of RGB).
    """
    if image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: label image must be 8- or 16-bit integers, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        if image.shape[2] == 1:
            return image[:, :, 0]
        red = image[:, :, 2]
        if channel == "red":
            return np.ascontiguousarray(red)
        if np.array_equal(image[:, :, 0], red) and np.array_equal(image[:, :, 1], red):
            return np.ascontiguousarray(red)
        raise InputError(
            f"{path}: label image has {image.shape[2]} channels with different values; expected "
            "single-channel class ids (is this a colour visualisation?)"
        )
    raise InputError(f"{path}: cannot read a label image of shape {image.shape}")


def read_label(path: Path, channel: str = "same") -> np.ndarray:
    return label_single_channel(read_image(path), path, channel)


def index_by_stem(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> dict[str, Path]:
    """{file stem: path} of the image files in a folder (one listing, not one stat per sample)."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in folder.iterdir():
        if p.suffix.lower() in extensions and p.is_file():
            if p.stem in out:
                raise InputError(f"{folder}: two files for id '{p.stem}': {out[p.stem].name} and {p.name}")
            out[p.stem] = p
    return out


def read_split_file(path: Path) -> list[str]:
    """Ids listed in a split file, one per line; a trailing image extension and folders are dropped
    (MFNet lists `00101D`, CRM's KP lists `set00_V000_I00050.png`)."""
    if not path.is_file():
        raise MissingInputError(f"split file not found: {path}")
    ids: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        name = entry.replace("\\", "/").rsplit("/", 1)[-1]
        stem, dot, ext = name.rpartition(".")
        if dot and ("." + ext.lower()) in IMAGE_EXTENSIONS:
            name = stem
        if name in seen:
            raise InputError(f"{path}:{lineno}: id '{name}' is listed twice")
        seen.add(name)
        ids.append(name)
    return ids
