"""The frame layer: everything that happens to a camera frame or an image file before and after the
network, in one place, for every path (the node, the bag tools, the dataset loaders, predict, eval,
export verification, the benchmarks, the demo).

    thermal   grey rule, normalisation, registration/alignment, ThermalPreparation, FrameNote
    render    the output vocabulary (OUTPUTS), colorize, overlay
    codec     sensor_msgs Image / CompressedImage <-> numpy (duck-typed: rclpy, rosbags, plain objects)
    pairing   RGB/thermal pairing by stamp (StampPairer) and the newest-pair-wins hand-off (LatestSlot)
    files     image files <-> frames
    settings  FrameSettings: what the per-frame work depends on besides the model

numpy + OpenCV (and rosbags-image, for the codec's raw image conversions) only: no torch, no rclpy,
nothing of taseg_ros above the base modules (errors, and outputs for the one atomic file write;
both import nothing but the standard library and errors).
"""
