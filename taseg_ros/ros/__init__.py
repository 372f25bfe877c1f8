"""The ROS 2 side: the code that talks to ROS through rclpy, and what only the node needs.

    node         the lifecycle segmentation node (its per-frame work is inference.pipeline's)
    params       its parameters: one table of defaults, limits, descriptions, live flags
    diagnostics  its /diagnostics report (ROS-free statistics)
    client       a private rclpy client for the tools (bag replay, the ROS bench, the demo, tests)
    bench        the node's own per-frame cost next to the model's (python -m taseg_ros.ros.bench)
    qos, names, throttle   QoS presets, ROS name rules, log throttling

rclpy is imported only here, and only inside ``node``, ``client``, ``bench`` and ``qos``; the other
modules import without ROS. The frame layer (codec, pairing) is ``taseg_ros.frames``.
"""
