"""`taseg export --format onnx|openvino|tensorrt`: a checkpoint as a deployable network file.

The LoRA factors are merged into the frozen weights, the class text embeddings are constants of
the graph, and the input size and batch are fixed (native mode: the export's frame size padded
as FrameTransform pads it; sam1024: 1024x1024). The metadata a node needs travels inside the
file (see runtime.metadata). Every file is loaded back by its runtime and compared with eager
PyTorch (the unmerged checkpoint) on a frame; a file that fails is removed."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from taseg_ros import __version__
from taseg_ros.devices import check_memory
from taseg_ros.errors import InputError, MissingInputError
from taseg_ros.frames.thermal import ThermalPreparation
from taseg_ros.model.checkpoint import describe_checkpoint, load_checkpoint, read_metadata
from taseg_ros.model.inputs import tensor_bytes
from taseg_ros.model.lora import merge_lora
from taseg_ros.model.taseg import TASeg
from taseg_ros.outputs import replacing_files, write_bytes_atomic, write_text_atomic
from taseg_ros.runtime import open_backend
from taseg_ros.runtime.base import require
from taseg_ros.runtime.formats import FORMATS, NETWORK_FORMATS
from taseg_ros.runtime.metadata import RT_INFO_SECTION, ExportMetadata, sidecar_path
from taseg_ros.scenes import scene_pair
from taseg_ros.weights import sha256_file

OPSET = 18
ONNX_PROTO_LIMIT = 2**31 - 2**26  # protobuf's 2 GiB cap, with room for the graph itself
# Acceptance of a reloaded export against eager PyTorch on the verification frame.
MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.95}
MAX_LOGIT_DIFF_FP32 = 1e-3  # relative to the largest |logit|


class _Forward(torch.nn.Module):
    """The exported graph: prepared inputs -> logits, optionally computed in half precision
    (strongly typed fp16 TensorRT networks) with float32 inputs and outputs either way."""

    def __init__(self, model: TASeg, half: bool = False) -> None:
        super().__init__()
        self.model = model.half() if half else model
        self.half = half

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor) -> torch.Tensor:
        if self.half:
            rgb, thermal = rgb.half(), thermal.half()
        return self.model(rgb, thermal).float()


def outputs_of(output: Path, fmt: str) -> list[Path]:
    """Every file an export may write: all fall under the overwrite policy, and all are written
    together (outputs.replacing_files), so a failed export leaves every existing one as it was."""
    if fmt == "onnx":
        return [output, output.with_name(output.name + ".data")]
    if fmt == "openvino":
        return [output, output.with_suffix(".bin")]
    return [output, sidecar_path(output)]


def prepared_inputs(model: TASeg, rgb: np.ndarray, thermal: np.ndarray, batch: int):
    rgb_t = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float().expand(batch, -1, -1, -1)
    thermal01, _ = ThermalPreparation()(thermal, rgb.shape[:2])  # as the node prepares a camera frame
    thermal_t = torch.from_numpy(thermal01).unsqueeze(0).unsqueeze(0).expand(batch, -1, -1, -1)
    rgb_in, thermal_in, geometry = model.preprocess(rgb_t.contiguous(), thermal_t.contiguous())
    return rgb_in.contiguous(), thermal_in.contiguous(), geometry


def write_onnx(module: torch.nn.Module, inputs, path: Path, metadata: dict[str, str], external: bool | None = None) -> None:
    """torch.onnx.export (TorchScript exporter, opset 18: the whole forward exports as is), then
    the metadata as metadata_props; weights over 2 GiB (ViT-H; `external` forces it) go to one
    external data file, whose sha256 the graph records (runtime.metadata.check_weights)."""
    import onnx

    # Traced beside the output (same disk: a full disk shows here, not in /tmp); torch writes
    # ViT-H's tensors as loose files next to the raw graph, hence a folder of its own.
    with tempfile.TemporaryDirectory(prefix=".taseg-trace-", dir=path.parent) as tmp:
        raw = Path(tmp) / "model.onnx"
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                module, inputs, str(raw), opset_version=OPSET, dynamo=False,
                input_names=["rgb", "thermal"], output_names=["logits"], do_constant_folding=True,
            )
        proto = onnx.load(str(raw))
    _add_props(proto, metadata)
    if external is None:
        external = proto.ByteSize() > ONNX_PROTO_LIMIT if hasattr(proto, "ByteSize") else False
    data = path.with_name(path.name + ".data")
    onnx.save_model(proto, str(path), save_as_external_data=external, all_tensors_to_one_file=True, location=data.name)
    if external:  # the graph now points at the data file: record its digest and write the graph again
        _add_props(proto, {"weights": weights_record(data)})
        onnx.save_model(proto, str(path))


def _add_props(proto, metadata: dict[str, str]) -> None:
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def weights_record(path: Path) -> str:
    """The metadata entry that ties a model file to its weights file (runtime.metadata.check_weights)."""
    import json

    return json.dumps({"file": path.name, "sha256": sha256_file(path)})


def write_openvino(onnx_path: Path, path: Path, metadata: dict[str, str]) -> None:
    """OpenVINO IR from the ONNX file, with the metadata in rt_info; weights kept in fp32
    (save_model would compress them to fp16 by default; the precision is a runtime hint)."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    for key, value in metadata.items():
        model.set_rt_info(value, [RT_INFO_SECTION, key])
    ov.save_model(model, str(path), compress_to_fp16=False)
    # The .bin's digest goes into the .xml: saved a second time (the .bin is the same bytes).
    model.set_rt_info(weights_record(path.with_suffix(".bin")), [RT_INFO_SECTION, "weights"])
    ov.save_model(model, str(path), compress_to_fp16=False)


