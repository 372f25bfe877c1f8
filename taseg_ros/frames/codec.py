"""sensor_msgs/Image and sensor_msgs/CompressedImage <-> numpy, without ROS.

Works on any object with the message fields, so rclpy messages, ``rosbags`` messages and
plain test objects all go through the same code:

- Image: ``encoding, height, width, step, is_bigendian, data``
- CompressedImage: ``format, data`` (detected by the ``format`` attribute, as rosbags-image does)

Decoding
    ``decode_rgb(msg)`` -> (H, W, 3) uint8 RGB, from rgb8/bgr8/rgba8/bgra8/mono8, what colour
    cameras publish raw (``yuv422`` = UYVY, ``yuv422_yuy2`` = YUYV, ``bayer_rggb8``/``bggr8``/
    ``gbrg8``/``grbg8``, converted with OpenCV exactly as cv_bridge does) or a compressed image. ``decode_thermal(msg)`` -> (H, W) uint8/uint16/float32 raw values,
    from mono8/mono16/8UC1/16UC1/32FC1/bgr8/rgb8 or a compressed image (16-bit PNG keeps its
    depth; ``compressedDepth`` PNG from image_transport is read too). ``image_to_array(msg)``
    is the layout-only step (no colour conversion). ``check_image_fields(msg, allowed)`` is the
    cheap O(1) validation used in subscription callbacks, before a frame is paired.

    Raw images with unpadded rows go through ``rosbags.image.image_to_cvimage``. Padded rows
    (``step`` larger than ``width * bytes_per_pixel``) are read by hand because rosbags-image
    ignores ``step``; compressed images are decoded by hand because rosbags-image reads them
    with ``IMREAD_ANYCOLOR`` (16-bit PNG thermal would lose its depth) and asserts on
    undecodable data.

Encoding
    ``encode_image(array, encoding)`` -> ``ImageFields`` (height, width, encoding, step,
    is_bigendian, data as a flat uint8 array viewing the pixels) for mono8/rgb8/bgr8/32FC1/
    mono16. The caller copies ``data`` into its message type (rclpy wants ``array.array('B')``).

Every failure raises ``ImageDecodeError`` (a ``ValueError``) with a message that names the
offending field.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Iterable

import cv2
import numpy as np
from rosbags.image import ImageError as _RosbagsImageError
from rosbags.image import image_to_cvimage

from taseg_ros.errors import TasegError, safe_text
from taseg_ros.frames.thermal import to_single_channel

RGB_ENCODINGS = (
    "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "yuv422_yuy2",
    "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8",
)
THERMAL_ENCODINGS = ("mono8", "mono16", "8UC1", "16UC1", "32FC1", "bgr8", "rgb8")

# encoding -> (numpy dtype, channels)
_LAYOUTS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "8UC3": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "yuv422": (np.dtype(np.uint8), 2),  # U Y0 V Y1 (UYVY): two pixels in four bytes
    "yuv422_yuy2": (np.dtype(np.uint8), 2),  # Y0 U Y1 V (YUYV)
    "bayer_rggb8": (np.dtype(np.uint8), 1),
    "bayer_bggr8": (np.dtype(np.uint8), 1),
    "bayer_gbrg8": (np.dtype(np.uint8), 1),
    "bayer_grbg8": (np.dtype(np.uint8), 1),
}
# Encodings whose pixels come in pairs: an odd width cannot be decoded.
_EVEN_WIDTH = ("yuv422", "yuv422_yuy2")

_TO_RGB = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    # cv_bridge's conversion codes (cv_bridge.cpp, getConversionCode). OpenCV names a Bayer pattern by
    # the 2x2 block starting at the second row and column, so ROS's RGGB (R at the top-left pixel) is
    # OpenCV's BG; test_pipeline's known-colour mosaics check each of the four.
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}

# image_transport's compressed_depth_image_transport prefixes the PNG with a 12-byte
# ConfigHeader (int32 format + float32 depthQuantA, depthQuantB).
_COMPRESSED_DEPTH_HEADER = 12
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_HOST_BIG_ENDIAN = sys.byteorder == "big"


class ImageDecodeError(TasegError, ValueError):
    """An image message that cannot be turned into an array; the message says why. ``reason`` is the
    kind of problem (``encoding``, ``empty``, ``size``, ``step``, ``truncated``, ``data``), so a node
    can count and throttle each kind on its own. Text from the message (its encoding or format) is
    passed through ``errors.safe_text``: a publisher's string must not write control characters
    into a log. ``stream`` ("rgb" / "thermal") is set by ``decode_pair``."""

    def __init__(self, message: str, reason: str = "data") -> None:
        super().__init__(message)
        self.reason = reason
        self.stream = ""


@dataclass(frozen=True)
class ImageFields:
    height: int
    width: int
    encoding: str
    step: int
    is_bigendian: bool
    data: np.ndarray  # flat uint8, C-contiguous


def is_compressed(msg: Any) -> bool:
    return hasattr(msg, "format")


def _data_size(data: Any) -> int:
    try:
        return memoryview(data).nbytes
    except TypeError:
        return len(data)


def check_image_fields(msg: Any, allowed: Iterable[str] | None = None) -> None:
    """Cheap structural checks of a message, without touching the pixels.

    Raw images: known (and allowed) encoding, non-zero size, ``step`` at least one row,
    ``data`` holding ``step * height`` bytes. Compressed images: non-empty ``data``.
    """
    if is_compressed(msg):
        if _data_size(msg.data) == 0:
            raise ImageDecodeError(f"compressed image (format '{safe_text(msg.format)}') has empty data", "empty")
        return
    encoding = str(msg.encoding)
    allowed = tuple(allowed) if allowed is not None else tuple(_LAYOUTS)
    if encoding not in allowed or encoding not in _LAYOUTS:
        raise ImageDecodeError(f"unsupported encoding '{safe_text(encoding)}'; supported: {', '.join(allowed)}", "encoding")
    dtype, channels = _LAYOUTS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"empty image: height={height}, width={width}", "empty")
    if encoding in _EVEN_WIDTH and width % 2:
        raise ImageDecodeError(f"{encoding} packs two pixels in four bytes, but width={width} is odd", "size")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"step={step} is smaller than one row of {width} px x {channels} ch x {dtype.itemsize} B = {row_bytes} B", "step"
        )
    size = _data_size(msg.data)
    if size < step * height:
        raise ImageDecodeError(
            f"truncated data: {size} bytes, expected step * height = {step} * {height} = {step * height}", "truncated"
        )


def image_to_array(msg: Any, allowed: Iterable[str] | None = None) -> np.ndarray:
    """Raw Image -> array in the message's own channel order: (H, W) or (H, W, C), native byte order."""
    check_image_fields(msg, allowed)
    encoding = str(msg.encoding)
    dtype, channels = _LAYOUTS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if step == row_bytes and _data_size(msg.data) == step * height and encoding != "8UC3":
        try:
            return image_to_cvimage(msg)
        except (_RosbagsImageError, TypeError, ValueError) as exc:  # pragma: no cover - checked above
            raise ImageDecodeError(f"cannot read {encoding} image: {exc}") from exc
    # Padded rows: a strided view over the buffer, then one copy to a compact array.
    buffer = np.frombuffer(msg.data, dtype=np.uint8, count=step * height)
    rows = buffer.reshape(height, step)[:, :row_bytes]
    big_endian = bool(msg.is_bigendian)
    array = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if big_endian else "<"))
    shape = (height, width) if channels == 1 else (height, width, channels)
    array = array.reshape(shape)
    return array.astype(dtype, copy=False) if array.dtype != dtype else array


