"""taseg_ros: TASeg (text-aware RGB-thermal segmentation on SAM) for ROS 2.

The Python API (see README "Python API"):

    from taseg_ros import Segmenter
    seg = Segmenter.from_checkpoint("models/my_model.safetensors")
    result = seg.predict(rgb, thermal)      # numpy arrays, any size
    result.labels, result.probabilities

These names load on first use (torch, segment_anything): `import taseg_ros` and
`taseg --help` stay light (test/test_layers.py checks the modules the command line loads).
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Segmenter", "Prediction", "TASeg", "get_config", "build_model", "load_checkpoint", "save_checkpoint"]

_LAZY = {
    "Segmenter": "taseg_ros.inference",
    "Prediction": "taseg_ros.inference",
    "TASeg": "taseg_ros.model.taseg",
    "build_model": "taseg_ros.model.taseg",
    "get_config": "taseg_ros.model.config",
    "load_checkpoint": "taseg_ros.model.checkpoint",
    "save_checkpoint": "taseg_ros.model.checkpoint",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'taseg_ros' has no attribute '{name}'")
