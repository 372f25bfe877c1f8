"""The QoS profiles of the node and the tools, built on rclpy's presets (imports rclpy: load it only
where ROS is present). The one table: the node's ``input_qos`` / ``output_qos`` parameters, the tools'
publishers and subscriptions (``ros.client``) and the latched class lists all come from here.

    sensor_data   rclpy's qos_profile_sensor_data: best effort, volatile (REP-2003's consumer side)
    best_effort   the same policies, under the name the tools use
    reliable      rclpy's default profile: reliable, volatile
    latched       reliable, transient local: a late subscriber gets the last message, as
                  CameraInfo / LabelInfo are published
"""
from __future__ import annotations

import copy

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPresetProfiles, QoSProfile

from taseg_ros.ros.params import QOS_PRESETS

PRESETS: dict[str, QoSPresetProfiles] = {
    "sensor_data": QoSPresetProfiles.SENSOR_DATA,
    "best_effort": QoSPresetProfiles.SENSOR_DATA,
    "reliable": QoSPresetProfiles.DEFAULT,
}
assert set(PRESETS) == set(QOS_PRESETS), "ros/params.QOS_PRESETS names the parameter choices of this table"


def profile(preset: str, depth: int) -> QoSProfile:
    """The preset's policies, keeping the last ``depth`` messages."""
    qos = copy.copy(PRESETS[preset].value)
    qos.history, qos.depth = HistoryPolicy.KEEP_LAST, depth
    return qos


def latched_qos(depth: int = 1) -> QoSProfile:
    """Reliable, transient local: a subscriber that joins late still gets the last message (the
    node's ``label_info`` and ``class_info``), as ROS 2 "latched" topics behave. Publisher and
    subscriber must both use it, or DDS does not deliver the stored message."""
    qos = profile("reliable", depth)
    qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
    return qos