def _decode_compressed(msg: Any) -> np.ndarray:
    fmt = str(msg.format)
    shown = safe_text(fmt)
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    if raw.size == 0:
        raise ImageDecodeError(f"compressed image (format '{shown}') has empty data", "empty")
    if "compresseddepth" in fmt.lower():
        if "32FC1" in fmt:
            raise ImageDecodeError(
                f"compressedDepth 32FC1 (format '{shown}') stores quantised inverse depth, not thermal values; "
                "publish thermal as mono16/16UC1 or use the raw topic"
            )
        raw = raw[_COMPRESSED_DEPTH_HEADER:] if raw[:8].tobytes() != _PNG_MAGIC else raw
    image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageDecodeError(f"compressed image (format '{shown}', {raw.size} bytes) could not be decoded")
    return image  # OpenCV order: BGR / BGRA for colour


def decode_rgb(msg: Any) -> np.ndarray:
    """Image or CompressedImage -> (H, W, 3) uint8 RGB."""
    if is_compressed(msg):
        image = _decode_compressed(msg)
        if image.dtype != np.uint8:
            raise ImageDecodeError(f"compressed RGB image (format '{safe_text(msg.format)}') is {image.dtype}, expected 8-bit")
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    array = image_to_array(msg, RGB_ENCODINGS)
    conversion = _TO_RGB[str(msg.encoding)]
    if conversion is None:
        return np.ascontiguousarray(array)
    return cv2.cvtColor(array, conversion)


