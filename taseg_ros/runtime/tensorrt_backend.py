"""A serialised TensorRT engine (written by `taseg export --format tensorrt`) on an NVIDIA GPU.

Inputs and outputs stay torch CUDA tensors (no host round trip): the engine reads and writes
their memory on torch's current stream. Written against the TensorRT >= 10 tensor-address API
(set_tensor_address / execute_async_v3); it cannot run without a GPU, so CPU-only machines
never import tensorrt."""
from __future__ import annotations

from pathlib import Path

import torch

from taseg_ros.config_io import read_bytes
from taseg_ros.errors import InputError
from taseg_ros.runtime.base import Backend, require
from taseg_ros.runtime.metadata import check_weights, read_tensorrt_metadata


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if dtype not in table:
        raise InputError(f"unsupported TensorRT tensor type {dtype}")
    return table[dtype]


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: str | Path, device: str = "cuda", precision: str | None = None) -> None:
        self.path = Path(path)
        meta = read_tensorrt_metadata(self.path)
        check_weights(meta.weights, self.path, self.path)  # the engine holds its weights
        if not torch.cuda.is_available():
            raise InputError(f"{self.path}: a TensorRT engine needs an NVIDIA GPU; CUDA is not available here")
        trt = require("tensorrt", "gpu", self.name)
        if precision not in (None, meta.precision):
            raise InputError(f"{self.path}: this engine was built for {meta.precision}; precision '{precision}' needs another export")
        self.torch_device = torch.device(device if device.startswith("cuda") else "cuda")
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.torch_device):
            self.engine = self._runtime.deserialize_cuda_engine(read_bytes(self.path, limit=None))
            if self.engine is None:
                raise InputError(f"{self.path}: TensorRT cannot deserialise it (corrupt, or built by another TensorRT version/GPU)")
            self.context = self.engine.create_execution_context()
        self.io = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self.io[name] = (tuple(self.engine.get_tensor_shape(name)), _torch_dtype(trt, self.engine.get_tensor_dtype(name)))
        if set(self.io) != {"rgb", "thermal", "logits"}:
            raise InputError(f"{self.path}: engine tensors {sorted(self.io)} are not TASeg's rgb/thermal/logits")
        self.cfg, self.class_info, self.metadata = meta.cfg, meta.class_info, meta
        self.check_classes(self.io["logits"][0][1])
        self.input_hw, self.frame_hw, self.batch = meta.input_hw, meta.frame_hw, meta.batch
        self.precision = meta.precision
        self.device_label = f"{torch.cuda.get_device_name(self.torch_device)} (TensorRT {trt.__version__})"

    def _run(self, rgb: torch.Tensor, thermal: torch.Tensor) -> torch.Tensor:
        inputs = {
            "rgb": rgb.to(self.torch_device, self.io["rgb"][1]).contiguous(),
            "thermal": thermal.to(self.torch_device, self.io["thermal"][1]).contiguous(),
        }
        shape, dtype = self.io["logits"]
        logits = torch.empty(shape, dtype=dtype, device=self.torch_device)
        for name, tensor in inputs.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        self.context.set_tensor_address("logits", logits.data_ptr())
        stream = torch.cuda.current_stream(self.torch_device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        return logits.float()  # keeps `inputs` alive until the stream has consumed them (torch orders the stream)

    def release(self) -> None:
        self.context = self.engine = None
        torch.cuda.empty_cache()
