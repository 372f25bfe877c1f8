"""QoS profiles shared by the node and the bag tools (imports rclpy: load it only where ROS is present)."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def latched_qos() -> QoSProfile:
    """Reliable, transient-local, depth 1: a subscriber that joins late still gets the last message
    (the node's ``class_info``), as ROS 2 "latched" topics behave. Publisher and subscriber must both
    use it, or DDS does not deliver the stored message."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
