"""rosbag2 tools for your own RGB-T recordings (``taseg bag info|extract|eval|replay``).

    msgtypes  the message types read and written, and the rosbags type store
    reader    open and read recordings (sqlite3, mcap) with ``rosbags``; BagError
    topics    which image topics are the RGB and the thermal camera (given or guessed)
    messages  build Header / Image / CompressedImage / String messages to write
    writer    write a recording that is always finished, even on Ctrl-C
    stop      Ctrl-C: stop a long loop at a safe point
    pairs     RGB/thermal pairs made by the node's StampPairer; the node's real-time policy, simulated
    info      is a recording usable: topics, rates, gaps, pairs and stamp offsets
    extract   pairs -> the plain folder dataset (rgb/ thermal/ [labels/] classes.yaml splits)
    labels    ground truth from a folder (files named by stamp) or a topic, matched by stamp
    evaluate     `bag eval`: run the per-frame pipeline on every pair (or as a real-time node would), score, time
    eval_result  what it found: per-pair results, totals, timing summaries, report.json's dictionary
    eval_output  its output recording for RViz / Foxglove (inputs, predictions, ground truth)
    eval_report  its console summary, report.md, report.json; eval_plots: the timing plot
    replay    publish a recording to a running node over DDS, record and measure its outputs
    fixtures  write realistic two-camera recordings (tests, demos)

Nothing here imports torch or rclpy at import time.
"""

from taseg_ros.bag.reader import BagError, open_bag
from taseg_ros.bag.topics import resolve_image_topics
from taseg_ros.bag.writer import BagWriter

__all__ = ["BagError", "BagWriter", "open_bag", "resolve_image_topics"]
