"""rosbag2 tools for your own RGB-T recordings (``taseg bag info|extract|eval|replay|calibrate|refine``): one module
(or sub-package) per command, over the recording IO they share.

    io/        reading and writing recordings: msgtypes (message types, the rosbags type store),
               reader (sqlite3 and mcap; BagError), topics (which topics are the RGB and the thermal
               camera), messages (build Image / CompressedImage / String messages), writer (always
               finished, even on Ctrl-C), stop (Ctrl-C and SIGTERM at a safe point)
    pairs      RGB/thermal pairs made by the node's StampPairer; the node's real-time policy, simulated
    labels     ground truth from a folder (files named by stamp) or a topic, matched by stamp
    info       `bag info`: is a recording usable (topics, rates, gaps, pairs, stamp offsets)
    extract    `bag extract`: pairs -> the plain folder dataset (rgb/ thermal/ [labels/] classes.yaml splits)
    evaluate/  `bag eval`: run (the per-frame pipeline on every pair, or as a real-time node would),
               result (per-pair results, totals, report.json), output (its recording for RViz /
               Foxglove), report (console, report.md, report.json), plots
    replay     `bag replay`: publish a recording to a running node over DDS, record and measure its outputs
    calibrate  `bag calibrate` (thermal -> RGB homography from a target recording), `bag refine` (on
               ordinary frames), and `bag info`'s registration check

Nothing here imports torch or rclpy at import time.
"""

from taseg_ros.bag.io.reader import BagError, open_bag
from taseg_ros.bag.io.topics import resolve_image_topics
from taseg_ros.bag.io.writer import BagWriter

# The share of a recording's new frames that `bag extract` and `bag select` list in val.txt (the last
# ones of each recording): a default of both commands' settings and --val-fraction options.
DEFAULT_VAL_FRACTION = 0.2

__all__ = ["DEFAULT_VAL_FRACTION", "BagError", "BagWriter", "open_bag", "resolve_image_topics"]
