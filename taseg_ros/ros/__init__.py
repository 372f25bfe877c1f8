"""ROS 2 integration: the segmentation node and its ROS-free building blocks.

``pairing``, ``image_codec``, ``diagnostics`` and ``params`` import without ROS (the rosbag tools
reuse them); only ``node`` imports rclpy and message packages.
"""
