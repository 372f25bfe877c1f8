"""OpenVINO on an exported IR (.xml + .bin) or an exported .onnx file: CPU, GPU or NPU."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from taseg_ros.errors import InputError
from taseg_ros.runtime.base import Backend, require
from taseg_ros.runtime.metadata import check_weights, read_ir_weights_record, read_openvino_metadata

# OpenVINO picks bf16 by itself on CPUs with bf16 instructions; we always pass the hint, and report
# what the compiled model says it runs: a CPU without the instructions runs f32 for a bf16 hint, one
# without fp16 runs bf16 (or f32) for an f16 hint.
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
DEVICES = ("CPU", "GPU", "NPU")


def check_ir_files(xml: Path) -> None:
    """An IR is an XML `<net>` plus its .bin; checked here because OpenVINO would otherwise try
    every frontend (TensorFlow's included) on a foreign file and answer with their noise."""
    with open(xml, "rb") as handle:
        head = handle.read(4096)
    if b"<net" not in head:
        raise InputError(f"{xml}: not an OpenVINO IR (no <net> element; export with `taseg export --format openvino`)")
    if not xml.with_suffix(".bin").is_file():
        raise InputError(f"{xml}: its weights file {xml.with_suffix('.bin').name} is missing beside it")


def op_precisions(compiled) -> dict[str, int]:
    """How many operations of the compiled (runtime) model run in each precision, as OpenVINO says
    (rt_info runtimePrecision): its INFERENCE_PRECISION_HINT is a default, a layer may stay f32."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info:
            name = info["runtimePrecision"].astype(str)
            if name in ("f32", "bf16", "f16"):
                counts[name] = counts.get(name, 0) + 1
    return counts


def _ops_text(counts: dict[str, int]) -> str:
    return "operations: " + ", ".join(f"{n} {p}" for p, n in sorted(counts.items(), key=lambda kv: -kv[1]))


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "fp32", threads: int | None = None) -> None:
        ov = require("openvino", "openvino", self.name)
        self.path = Path(path)
        ov_device = device.upper()
        if ov_device.split(".")[0] not in DEVICES:
            raise InputError(f"openvino device '{device}' is not one of {', '.join(DEVICES)} (e.g. GPU.0)")
        if precision not in HINTS:
            raise InputError(f"precision '{precision}' is not one of {sorted(HINTS)}")
        if self.path.suffix.lower() == ".xml":
            check_ir_files(self.path)
            check_weights(read_ir_weights_record(self.path), self.path, self.path.with_suffix(".bin"))  # what it loads
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses on garbage
            lines = [line for line in str(exc).splitlines() if line.strip() and "Exception from" not in line]
            raise InputError(f"{self.path}: OpenVINO cannot read it ({lines[-1] if lines else type(exc).__name__})") from exc
        meta = read_openvino_metadata(model, self.path)
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads and ov_device == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = core.compile_model(model, ov_device, config)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{self.path}: OpenVINO cannot compile it for {ov_device} at {precision} ({exc})") from exc
        self.request = self.compiled.create_infer_request()
        self.cfg, self.class_info, self.metadata = meta.cfg, meta.class_info, meta
        classes = model.output(0).get_partial_shape()[1]
        self.check_classes(classes.get_length() if classes.is_static else None)
        self.input_hw, self.frame_hw, self.batch = meta.input_hw, meta.frame_hw, meta.batch
        ran = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", "f16"
        self.precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(ran, ran)
        self.op_precisions = op_precisions(self.compiled)
        if self.precision != precision:
            self.precision_note = (f"{precision} asked, OpenVINO runs {self.precision} on {ov_device}: its compiled "
                                   f"execution precision; {_ops_text(self.op_precisions)}")
        self.device_label = ov_device
        self.torch_device = torch.device("cpu")

    def _run(self, rgb: torch.Tensor, thermal: torch.Tensor) -> torch.Tensor:
        feeds = {
            "rgb": np.ascontiguousarray(rgb.detach().cpu().numpy(), dtype=np.float32),
            "thermal": np.ascontiguousarray(thermal.detach().cpu().numpy(), dtype=np.float32),
        }
        result = self.request.infer(feeds)
        # The output tensor is the request's buffer, reused by the next call: copy it out.
        return torch.from_numpy(np.array(result[self.compiled.output(0)], dtype=np.float32, copy=True))

    def release(self) -> None:
        self.request = self.compiled = None