def write_tensorrt(onnx_path: Path, path: Path, metadata: dict[str, str], fp16: bool, strongly_typed: bool,
                   workspace_gib: int = 8) -> None:
    """A serialised engine for this GPU and TensorRT version, built from the ONNX file, plus the
    JSON beside it. fp16: BuilderFlag.FP16 where TensorRT still has it, else a strongly typed
    network from an fp16 graph (see export_model)."""
    import json

    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"{onnx_path}: TensorRT cannot parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InputError(f"{path}: TensorRT could not build an engine (see its log above)")
    write_bytes_atomic(path, bytes(serialized))
    write_text_atomic(sidecar_path(path), json.dumps({**metadata, "weights": weights_record(path)}, indent=1))


def trt_needs_fp16_graph() -> bool:
    """TensorRT releases without BuilderFlag.FP16 (weak typing removed) build fp16 engines only
    from graphs that are fp16 themselves."""
    import tensorrt as trt

    return not hasattr(trt.BuilderFlag, "FP16")


def check_exporter(fmt: str) -> None:
    """Fail before the slow part when the runtime the format needs is missing."""
    for module, extra in FORMATS[fmt].needs:
        require(module, extra, fmt)
    if FORMATS[fmt].device == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--format {fmt} builds the engine for this machine's NVIDIA GPU; CUDA is not available here")


def build_metadata(model: TASeg, checkpoint: Path, geometry, frame_hw, batch: int, precision: str) -> ExportMetadata:
    return ExportMetadata(
        cfg=model.cfg,
        class_info=model.class_info,
        input_hw=tuple(geometry.padded_hw),
        frame_hw=tuple(frame_hw),
        batch=batch,
        precision=precision,
        source={"name": checkpoint.name, "sha256": sha256_file(checkpoint)},
        frozen_source=dict(model.frozen_source.__dict__),
        text_source=model.text_source,
        version=__version__,
        dataset=read_metadata(checkpoint).get("dataset", ""),
    )


def check_export_size(checkpoint: str | Path, size: tuple[int, int], batch: int, fmt: str) -> None:
    """Refuse a --size/--batch whose tensors alone do not fit in memory, before loading anything."""
    if batch < 1:
        raise InputError(f"--batch must be >= 1, got {batch}")
    cfg, class_info, _ = describe_checkpoint(checkpoint)
    width, height = size
    needed = tensor_bytes(cfg, class_info.num_classes, (height, width), batch)
    check_memory(needed, FORMATS[fmt].device,
                 f"--size {width}x{height} --batch {batch}: one forward's input and output tensors",
                 "export for a smaller frame or batch")


def compare_logits(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float]:
    """Argmax agreement (fraction of pixels) and max |logit difference| of two (B,K,H,W) tensors."""
    reference, candidate = reference.float(), candidate.float()
    return {
        "argmax_agreement": float((reference.argmax(1) == candidate.argmax(1)).float().mean()),
        "max_abs_diff": float((reference - candidate).abs().max()),
        "max_abs_logit": float(reference.abs().max()),
    }


def verify_export(path: Path, fmt: str, reference: torch.Tensor, inputs, geometry, precision: str, name: Path | None = None) -> dict:
    """Load the written file with its runtime and compare its logits over the frame with eager PyTorch
    (`name`: the file's final name, for the message)."""
    backend_name, device = FORMATS[fmt].runtime, FORMATS[fmt].device
    # OpenVINO runs at fp32 for the check (its CPU default would be bf16 on bf16-capable CPUs).
    backend = open_backend(path, backend=backend_name, device=device, precision="fp32")
    try:
        candidate = backend.forward(*inputs).to("cpu")
    finally:
        backend.release()
    restore = backend.transform.postprocess
    result = compare_logits(restore(reference.cpu(), geometry), restore(candidate, geometry))
    result.update(runtime=backend.describe(), precision=precision)
    needed = MIN_AGREEMENT.get(precision, MIN_AGREEMENT["fp16"])
    problems = []
    if result["argmax_agreement"] < needed:
        problems.append(f"argmax agreement {result['argmax_agreement']:.4%} < {needed:.1%}")
    if precision == "fp32" and result["max_abs_diff"] > MAX_LOGIT_DIFF_FP32 * max(1.0, result["max_abs_logit"]):
        problems.append(f"max |logit difference| {result['max_abs_diff']:.3g} > {MAX_LOGIT_DIFF_FP32:g} x max |logit|")
    if problems:
        raise InputError(f"{name or path}: the export does not reproduce eager PyTorch ({'; '.join(problems)}); nothing written")
    return result


