"""Building ``rosbags`` message objects to write into a recording (Header, Image, CompressedImage, String,
Float32, Float32MultiArray)."""

from __future__ import annotations

import numpy as np

from taseg_ros.bag.io.msgtypes import COMPRESSED_IMAGE, FLOAT32, FLOAT32_ARRAY, IMAGE, STRING, default_typestore
from taseg_ros.errors import InputError
from taseg_ros.frames.codec import encode_image
from taseg_ros.frames.pairing import NS_PER_S


def make_header(stamp_ns: int, frame_id: str):
    ts = default_typestore()
    time_cls = ts.types["builtin_interfaces/msg/Time"]
    header_cls = ts.types["std_msgs/msg/Header"]
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return header_cls(stamp=time_cls(sec=sec, nanosec=nanosec), frame_id=frame_id)


def image_message(stamp_ns: int, frame_id: str, array: np.ndarray, encoding: str):
    """A rosbags ``sensor_msgs/msg/Image`` holding ``array`` (layout checked against ``encoding``)."""
    fields = encode_image(array, encoding)
    return default_typestore().types[IMAGE](
        header=make_header(stamp_ns, frame_id),
        height=fields.height,
        width=fields.width,
        encoding=fields.encoding,
        is_bigendian=int(fields.is_bigendian),
        step=fields.step,
        data=fields.data,
    )


def compressed_message(stamp_ns: int, frame_id: str, array: np.ndarray, encoding: str, codec: str = "png"):
    """A rosbags ``sensor_msgs/msg/CompressedImage`` as image_transport's compressed plugin writes it:
    format ``"<encoding>; <codec> compressed <stored encoding>"``. ``array`` is RGB for rgb8/bgr8."""
    import cv2

    codec = codec.lower()
    if codec not in ("png", "jpeg"):
        raise InputError(f"codec must be png or jpeg, got {codec!r}")
    stored = encoding
    image = array
    if array.ndim == 3:
        image = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
        stored = "bgr8"
    if codec == "jpeg" and image.dtype != np.uint8:
        raise InputError("jpeg needs 8-bit images; use png for 16-bit thermal")
    ok, buffer = cv2.imencode(".png" if codec == "png" else ".jpg", image)
    if not ok:
        raise InputError(f"cannot encode a {array.shape} {array.dtype} image as {codec}")
    return default_typestore().types[COMPRESSED_IMAGE](
        header=make_header(stamp_ns, frame_id),
        format=f"{encoding}; {codec} compressed {stored}",
        data=buffer.reshape(-1),
    )


def string_message(text: str):
    return default_typestore().types[STRING](data=text)


def float32_message(value: float):
    return default_typestore().types[FLOAT32](data=float(value))


def float32_array_message(values, label: str):
    """A one-dimensional ``std_msgs/msg/Float32MultiArray``; ``label`` names its dimension."""
    types = default_typestore().types
    data = np.asarray(values, dtype=np.float32).reshape(-1)
    dim = types["std_msgs/msg/MultiArrayDimension"](label=label, size=data.size, stride=data.size)
    layout = types["std_msgs/msg/MultiArrayLayout"](dim=[dim], data_offset=0)
    return types[FLOAT32_ARRAY](layout=layout, data=data)
