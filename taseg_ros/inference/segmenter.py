"""The Python API: a trained TASeg on numpy images.

    from taseg_ros import Segmenter
    seg = Segmenter.from_checkpoint("models/mfnet_vit_b.safetensors")
    pred = seg.predict(rgb, thermal)          # rgb (H,W,3) uint8; thermal (H,W) 8/16-bit or float
    pred.labels                               # (H,W) uint8 class ids
    seg.class_info.names[pred.labels[y, x]]

Any frame size works: the model's own ``preprocess`` pads (native mode) or resizes and pads
(SAM 1024 mode), and its ``postprocess`` maps the logits back to the input frame. Raw thermal of
any dtype is prepared by ``frames.thermal.ThermalPreparation`` (the Segmenter's normalisation
policy, or one given per call);
``predict_prepared`` takes thermal that is already in [0, 1] on the RGB grid (what the dataset
loaders give and what ``inference.pipeline.FramePipeline`` passes after timing that step).

The same API runs exported files (``taseg export``): ``Segmenter.from_checkpoint("m.onnx")``
uses ONNX Runtime, ``.xml`` OpenVINO, ``.engine`` TensorRT (see taseg_ros.runtime); the
pre/post-processing stays this module's, only the network forward changes runtime.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taseg_ros.classes import ClassInfo
from taseg_ros.errors import InputError
from taseg_ros.frames.thermal import ThermalNormalization, ThermalPreparation
from taseg_ros.model.config import DEFAULT_MAX_INPUT_SIZE
from taseg_ros.model.inputs import FrameTransform
from taseg_ros.model.taseg import TASeg
from taseg_ros.runtime import open_backend
from taseg_ros.runtime.base import Backend
from taseg_ros.runtime.torch_backend import TorchBackend


def normalized_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) class probabilities -> (B, H, W) entropy divided by log K, in [0, 1]: 0 = one class
    has all the probability, 1 = uniform (0 for K = 1). The one implementation: bag eval's quality
    figures, the node's and bag select's uncertainty all read it from Prediction.entropy."""
    classes = probabilities.shape[1]
    entropy = torch.special.entr(probabilities).sum(dim=1)  # entr: -p log p, 0 at p = 0
    return entropy / math.log(classes) if classes > 1 else entropy.zero_()


@dataclass
class Prediction:
    labels: np.ndarray  # (H, W) uint8
    confidence: np.ndarray  # (H, W) float32, probability of the chosen class
    probabilities: np.ndarray | None = None  # (K, H, W) float32
    entropy: np.ndarray | None = None  # (H, W) float32, entropy of the class probabilities / log K, in [0, 1]
    entropy_s: float = 0.0  # seconds spent on the entropy map (per frame of the batch): not the node's work


