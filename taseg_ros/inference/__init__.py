"""Inference on numpy frames: the ``Segmenter`` (our pre/post-processing around one runtime's
network forward) and, on top of it, the per-frame ``FramePipeline`` that the node and the tools share.

    segmenter  Segmenter, Prediction (precision names: taseg_ros.devices.PRECISIONS)
    pipeline   FramePipeline, FrameResult, STEPS
"""
from taseg_ros.inference.segmenter import Prediction, Segmenter

__all__ = ["Prediction", "Segmenter"]
