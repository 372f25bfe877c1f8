"""A model to load later, somewhere else: what ``Segmenter.from_checkpoint`` takes, as a small picklable
value, and the digest that names the model's weights.

A fleet worker (a process of this machine or a Ray actor on another) gets a ``ModelSpec`` and loads
the model once (``load``); the device is resolved there ("auto" becomes the GPU Ray gave the worker,
or the CPU). ``digest`` is what a finished recording records, so that a rerun with the same weights
skips it and a changed model recomputes it, whatever path the file was given by.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from taseg_ros.classes import ClassInfo
from taseg_ros.config_io import parse_json
from taseg_ros.devices import resolve_device
from taseg_ros.inference.segmenter import Segmenter
from taseg_ros.model.config import DEFAULT_MAX_INPUT_SIZE
from taseg_ros.runtime import describe_model_file
from taseg_ros.weights import sha256_file

# Files that hold a model's weights beside the one named (OpenVINO's .bin beside its .xml). An ONNX
# graph records the sha256 of its external data file and a TASeg checkpoint that of its SAM weights
# (both checked at load), so hashing the named file covers those.
COMPANION_SUFFIXES = {".xml": (".bin",)}


@dataclass(frozen=True)
class ModelSpec:
    checkpoint: Path
    sam_checkpoint: Path | None = None
    device: str = "auto"  # resolved where the model is loaded
    precision: str = "fp32"
    backend: str | None = None
    merge_lora: bool = False
    max_input_size: int | None = DEFAULT_MAX_INPUT_SIZE
    threads: int | None = None  # CPU threads of the runtime (ONNX Runtime, OpenVINO); None: its default

    def load(self) -> Segmenter:
        return Segmenter.from_checkpoint(
            self.checkpoint, sam_checkpoint=self.sam_checkpoint, device=resolve_device(self.device),
            precision=self.precision, backend=self.backend, merge_lora=self.merge_lora,
            max_input_size=self.max_input_size, threads=self.threads,
        )

    def digest(self) -> str:
        return model_digest(self.checkpoint)

    def class_info(self) -> ClassInfo:
        """The model's classes from its file's metadata, without building the network."""
        return ClassInfo.from_mapping(parse_json(describe_model_file(self.checkpoint)["classes"], "classes"),
                                      source=str(self.checkpoint))


def model_digest(path: str | Path) -> str:
    """sha256 of the model file (and of its companion weight files, in order), hex."""
    path = Path(path)
    files = [path] + [path.with_suffix(s) for s in COMPANION_SUFFIXES.get(path.suffix, ()) if path.with_suffix(s).is_file()]
    if len(files) == 1:
        return sha256_file(path)
    combined = hashlib.sha256()
    for f in files:
        combined.update(f"{f.name}:{sha256_file(f)}\n".encode())
    return combined.hexdigest()
