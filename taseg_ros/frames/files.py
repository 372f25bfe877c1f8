"""Image files <-> frames, with errors that name the file.

OpenCV reads everything (8/16-bit PNG, RGBA PNG, JPEG, TIFF) and returns None instead of raising on
a bad file, and ``imwrite`` returns False instead of raising; these wrappers turn both into clear
errors; writes go through the output policy's one atomic write. The dataset loaders, ``taseg predict``, ``taseg bag extract`` and the prediction writers use
them, so a frame read from a file is the frame the node decodes from a message: RGB in RGB order,
thermal through the one grey rule (``thermal.to_single_channel``) at its stored depth.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from taseg_ros.errors import InputError, MissingInputError
from taseg_ros.frames.thermal import to_single_channel
from taseg_ros.outputs import write_bytes_atomic

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


def read_thermal(path: Path) -> np.ndarray:
    """(H, W) raw thermal as stored: uint8, uint16 or float32 (float TIFF, NaN kept)."""
    return to_single_channel(read_image(path), str(path))


def write_image(path: Path, image: np.ndarray, params: list[int] | None = None) -> None:
    """Encode by the file's suffix in memory, then replace the file in one step
    (outputs.write_bytes_atomic: never through a link, a full disk raises OutputPathError naming
    the file). cv2.imwrite would only return False, and write through a link."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, image, params or [])
    if not ok:
        raise InputError(f"{path}: cannot encode an image of shape {image.shape}, dtype {image.dtype} as {path.suffix}")
    write_bytes_atomic(path, buf.tobytes())


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    """(H, W, 3) uint8 RGB -> an image file (OpenCV stores BGR)."""
    write_image(path, np.ascontiguousarray(rgb[:, :, ::-1]))


def write_thermal(folder: Path, stem: str, thermal: np.ndarray) -> Path:
    """Raw thermal at its own depth, losslessly: 8/16-bit PNG, float32 TIFF (NaN/inf kept).
    Returns the file written."""
    if thermal.dtype.kind == "f":
        path = Path(folder) / f"{stem}.tiff"
        write_image(path, thermal.astype(np.float32, copy=False))
    else:
        path = Path(folder) / f"{stem}.png"
        write_image(path, thermal)
    return path


def write_output(path: Path, name: str, image: np.ndarray) -> None:
    """One rendered output (frames.render.OUTPUTS) as a PNG: labels as 8-bit class ids, colour
    images as RGB."""
    if name == "labels":
        write_image(path, image.astype(np.uint8, copy=False))
    else:
        write_rgb(path, image)
