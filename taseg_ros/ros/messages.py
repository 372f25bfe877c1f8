"""ROS messages built from the package's plain data: images, compressed images, the class list as
``vision_msgs/LabelInfo``, parameter descriptors. Used by the node, the ROS bench and the tools;
the frames are encoded by ``frames.codec``, the node parameters described by ``ros.params``.
"""
from __future__ import annotations

import array
import math
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from sensor_msgs.msg import CompressedImage, Image

from taseg_ros.config_io import limits_of
from taseg_ros.frames.codec import encode_compressed, encode_image
from taseg_ros.ros.diagnostics import DiagnosticReport
from taseg_ros.ros.params import PARAMETERS, NodeParams, description


def image_message(header: Any, image: np.ndarray, encoding: str) -> Image:
    """A sensor_msgs/Image of ``image`` (as ``cv_bridge::toImageMsg`` fills it) with ``header``."""
    fields = encode_image(image, encoding)
    msg = Image()
    msg.header = header
    msg.height, msg.width, msg.encoding = fields.height, fields.width, fields.encoding
    msg.is_bigendian, msg.step = int(fields.is_bigendian), fields.step
    data = array.array("B")
    data.frombytes(fields.data)  # one copy; assigning bytes would make rclpy check every element
    msg.data = data
    return msg


def compressed_message(header: Any, image: np.ndarray, encoding: str, fmt: str, jpeg_quality: int) -> CompressedImage:
    """A sensor_msgs/CompressedImage as image_transport's compressed publisher makes it."""
    msg = CompressedImage()
    msg.header = header
    msg.format, data = encode_compressed(image, encoding, fmt, jpeg_quality)
    msg.data = array.array("B", data)
    return msg


def diagnostic_array(report: DiagnosticReport, name: str, header: Any, hardware_id: str) -> DiagnosticArray:
    """A /diagnostics message with one status: ``report``'s level, message and key/values."""
    status = DiagnosticStatus(level=bytes([report.level]), name=name, message=report.message, hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=v) for k, v in report.values.items()])
    return DiagnosticArray(header=header, status=[status])


def vision_msgs_missing() -> str | None:
    """None when vision_msgs imports, else what to install (said once by the node)."""
    try:
        import vision_msgs.msg  # noqa: F401 - optional: pip-only installs may lack it
    except ImportError:
        return ("vision_msgs is not importable, so ~/label_info (vision_msgs/LabelInfo) is not published "
                "(~/class_info still is): sudo apt install ros-$ROS_DISTRO-vision-msgs")
    return None


def label_info_message(header: Any, names: list[str], threshold: float) -> Any:
    """vision_msgs/LabelInfo: every class id with its name, and the confidence threshold in use."""
    from vision_msgs.msg import LabelInfo, VisionClass

    msg = LabelInfo()
    msg.header = header
    msg.class_map = [VisionClass(class_id=i, class_name=name) for i, name in enumerate(names)]
    msg.threshold = float(threshold)
    return msg


def parameter_descriptor(name: str) -> ParameterDescriptor:
    """The ROS descriptor of a node parameter from its row in ros/params.NodeParams: the description
    `ros2 param describe` shows and the numeric range ROS itself enforces on `ros2 param set`.

    Never read-only: the parameters read at configure may change while the node is unconfigured
    (the node refuses them, with the reason, while it is configured). Dynamic typing: a params file
    with `slop: 1` or `thermal_range: [0, 65535]` must not kill the node at start-up; values are
    checked (with a clear message) when set and at configure. ROS ranges are inclusive: a strict
    limit (> 0) becomes the next representable number."""
    limits = limits_of(PARAMETERS[name])
    descriptor = ParameterDescriptor(name=name, description=description(name), dynamic_typing=True)
    if limits is None or all(v is None for v in (limits.ge, limits.gt, limits.le, limits.lt)):
        return descriptor
    low = limits.ge if limits.ge is not None else (math.nextafter(limits.gt, math.inf) if limits.gt is not None else -math.inf)
    high = limits.le if limits.le is not None else (math.nextafter(limits.lt, -math.inf) if limits.lt is not None else math.inf)
    if isinstance(NodeParams.defaults()[name], int) and not isinstance(NodeParams.defaults()[name], bool):
        descriptor.integer_range = [IntegerRange(from_value=int(math.ceil(max(low, -2**63))),
                                                 to_value=int(min(high, 2**63 - 1)), step=1)]
    else:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    return descriptor
