"""Runtimes behind the one Segmenter: eager/compiled PyTorch on a checkpoint, ONNX Runtime on
an .onnx export, OpenVINO on an IR (.xml) or .onnx export, TensorRT on a serialised engine.

`open_backend(path)` picks the runtime from the file type (runtime.formats), or takes `backend=`
explicitly.

This package's own module is light (the command-line parsers read runtime.formats through it): the
runtimes, and torch with them, load in the functions that open a model file."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from taseg_ros.devices import BACKENDS
from taseg_ros.errors import InputError, MissingInputError
from taseg_ros.runtime.formats import FORMATS, OTHER_SUFFIXES

if TYPE_CHECKING:
    from taseg_ros.runtime.base import Backend

# File suffix -> the runtime that reads it by default, and the runtimes that can read it (runtime.formats).
SUFFIXES = {
    **{f.suffix: (f.runtime, f.readers) for f in FORMATS.values()},
    **{suffix: (FORMATS[name].runtime, FORMATS[name].readers) for suffix, name in OTHER_SUFFIXES.items()},
}


def backend_for(path: str | Path, backend: str | None = None) -> str:
    """The runtime for a model file: `backend` checked against the file type, or the type's default."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        known = ", ".join(SUFFIXES)
        raise InputError(f"{path}: unknown model file type '{suffix or 'no suffix'}' (expected one of {known})")
    default, readers = SUFFIXES[suffix]
    if backend in (None, "", "auto"):
        return default
    if backend not in BACKENDS:
        raise InputError(f"backend '{backend}' is not one of auto, {', '.join(BACKENDS)}")
    if backend not in readers:
        hint = "export it with `taseg export --format ...`" if suffix == ".safetensors" else f"use {' or '.join(readers)}"
        raise InputError(f"{path}: backend '{backend}' cannot run a {suffix} file; {hint}")
    return backend


def read_export_metadata(path: str | Path, backend: str | None = None):
    """The ExportMetadata of an exported file, without loading its network."""
    from taseg_ros.runtime import metadata
    from taseg_ros.runtime.openvino_backend import check_ir_files

    kind = backend_for(path, backend)
    if kind == "tensorrt":
        return metadata.read_tensorrt_metadata(path)
    if Path(path).suffix.lower() == ".onnx":
        return metadata.read_onnx_metadata(path)
    import openvino as ov

    check_ir_files(Path(path))
    return metadata.read_openvino_metadata(ov.Core().read_model(str(path)), path)


def describe_model_file(path: str | Path) -> dict[str, str]:
    """The string metadata of any model file: a checkpoint's safetensors header or an export's
    own metadata (both carry "config", "classes" and, when known, "dataset")."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"model file not found: {path}")
    if backend_for(path) == "torch":
        from taseg_ros.model.checkpoint import read_metadata

        return read_metadata(path)
    return read_export_metadata(path).to_strings()


def open_backend(
    path: str | Path,
    *,
    backend: str | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    merge_lora: bool = False,
    compile: bool = False,
    sam_checkpoint: str | Path | None = None,
    verify_sam: bool = True,
    threads: int | None = None,
) -> Backend:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"model file not found: {path}")
    kind = backend_for(path, backend)
    # merge_lora/compile concern the PyTorch path only: exports are merged already and
    # optimised by their runtime.
    if kind == "torch":
        from taseg_ros.model.checkpoint import load_checkpoint
        from taseg_ros.runtime.torch_backend import TorchBackend

        model = load_checkpoint(path, sam_checkpoint=sam_checkpoint, verify_sam=verify_sam)
        result = TorchBackend(model, device, precision, merge=merge_lora, compile=compile)
        result.path = path
        return result
    if kind == "onnxruntime":
        from taseg_ros.runtime.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, device, precision, threads)
    if kind == "openvino":
        from taseg_ros.runtime.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(path, device, precision, threads)
    from taseg_ros.runtime.tensorrt_backend import TensorRTBackend

    # An engine's precision is fixed when it is built; the default fp32 request means "as built".
    return TensorRTBackend(path, device if device.startswith("cuda") else "cuda", None if precision == "fp32" else precision)


__all__ = ["BACKENDS", "SUFFIXES", "backend_for", "describe_model_file", "open_backend", "read_export_metadata"]