def decode_thermal(msg: Any) -> np.ndarray:
    """Image or CompressedImage -> (H, W) raw thermal: uint8, uint16 or float32 (may hold NaN/inf)."""
    if is_compressed(msg):
        image = _decode_compressed(msg)
    else:
        image = image_to_array(msg, THERMAL_ENCODINGS)
    return to_single_channel(image, "thermal image message")


def decode_pair(rgb_msg: Any, thermal_msg: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Both frames of a pair, (rgb, raw thermal), as the node, ``bag extract`` and ``bag select`` take
    them (a missing message, None, stays None). The ImageDecodeError of a frame that cannot be
    decoded says which one in ``stream`` ("rgb" or "thermal")."""
    images = []
    for stream, decode, msg in (("rgb", decode_rgb, rgb_msg), ("thermal", decode_thermal, thermal_msg)):
        try:
            images.append(None if msg is None else decode(msg))
        except ImageDecodeError as exc:
            exc.stream = stream
            raise
    return images[0], images[1]


def encode_image(array: np.ndarray, encoding: str) -> ImageFields:
    """(H, W[, C]) array -> Image fields in host byte order; the array must match the encoding."""
    if encoding not in _LAYOUTS:
        raise ImageDecodeError(f"cannot encode '{encoding}'; supported: {', '.join(_LAYOUTS)}")
    dtype, channels = _LAYOUTS[encoding]
    array = np.asarray(array)
    expected_ndim = 2 if channels == 1 else 3
    if array.dtype != dtype or array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise ImageDecodeError(
            f"array of {array.dtype} {array.shape} does not fit encoding '{encoding}' ({dtype}, {channels} channel(s))"
        )
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    return ImageFields(
        height=height,
        width=width,
        encoding=encoding,
        step=width * channels * dtype.itemsize,
        is_bigendian=_HOST_BIG_ENDIAN,
        data=array.reshape(-1).view(np.uint8),
    )


# Compressed images as image_transport's compressed publisher makes them: JPEG for colour, PNG
# where every value must survive (labels), its default PNG level, colour stored as BGR. The format
# field is the plain codec name ("jpeg", "png"), not image_transport's "rgb8; jpeg compressed bgr8":
# Foxglove documents only the plain names (docs.foxglove.dev CompressedImage; its Lichtblick fork
# failed on the long form, lichtblick#585), and image_transport's subscriber reads a plain name as
# a bgr8 or mono8 image, which these are. This module's decoder reads both.
COMPRESSED_FORMATS = ("jpeg", "png")
PNG_LEVEL = 3


def encode_compressed(array: np.ndarray, encoding: str, fmt: str, jpeg_quality: int = 95) -> tuple[str, bytes]:
    """(H, W) mono8 or (H, W, 3) rgb8 array -> (CompressedImage format, data): colour stored as BGR
    (OpenCV's order), the format the plain codec name."""
    if fmt not in COMPRESSED_FORMATS:
        raise ImageDecodeError(f"cannot compress to '{fmt}'; supported: {', '.join(COMPRESSED_FORMATS)}")
    if encoding not in ("mono8", "rgb8"):
        raise ImageDecodeError(f"cannot compress '{encoding}' images; supported: mono8, rgb8")
    encode_image(array, encoding)  # checks the array fits the encoding
    image = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if encoding == "rgb8" else array
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL]
    ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", image, params)
    if not ok:
        raise ImageDecodeError(f"OpenCV could not encode a {array.shape} {encoding} image as {fmt}")
    return fmt, data.tobytes()
