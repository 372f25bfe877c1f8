"""ONNX Runtime on an exported .onnx file: CPU, CUDA or TensorRT execution provider."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from taseg_ros.errors import InputError
from taseg_ros.runtime.base import Backend, require
from taseg_ros.runtime.metadata import check_weights, onnx_external_data, read_onnx_metadata

# Our device names -> ONNX Runtime provider lists (each falls back to the CPU for unsupported nodes).
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "fp32", threads: int | None = None) -> None:
        ort = require("onnxruntime", "onnxruntime", self.name)
        self.path = Path(path)
        meta = read_onnx_metadata(self.path)
        if meta.weights:  # the data file the graph names is what ONNX Runtime loads
            check_weights(meta.weights, self.path, onnx_external_data(self.path) or self.path)
        device = device.split(":")[0].lower()
        if device not in PROVIDERS:
            raise InputError(f"onnxruntime device '{device}' is not one of {sorted(PROVIDERS)}")
        wanted = PROVIDERS[device]
        if wanted[0] not in ort.get_available_providers():
            raise InputError(
                f"{wanted[0]} is not available in this onnxruntime ({', '.join(ort.get_available_providers())}); "
                "on an NVIDIA GPU install onnxruntime-gpu (pip install 'taseg_ros[gpu]')"
            )
        if precision == "fp16" and device == "tensorrt":
            options = {"trt_fp16_enable": True}
        elif precision != meta.precision:
            raise InputError(f"{self.path}: onnxruntime runs this file at {meta.precision}; precision '{precision}' is not available")
        else:
            options = {}
        providers = [(p, options) if p == "TensorrtExecutionProvider" else p for p in wanted]
        session_options = ort.SessionOptions()
        if threads:
            session_options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), session_options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise InputError(f"{self.path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from exc
        self.cfg, self.class_info, self.metadata = meta.cfg, meta.class_info, meta
        self.check_classes(self.session.get_outputs()[0].shape[1])
        self.input_hw, self.frame_hw, self.batch = meta.input_hw, meta.frame_hw, meta.batch
        self.precision = precision
        self.device_label = self.session.get_providers()[0]
        self.torch_device = torch.device("cpu")

    def _run(self, rgb: torch.Tensor, thermal: torch.Tensor) -> torch.Tensor:
        feeds = {
            "rgb": np.ascontiguousarray(rgb.detach().cpu().numpy(), dtype=np.float32),
            "thermal": np.ascontiguousarray(thermal.detach().cpu().numpy(), dtype=np.float32),
        }
        (logits,) = self.session.run(["logits"], feeds)
        return torch.from_numpy(logits)

    def release(self) -> None:
        self.session = None
