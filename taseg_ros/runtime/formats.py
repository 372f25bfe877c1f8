"""The model file formats: one table of what each is called, the suffix of its file, the runtime that
reads it (and the others that can), what writing it needs, and where it is built. `taseg export
--format`, `open_backend`'s choice by file suffix, export verification and the benchmark all read
this table. Standard library only: the command-line parsers read it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    suffix: str  # the file `taseg export` writes
    runtime: str  # the runtime (taseg_ros.runtime backend) that reads it by default and verifies an export
    readers: tuple[str, ...]  # every runtime that can read it
    needs: tuple[tuple[str, str], ...] = ()  # (Python module, pip extra) that writing and verifying it need
    device: str = "cpu"  # where an export is built and verified


FORMATS: dict[str, Format] = {
    "safetensors": Format(".safetensors", "torch", ("torch",)),
    "onnx": Format(".onnx", "onnxruntime", ("onnxruntime", "openvino"), (("onnx", "onnx"), ("onnxruntime", "onnxruntime"))),
    "openvino": Format(".xml", "openvino", ("openvino",), (("onnx", "onnx"), ("openvino", "openvino"))),
    "tensorrt": Format(".engine", "tensorrt", ("tensorrt",), (("onnx", "onnx"), ("tensorrt", "gpu")), device="cuda"),
}
# The network exports (runtime.export); safetensors is the checkpoint itself.
NETWORK_FORMATS = tuple(name for name in FORMATS if name != "safetensors")
# Other suffixes TensorRT engines go by.
OTHER_SUFFIXES = {".plan": "tensorrt", ".trt": "tensorrt"}


def format_of_suffix(suffix: str) -> str | None:
    """The format whose files end in `suffix` (any case), or None."""
    suffix = suffix.lower()
    return next((name for name, f in FORMATS.items() if f.suffix == suffix), OTHER_SUFFIXES.get(suffix))
