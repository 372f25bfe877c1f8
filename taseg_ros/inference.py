"""The Python API: a trained TASeg on numpy images.

    from taseg_ros import Segmenter
    seg = Segmenter.from_checkpoint("models/mfnet_vit_b.safetensors")
    pred = seg.predict(rgb, thermal)          # rgb (H,W,3) uint8; thermal (H,W) 8/16-bit or float
    pred.labels                               # (H,W) uint8 class ids
    seg.class_info.names[pred.labels[y, x]]

Any frame size works: the model's own ``preprocess`` pads (native mode) or resizes and pads
(SAM 1024 mode), and its ``postprocess`` maps the logits back to the input frame. Raw thermal of
any dtype is normalised by ``frame.ThermalPreparation`` (the Segmenter's normalisation policy, or
one given per call); ``predict_prepared`` takes thermal that is already in [0, 1] on the RGB grid
(what ``frame.FramePipeline`` passes after timing that step on its own).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from taseg_ros.classes import ClassInfo
from taseg_ros.model.checkpoint import load_checkpoint
from taseg_ros.frame import ThermalPreparation
from taseg_ros.model.inputs import FrameTransform
from taseg_ros.model.taseg import TASeg
from taseg_ros.preprocessing import ThermalNormalization

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Prediction:
    labels: np.ndarray  # (H, W) uint8
    confidence: np.ndarray  # (H, W) float32, probability of the chosen class
    probabilities: np.ndarray | None = None  # (K, H, W) float32


class Segmenter:
    """A TASeg model ready for inference on one device and precision.

    ``thermal_norm`` is the default normalisation policy for raw thermal; ``resolution`` overrides
    the config's resolution mode (one set of weights serves both; the benchmark times both)."""

    def __init__(
        self,
        model: TASeg,
        device: str = "cpu",
        precision: str = "fp32",
        *,
        thermal_norm: ThermalNormalization | None = None,
        resolution: str | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision '{precision}' is not one of {sorted(PRECISIONS)}")
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available on this machine")
        if device.type == "cpu" and precision == "fp16":
            raise ValueError("fp16 is not supported on the CPU; use fp32 or bf16")
        self.model = model.to(device).eval()
        self.device = device
        self.precision = precision
        self.cfg = model.cfg if resolution is None else model.cfg.replace(resolution=resolution)
        self.transform = model.transform if resolution is None else FrameTransform(self.cfg)
        self.thermal = ThermalPreparation(thermal_norm)

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
    ) -> "Segmenter":
        model = load_checkpoint(path, sam_checkpoint=sam_checkpoint, verify_sam=verify_sam)
        return cls(model, device=device, precision=precision, thermal_norm=thermal_norm)

    @property
    def class_info(self) -> ClassInfo:
        return self.model.class_info

    def predict(
        self,
        rgb: np.ndarray,
        thermal: np.ndarray,
        thermal_norm: ThermalNormalization | None = None,
        return_probabilities: bool = False,
    ) -> Prediction:
        """rgb (H, W, 3) uint8 and raw thermal (H, W) on the RGB grid, any dtype."""
        return self.predict_batch([rgb], [thermal], thermal_norm, return_probabilities)[0]

    def predict_batch(
        self,
        rgbs: list[np.ndarray],
        thermals: list[np.ndarray],
        thermal_norm: ThermalNormalization | None = None,
        return_probabilities: bool = False,
    ) -> list[Prediction]:
        if len(rgbs) != len(thermals) or not rgbs:
            raise ValueError(f"need equally many RGB and thermal frames, got {len(rgbs)} and {len(thermals)}")
        prepare = self.thermal if thermal_norm is None else ThermalPreparation(thermal_norm)
        prepared = []
        for i, (rgb, thermal) in enumerate(zip(rgbs, thermals)):
            if thermal.shape[:2] != rgb.shape[:2]:
                raise ValueError(f"frame {i}: thermal {thermal.shape[:2]} is not on the RGB grid {rgb.shape[:2]}; register/resize it first")
            prepared.append(prepare(thermal, rgb.shape[:2])[0])
        return self.predict_prepared_batch(rgbs, prepared, return_probabilities)

    def predict_prepared(self, rgb: np.ndarray, thermal01: np.ndarray, return_probabilities: bool = False) -> Prediction:
        """rgb (H, W, 3) uint8 and thermal already normalised to [0, 1] on the RGB grid."""
        return self.predict_prepared_batch([rgb], [thermal01], return_probabilities)[0]

    @torch.inference_mode()
    def predict_prepared_batch(
        self, rgbs: list[np.ndarray], thermals01: list[np.ndarray], return_probabilities: bool = False
    ) -> list[Prediction]:
        if self.model is None:
            raise RuntimeError("this Segmenter was released")
        rgb_t, thermal_t = self._to_tensors(rgbs, thermals01)
        rgb_in, thermal_in, geometry = self.transform.preprocess(rgb_t, thermal_t)
        logits = self.forward(rgb_in, thermal_in)
        probabilities = self.transform.postprocess(logits.float(), geometry).softmax(dim=1)
        confidence, labels = probabilities.max(dim=1)
        labels = labels.to(torch.uint8).cpu().numpy()
        confidence = confidence.cpu().numpy()
        probs = probabilities.cpu().numpy() if return_probabilities else None
        return [
            Prediction(labels[i], confidence[i], probs[i] if probs is not None else None) for i in range(len(rgbs))
        ]

    def forward(self, rgb_in: torch.Tensor, thermal_in: torch.Tensor) -> torch.Tensor:
        """The network alone, on prepared inputs, at this Segmenter's precision."""
        dtype = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            return self.model(rgb_in, thermal_in)

    def _to_tensors(self, rgbs: list[np.ndarray], thermals01: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = rgbs[0].shape[:2]
        rgb_batch, thermal_batch = [], []
        for i, (rgb, thermal) in enumerate(zip(rgbs, thermals01)):
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise ValueError(f"frame {i}: rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
            if rgb.shape[:2] != (height, width):
                raise ValueError(f"frame {i}: all frames of a batch must have one size, got {rgb.shape[:2]} and {(height, width)}")
            if thermal.shape[:2] != rgb.shape[:2]:
                raise ValueError(f"frame {i}: thermal {thermal.shape[:2]} is not on the RGB grid {rgb.shape[:2]}; register/resize it first")
            # Frames straight from a message buffer are read-only; torch wants writable memory.
            rgb_batch.append(torch.from_numpy(np.ascontiguousarray(rgb) if rgb.flags.writeable else rgb.copy()))
            thermal_batch.append(torch.from_numpy(np.ascontiguousarray(thermal, dtype=np.float32)))
        rgb_t = torch.stack(rgb_batch).to(self.device).permute(0, 3, 1, 2).float()
        thermal_t = torch.stack(thermal_batch).to(self.device).unsqueeze(1)
        return rgb_t, thermal_t

    def release(self) -> None:
        """Drop the model and give its memory back (lifecycle deactivate/cleanup)."""
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