def export_model(
    checkpoint: str | Path,
    output: str | Path,
    fmt: str,
    *,
    size: tuple[int, int] = (640, 480),
    batch: int = 1,
    precision: str = "fp32",
    sam_checkpoint: str | Path | None = None,
    frame: tuple[np.ndarray, np.ndarray, str] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """Write `checkpoint` as an `fmt` file for a `size` (width, height) frame and verify it on `frame`
    ((rgb, raw thermal, name): the user's own, resized to `size`), by default a procedural street
    scene that ships with the package (real image statistics: edges, regions, sensor noise).
    Returns {"output", "files", "metadata", "verification", "frame"}."""
    if fmt not in NETWORK_FORMATS:
        raise InputError(f"export format '{fmt}' is not one of {sorted(NETWORK_FORMATS)}")
    if precision not in ("fp32", "fp16") or (precision == "fp16" and fmt != "tensorrt"):
        raise InputError(f"--precision {precision}: ONNX and OpenVINO files are fp32 (choose the runtime precision when "
                         "running them); a TensorRT engine is fp32 or fp16")
    checkpoint, output = Path(checkpoint), Path(output)
    if output.suffix.lower() != FORMATS[fmt].suffix:
        raise InputError(f"{output}: --format {fmt} writes a '{FORMATS[fmt].suffix}' file")
    if output.resolve() == checkpoint.resolve():
        raise InputError(f"{output}: the export must not overwrite its source checkpoint")
    if batch < 1:
        raise InputError(f"--batch must be >= 1, got {batch}")
    if not output.parent.is_dir():
        raise MissingInputError(f"{output}: folder {output.parent} does not exist")
    check_exporter(fmt)
    # TensorRT engines are built (and checked) on the GPU; tracing there is also much faster for ViT-H.
    device = FORMATS[fmt].device
    model = load_checkpoint(checkpoint, sam_checkpoint=sam_checkpoint, device=device)
    width, height = size
    rgb, thermal, frame_name = verification_frame(height, width, frame)
    rgb_in, thermal_in, geometry = prepared_inputs(model, rgb, thermal, batch)
    rgb_in, thermal_in = rgb_in.to(device), thermal_in.to(device)
    with torch.inference_mode():
        reference = model(rgb_in, thermal_in)
    metadata = build_metadata(model, checkpoint, geometry, (height, width), batch, precision)
    merged = merge_lora(model)  # in place: the reference logits are taken already
    log(f"exporting {model.cfg.name} ({model.cfg.resolution}) for {width}x{height} frames: input "
        f"{geometry.padded_hw[1]}x{geometry.padded_hw[0]}, batch {batch}, LoRA merged")
    files = outputs_of(output, fmt)
    # Written and verified in a folder beside the output, then renamed into place: an unverified
    # model never lies where a deployment would pick it up, and a failure touches no existing file.
    with replacing_files(files) as stage:
        staged = stage / output.name
        _write(fmt, merged, (rgb_in, thermal_in), staged, metadata.to_strings(), precision)
        log(f"exported; verifying against eager PyTorch on {frame_name} before writing {output}")
        verification = verify_export(staged, fmt, reference, (rgb_in, thermal_in), geometry, precision, name=output)
        written = [p for p in files if (stage / p.name).exists()]
    return {"output": output, "files": written, "metadata": metadata, "verification": verification, "frame": frame_name}


def verification_frame(height: int, width: int, frame: tuple[np.ndarray, np.ndarray, str] | None = None):
    """(rgb, raw thermal, name) at the export's frame size: the given frame resized, or a street scene."""
    if frame is None:
        return (*scene_pair(height, width, seed=0, night=True), "a procedural night street scene (taseg_ros.scenes)")
    rgb, thermal, name = frame
    if rgb.shape[:2] != (height, width):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    if thermal.shape[:2] != (height, width):
        thermal = cv2.resize(thermal, (width, height), interpolation=cv2.INTER_AREA)
    return rgb, thermal, name


def _write(fmt: str, merged: TASeg, inputs, output: Path, strings: dict[str, str], precision: str) -> None:
    if fmt == "onnx":
        write_onnx(_Forward(merged), inputs, output, strings)
        return
    with tempfile.TemporaryDirectory(prefix=".taseg-onnx-", dir=output.parent) as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        if fmt == "openvino":
            write_onnx(_Forward(merged), inputs, onnx_path, strings)
            write_openvino(onnx_path, output, strings)
            return
        fp16 = precision == "fp16"
        strongly_typed = fp16 and trt_needs_fp16_graph()
        write_onnx(_Forward(merged, half=strongly_typed), inputs, onnx_path, strings)
        write_tensorrt(onnx_path, output, strings, fp16, strongly_typed)
