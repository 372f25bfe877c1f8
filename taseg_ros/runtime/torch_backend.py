"""Eager (or torch.compile'd) PyTorch: the reference every exported runtime is checked against."""
from __future__ import annotations

import torch

from taseg_ros.devices import CPU_FP16, PRECISIONS, runnable_precision, torch_dtype
from taseg_ros.errors import InputError
from taseg_ros.model.lora import merge_lora
from taseg_ros.model.taseg import TASeg
from taseg_ros.runtime.base import Backend



class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self,
        model: TASeg,
        device: str = "cpu",
        precision: str = "fp32",
        *,
        merge: bool = False,
        compile: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise InputError(f"precision '{precision}' is not one of {sorted(PRECISIONS)}")
        try:
            device = torch.device(device)
        except RuntimeError:
            raise InputError(f"device '{device}': PyTorch runs on cpu, cuda or cuda:N (gpu/npu are OpenVINO devices, "
                             "tensorrt an ONNX Runtime provider)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device 'cuda' requested but CUDA is not available on this machine")
        if device.type == "cpu" and precision == "fp16":  # never native there: refused, not run as fp32
            raise InputError(f"fp16 is not supported on the CPU ({CPU_FP16}); use fp32, or bf16 on a CPU with bf16 "
                             "instructions")
        self.model = model.to(device).eval()
        if merge:  # same function, plain SAM Linears: LoRA costs nothing at inference
            merge_lora(self.model)
        self.cfg = model.cfg
        self.class_info = model.class_info
        self.torch_device = device
        self.device_label = str(device)
        # A precision the device cannot run natively falls back to fp32, said (devices.runnable_precision).
        self.precision, self.precision_note = runnable_precision(precision, str(device))
        self.compiled = compile
        self._forward = torch.compile(self.model) if compile else self.model
        self.path = None

    def describe(self) -> str:
        extras = [e for e, on in (("LoRA merged", getattr(self.model, "lora_merged", False)), ("compiled", self.compiled)) if on]
        return super().describe() + (f" ({', '.join(extras)})" if extras else "")

    def _run(self, rgb: torch.Tensor, thermal: torch.Tensor) -> torch.Tensor:
        dtype = torch_dtype(self.precision)
        with torch.inference_mode(), torch.autocast(self.torch_device.type, dtype=dtype, enabled=dtype != torch.float32):
            return self._forward(rgb, thermal).float()

    def release(self) -> None:
        self.model = self._forward = None
        if self.torch_device.type == "cuda":
            torch.cuda.empty_cache()
