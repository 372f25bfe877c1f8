"""Reading dataset files with errors that name the file.

OpenCV reads everything (8/16-bit PNG, RGBA PNG, JPEG, TIFF) and returns None instead of
raising on a bad file; these wrappers turn that into a clear error.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from taseg_ros.errors import InputError, MissingInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def read_image(path: Path) -> np.ndarray:
    """Image as stored (IMREAD_UNCHANGED: keeps alpha and 16-bit depth); BGR(A) channel order."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"image file not found: {path}")
    # np.fromfile + imdecode instead of imread: imread also returns None for a missing file or
    # a non-ASCII path on some platforms, which would hide the real cause.
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise InputError(f"{path}: cannot be read as an image (empty, corrupt or not an image file)")
    return image


def to_rgb8(image: np.ndarray, path: Path) -> np.ndarray:
    """A decoded colour image (BGR, BGRA or grey) -> (H, W, 3) uint8 RGB."""
    if image.dtype != np.uint8:
        raise InputError(f"{path}: RGB image must be 8-bit, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[:, :, 2::-1])
    raise InputError(f"{path}: cannot read an RGB image of shape {image.shape}")


def read_rgb(path: Path) -> np.ndarray:
    return to_rgb8(read_image(path), path)


def thermal_single_channel(image: np.ndarray, path: Path) -> np.ndarray:
    """A thermal image stored with 1, 3 or 4 channels -> (H, W), keeping its dtype (float for 3/4)."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        # Grey replicated into 3 channels (KAIST lwir JPEGs): the channel mean, as CRM_RGBTSeg's
        # KP loader does; kept in float so JPEG channel noise is averaged, not truncated.
        return image[:, :, :3].mean(axis=2, dtype=np.float32)
    raise InputError(f"{path}: cannot read a thermal image of shape {image.shape}")


def read_thermal(path: Path) -> np.ndarray:
    return thermal_single_channel(read_image(path), path)


def thermal_for_rgb(thermal: np.ndarray, rgb_hw: tuple[int, int], path) -> np.ndarray:
    """A raw thermal image as `taseg predict` and the dataset loaders use it: resized to the RGB
    size when it differs, and an InputWarning (kind "thermal_resized" / "nonfinite_thermal") for
    that and for an image without one finite pixel (it becomes a blank thermal input)."""
    import warnings

    from taseg_ros.errors import InputWarning
    from taseg_ros.preprocessing import resize_thermal_to

    if thermal.dtype.kind == "f" and not np.isfinite(thermal).any():
        warnings.warn(InputWarning(f"{path}: no finite thermal pixel (all NaN/inf); used as a blank thermal image",
                                   "nonfinite_thermal"), stacklevel=2)
    if thermal.shape[:2] != tuple(rgb_hw):
        warnings.warn(InputWarning(
            f"{path}: thermal is {thermal.shape[1]}x{thermal.shape[0]}, RGB is {rgb_hw[1]}x{rgb_hw[0]}; resizing thermal",
            "thermal_resized"), stacklevel=2)
        thermal = resize_thermal_to(thermal, rgb_hw)
    return thermal


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
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
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


def write_image(path: Path, image: np.ndarray, params: list[int] | None = None) -> None:
    """cv2.imwrite that raises instead of returning False."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, image, params or [])
    if not ok:
        raise OSError(f"{path}: cannot encode an image of shape {image.shape}, dtype {image.dtype}")
    buf.tofile(str(path))
