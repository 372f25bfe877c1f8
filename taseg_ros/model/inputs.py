"""How a frame becomes the encoder's input and how logits map back to the frame: SAM's
resize-and-pad to 1024, or native resolution padded to a multiple of the patch size.

``FrameTransform`` is the one place that does it (SAM's ``Sam.preprocess`` /
``Sam.postprocess_masks``); ``TASeg.preprocess``/``postprocess`` delegate to it, and a runtime
without the nn.Module (an exported ONNX/OpenVINO/TensorRT file) builds one from the config stored
in the file. Inference, evaluation, training and the benchmark all go through it."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from taseg_ros.errors import InputError
from taseg_ros.model.config import TASegConfig


@dataclass(frozen=True)
class InputGeometry:
    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]  # after SAM's longest-side resize, or the max_input_size cap (else == original)
    padded_hw: tuple[int, int]  # what the encoder sees
    capped: bool = False  # native mode: resized down because the frame's longest side exceeds max_input_size


def _longest_side(height: int, width: int, side: int) -> tuple[int, int]:
    """(height, width) scaled so that the longer one is ``side``, as
    segment_anything.utils.transforms.ResizeLongestSide.get_preprocess_shape rounds it."""
    scale = side / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def plan_geometry(height: int, width: int, cfg: TASegConfig, max_input_size: int | None = None) -> InputGeometry:
    """How a frame becomes the encoder's input. ``max_input_size`` (longest side, pixels; None or 0: no
    limit) caps native mode, where the input is the frame itself; sam1024 mode is 1024 anyway."""
    if height < 1 or width < 1:
        raise InputError(f"empty image ({height}x{width})")
    patch = cfg.encoder.patch_size
    if cfg.resolution == "sam1024":
        side = cfg.encoder.img_size
        return InputGeometry((height, width), _longest_side(height, width, side), (side, side))
    resized, capped = (height, width), False
    if max_input_size and max(height, width) > max_input_size:
        resized, capped = _longest_side(height, width, max_input_size), True
    padded = (-(-resized[0] // patch) * patch, -(-resized[1] // patch) * patch)
    return InputGeometry((height, width), resized, padded, capped)


def normalize_and_pad(
    rgb: torch.Tensor, thermal: torch.Tensor, cfg: TASegConfig, geometry: InputGeometry
) -> tuple[torch.Tensor, torch.Tensor]:
    """rgb (B, 3, H, W) float on the 0..255 scale, thermal (B, 1, H, W) in [0, 1] ->
    the encoder's inputs: resized (sam1024), standardised, zero-padded bottom/right
    (after standardisation, as SAM pads)."""
    if geometry.resized_hw != geometry.original_hw:
        rgb = F.interpolate(rgb, size=geometry.resized_hw, mode="bilinear", align_corners=False, antialias=True)
        thermal = F.interpolate(thermal, size=geometry.resized_hw, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(cfg.pixel_mean, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    std = torch.tensor(cfg.pixel_std, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    rgb = (rgb - mean) / std
    thermal = (thermal - cfg.thermal_mean) / cfg.thermal_std
    pad_h = geometry.padded_hw[0] - geometry.resized_hw[0]
    pad_w = geometry.padded_hw[1] - geometry.resized_hw[1]
    if pad_h or pad_w:
        rgb = F.pad(rgb, (0, pad_w, 0, pad_h))
        thermal = F.pad(thermal, (0, pad_w, 0, pad_h))
    return rgb, thermal


def restore_logits(logits: torch.Tensor, geometry: InputGeometry) -> torch.Tensor:
    """Logits over the padded input -> logits over the original frame."""
    rh, rw = geometry.resized_hw
    logits = logits[..., :rh, :rw]
    if geometry.resized_hw != geometry.original_hw:
        logits = F.interpolate(logits, size=geometry.original_hw, mode="bilinear", align_corners=False)
    return logits


class FrameTransform:
    """Frames -> encoder inputs -> logits over the frames, for one model config.

    ``max_input_size`` (longest side in pixels, None: no limit) bounds the network's input in native
    mode: a larger frame is resized down (antialiased, as SAM mode resizes) and its logits are
    resized back up to the frame, so the labels keep the frame's size. ``preprocess`` takes rgb (B, 3, H, W) float on the 0..255 scale and thermal (B, 1, H, W) in
    [0, 1] (``frames.thermal.ThermalPreparation`` output) and returns the standardised, padded
    tensors plus the geometry that ``postprocess`` needs to map logits back."""

    def __init__(self, cfg: TASegConfig, max_input_size: int | None = None) -> None:
        self.cfg = cfg
        self.max_input_size = max_input_size or None

    def geometry(self, height: int, width: int) -> InputGeometry:
        return plan_geometry(height, width, self.cfg, self.max_input_size)

    def preprocess(
        self, rgb: torch.Tensor, thermal: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, InputGeometry]:
        geometry = self.geometry(rgb.shape[-2], rgb.shape[-1])
        rgb_in, thermal_in = normalize_and_pad(rgb, thermal, self.cfg, geometry)
        return rgb_in, thermal_in, geometry

    def postprocess(self, logits: torch.Tensor, geometry: InputGeometry) -> torch.Tensor:
        return restore_logits(logits, geometry)
