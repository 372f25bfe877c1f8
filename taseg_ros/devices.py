"""Compute devices, precisions and runtimes: the one table of precision names, the runtime (backend)
names, and the one reading of ``--device auto``. Torch is imported only where a device is resolved, so the ROS parameter
checks and the command-line parsers can use the names without loading torch."""
from __future__ import annotations

# Precision name -> torch dtype attribute. `taseg_ros.inference.PRECISIONS` maps the same names
# to the dtypes themselves; every command-line choice, recipe and node parameter uses these keys.
PRECISIONS: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

# Runtimes of the network forward (taseg_ros.runtime); "auto" picks one from the model file's type.
BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
BACKEND_CHOICES = ("auto", *BACKENDS)

DEVICE_CHOICES_HINT = "auto (cuda when available, else cpu), cpu, cuda or cuda:N"


def torch_dtype(precision: str):
    """A precision name -> its torch dtype (the one mapping; torch imported here, not at import time)."""
    import torch

    return getattr(torch, PRECISIONS[precision])


def resolve_device(choice: str) -> str:
    """'auto' -> 'cuda' when CUDA is available, else 'cpu'; any other name is returned as given
    (torch and the Segmenter refuse names they do not know, with their own message)."""
    if choice.strip().lower() != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
