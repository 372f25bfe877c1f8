"""The ROS 2 message types the bag tools read and write, and the ``rosbags`` type store behind them.

Messages are (de)serialised with the ROS 2 Kilted type store: ``sensor_msgs/Image``,
``sensor_msgs/CompressedImage``, ``std_msgs/String`` and ``std_msgs/Header`` are identical (same
RIHS01 hash) in Humble, Jazzy and Kilted, so bags from any of them read the same way.
"""

from __future__ import annotations

from taseg_ros.errors import InputError

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"
FLOAT32 = "std_msgs/msg/Float32"  # bag eval's per-frame figures: one plottable number per topic
FLOAT32_ARRAY = "std_msgs/msg/Float32MultiArray"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)


def typestore(distro: str = "kilted"):
    """The ``rosbags`` type store of a ROS 2 distribution (humble, jazzy, kilted, ...)."""
    from rosbags.typesys import Stores, get_typestore

    try:
        return get_typestore(Stores[f"ROS2_{distro.upper()}"])
    except KeyError:
        known = sorted(s.name[5:].lower() for s in Stores if s.name.startswith("ROS2_"))
        raise InputError(f"unknown ROS 2 distribution '{distro}'; known: {', '.join(known)}") from None


_TYPESTORE = None


def default_typestore():
    global _TYPESTORE
    if _TYPESTORE is None:
        _TYPESTORE = typestore("kilted")
    return _TYPESTORE
