"""The ROS 2 side: the code that talks to ROS through rclpy, and what only the node needs.

    node         the lifecycle segmentation node: ROS I/O only (its per-frame work is inference.pipeline's)
    health       what the node knows of its own health (statistics, quality, registration, camera faults)
    inputs       its input path (check, pair or fall back) and inference thread, ROS-free
    publishers   the node's outputs: images raw and compressed, the class list, timing topics
    params       its parameters: one table of defaults, limits, descriptions, live flags
    diagnostics  its /diagnostics report (ROS-free statistics)
    messages     ROS messages from plain data (images, LabelInfo, parameter descriptors, diagnostics)
    start        the taseg_node executable
    client       a private rclpy client for the tools (bag replay, the ROS bench, the demo, tests)
    bench        the node's own per-frame cost next to the model's (python -m taseg_ros.ros.bench)
    domains      a DDS domain of its own for a self-contained run (the demo, the bench, tests)
    qos, transport, names, throttle   QoS presets, the node's DDS transport, ROS name rules, log throttling

rclpy is imported only in ``node``, ``publishers``, ``messages``, ``start``, ``client``, ``bench``
and ``qos``; the other modules import without ROS. The frame layer (codec, pairing) is
``taseg_ros.frames``.
"""