class Segmenter:
    """A TASeg ready for inference: our pre/post-processing around one runtime's network forward.

    ``Segmenter(model, device, precision)`` runs a TASeg nn.Module with PyTorch;
    ``Segmenter.from_checkpoint(path, backend=...)`` opens any model file: a checkpoint
    (PyTorch, optionally LoRA-merged or torch.compile'd) or an export (``taseg export``: ONNX
    Runtime, OpenVINO, TensorRT; see taseg_ros.runtime). Every runtime returns the same
    ``Prediction``. ``thermal_norm`` is the default normalisation policy for raw thermal;
    ``resolution`` overrides the config's resolution mode of a PyTorch model (one set of weights
    serves both; exports have theirs fixed). ``merge_lora`` merges the given model's LoRA in place
    (model.lora.merge_lora): pass a copy if the unmerged model is still needed. ``max_input_size``
    (longest side in pixels; 0 or None: no limit) caps the network input of a runtime that takes
    any size: larger frames are resized down before the network and the labels come back at the
    frame's size (model.inputs.FrameTransform; an export's fixed input size is its own limit)."""

    def __init__(
        self,
        model: TASeg | Backend,
        device: str = "cpu",
        precision: str = "fp32",
        *,
        thermal_norm: ThermalNormalization | None = None,
        resolution: str | None = None,
        merge_lora: bool = False,
        compile: bool = False,
        max_input_size: int | None = DEFAULT_MAX_INPUT_SIZE,
    ) -> None:
        if isinstance(model, Backend):
            self.backend = model
        else:
            self.backend = TorchBackend(model, device, precision, merge=merge_lora, compile=compile)
        cfg = self.backend.cfg
        if resolution is not None and resolution != cfg.resolution:
            if self.backend.input_hw is not None:
                raise InputError(f"{self.backend.path}: exported for {cfg.resolution} resolution; re-export for {resolution}")
            cfg = cfg.replace(resolution=resolution)
        self.cfg = cfg
        self.transform = FrameTransform(cfg, max_input_size if self.backend.input_hw is None else None)
        self.thermal = ThermalPreparation(thermal_norm)
        self._released = False

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        sam_checkpoint: str | Path | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        verify_sam: bool = True,
        thermal_norm: ThermalNormalization | None = None,
        backend: str | None = None,
        merge_lora: bool = False,
        compile: bool = False,
        threads: int | None = None,
        max_input_size: int | None = DEFAULT_MAX_INPUT_SIZE,
    ) -> "Segmenter":
        """Any model file: the runtime follows the file type (.safetensors torch, .onnx onnxruntime,
        .xml openvino, .engine tensorrt) unless `backend` names one that reads it. `device` is the
        runtime's: cpu/cuda[:N] (torch), cpu/cuda/tensorrt (onnxruntime EPs), cpu/gpu/npu (openvino)."""
        runtime = open_backend(
            path, backend=backend, device=device, precision=precision, merge_lora=merge_lora, compile=compile,
            sam_checkpoint=sam_checkpoint, verify_sam=verify_sam, threads=threads,
        )
        return cls(runtime, thermal_norm=thermal_norm, max_input_size=max_input_size)

    @property
    def model(self) -> TASeg | None:
        """The nn.Module of a PyTorch runtime (None for exported files and after release)."""
        return None if self._released else getattr(self.backend, "model", None)

    @property
    def device(self) -> torch.device:
        """Where pre/post-processing runs (the runtime's own device is in `describe()`)."""
        return self.backend.torch_device

    @property
    def precision(self) -> str:
        """The precision the runtime actually computes in."""
        return self.backend.precision

    def describe(self) -> str:
        """One line: runtime, device, precision (what ran), fixed input size."""
        return self.backend.describe()

    @property
    def class_info(self) -> ClassInfo:
        return self.backend.class_info

    def predict(
        self,
        rgb: np.ndarray,
        thermal: np.ndarray,
        thermal_norm: ThermalNormalization | None = None,
        return_probabilities: bool = False,
    ) -> Prediction:
        """rgb (H, W, 3) uint8 and raw thermal (H, W) on the RGB grid, any dtype (FramePipeline takes
        thermal of any size and registers or resizes it)."""
        return self.predict_batch([rgb], [thermal], thermal_norm, return_probabilities)[0]

    def predict_batch(
        self,
        rgbs: list[np.ndarray],
        thermals: list[np.ndarray],
        thermal_norm: ThermalNormalization | None = None,
        return_probabilities: bool = False,
    ) -> list[Prediction]:
        if len(rgbs) != len(thermals) or not rgbs:
            raise InputError(f"need equally many RGB and thermal frames, got {len(rgbs)} and {len(thermals)}")
        prepare = self.thermal if thermal_norm is None else ThermalPreparation(thermal_norm)
        prepared = []
        for i, (rgb, thermal) in enumerate(zip(rgbs, thermals)):
            if thermal.shape[:2] != rgb.shape[:2]:  # FramePipeline resizes or registers (and says so)
                raise InputError(f"frame {i}: thermal {thermal.shape[:2]} is not on the RGB grid {rgb.shape[:2]}; "
                                 "register/resize it first, or use inference.pipeline.FramePipeline")
            prepared.append(prepare(thermal, rgb.shape[:2])[0])
        return self.predict_prepared_batch(rgbs, prepared, return_probabilities)

    def predict_prepared(self, rgb: np.ndarray, thermal01: np.ndarray, return_probabilities: bool = False,
                         return_entropy: bool = False) -> Prediction:
        """rgb (H, W, 3) uint8 and thermal already normalised to [0, 1] on the RGB grid."""
        return self.predict_prepared_batch([rgb], [thermal01], return_probabilities, return_entropy)[0]

    @torch.inference_mode()
    def predict_prepared_batch(
        self, rgbs: list[np.ndarray], thermals01: list[np.ndarray], return_probabilities: bool = False,
        return_entropy: bool = False,
    ) -> list[Prediction]:
        """``return_entropy``: also the per-pixel entropy of the class probabilities divided by log K
        (the label-free uncertainty of evaluation.quality), computed here from the softmax already on
        the device: one (H, W) map comes back instead of the (K, H, W) probabilities."""
        if self._released:
            raise RuntimeError("this Segmenter was released")
        rgb_in, thermal_in, geometry = self.prepare(rgbs, thermals01)
        logits = self.forward(rgb_in, thermal_in).to(self.device)
        probabilities = self.transform.postprocess(logits.float(), geometry).softmax(dim=1)
        confidence, labels = probabilities.max(dim=1)
        labels = labels.to(torch.uint8).cpu().numpy()
        confidence = confidence.cpu().numpy()
        probs = probabilities.cpu().numpy() if return_probabilities else None
        entropy, entropy_s = None, 0.0
        if return_entropy:  # timed on its own (the labels' copy above waited for the forward)
            start = time.perf_counter()
            entropy = normalized_entropy(probabilities).cpu().numpy()
            entropy_s = (time.perf_counter() - start) / len(rgbs)
        return [
            Prediction(labels[i], confidence[i], probs[i] if probs is not None else None,
                       entropy[i] if entropy is not None else None, entropy_s)
            for i in range(len(rgbs))
        ]

    def prepare(self, rgbs: list[np.ndarray], thermals01: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Frames -> the network's inputs and their geometry (the model's own preprocess), checked
        against an exported model's fixed input size."""
        rgb_t, thermal_t = self._to_tensors(rgbs, thermals01)
        rgb_in, thermal_in, geometry = self.transform.preprocess(rgb_t, thermal_t)
        self.backend.check_geometry(geometry)
        return rgb_in, thermal_in, geometry

    def forward(self, rgb_in: torch.Tensor, thermal_in: torch.Tensor) -> torch.Tensor:
        """The network alone, on prepared inputs, at this Segmenter's precision."""
        return self.backend.forward(rgb_in, thermal_in)

    def _to_tensors(self, rgbs: list[np.ndarray], thermals01: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = rgbs[0].shape[:2]
        rgb_batch, thermal_batch = [], []
        for i, (rgb, thermal) in enumerate(zip(rgbs, thermals01)):
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise InputError(f"frame {i}: rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
            if rgb.shape[:2] != (height, width):
                raise InputError(f"frame {i}: all frames of a batch must have one size, got {rgb.shape[:2]} and {(height, width)}")
            if thermal.shape[:2] != rgb.shape[:2]:
                raise InputError(f"frame {i}: thermal {thermal.shape[:2]} is not on the RGB grid {rgb.shape[:2]}; register/resize it first")
            # Frames straight from a message buffer are read-only; torch wants writable memory.
            rgb_batch.append(torch.from_numpy(np.ascontiguousarray(rgb) if rgb.flags.writeable else rgb.copy()))
            thermal_batch.append(torch.from_numpy(np.ascontiguousarray(thermal, dtype=np.float32)))
        rgb_t = torch.stack(rgb_batch).to(self.device).permute(0, 3, 1, 2).float()
        thermal_t = torch.stack(thermal_batch).to(self.device).unsqueeze(1)
        return rgb_t, thermal_t

    def release(self) -> None:
        """Drop the model and give its memory back (lifecycle deactivate/cleanup)."""
        if not self._released:
            self._released = True
            self.backend.release()
