"""What every runtime offers the Segmenter: the network forward on prepared tensors.

Pre- and post-processing stay ours (model.inputs.FrameTransform) and identical for every
runtime; a backend only maps prepared (B,3,H,W)/(B,1,H,W) float32 inputs to (B,K,H,W) logits.
Exported files have a fixed input size and batch: a frame whose prepared size differs is
refused with both sizes named, and batches are cut/padded to the exported batch here."""
from __future__ import annotations

from pathlib import Path

import torch

from taseg_ros.classes import ClassInfo
from taseg_ros.errors import InputError
from taseg_ros.model.config import TASegConfig
from taseg_ros.model.inputs import FrameTransform, InputGeometry



class Backend:
    """Base of the runtimes. Subclasses set the attributes in __init__ and implement `_run`."""

    name = "base"
    path: Path | None = None
    cfg: TASegConfig
    class_info: ClassInfo
    precision: str = "fp32"  # the precision that actually runs (as the runtime reports it)
    precision_note: str = ""  # what was asked when another precision runs, and why
    device_label: str = "cpu"  # where it runs, in the runtime's own words (CPU EP, GPU.0, ...)
    torch_device: torch.device = torch.device("cpu")  # where pre/post-processing runs
    input_hw: tuple[int, int] | None = None  # fixed network input size; None: any
    frame_hw: tuple[int, int] | None = None  # frame size an export was made for
    batch: int | None = None  # fixed batch; None: any

    @property
    def transform(self) -> FrameTransform:
        return FrameTransform(self.cfg)

    def describe(self) -> str:
        size = f", input {self.input_hw[1]}x{self.input_hw[0]}" if self.input_hw else ""
        note = f" ({self.precision_note})" if self.precision_note else ""
        return f"{self.name} on {self.device_label}, {self.precision}{size}{note}"

    def check_geometry(self, geometry: InputGeometry) -> None:
        if self.input_hw is None or tuple(geometry.padded_hw) == tuple(self.input_hw):
            return
        fh, fw = geometry.original_hw
        ih, iw = self.input_hw
        made_for = f" (frames of {self.frame_hw[1]}x{self.frame_hw[0]})" if self.frame_hw else ""
        raise InputError(
            f"{self.path}: exported for a {iw}x{ih} input{made_for}; a {fw}x{fh} frame needs "
            f"{geometry.padded_hw[1]}x{geometry.padded_hw[0]}. Re-export with --size {fw}x{fh} or use the checkpoint"
        )

    def check_classes(self, count) -> None:
        """The graph's class count (its logits' channels; None or a symbolic dimension: unknown)
        matches the class list of its metadata: a graph whose classes differ would label with the
        wrong names and colours."""
        if isinstance(count, int) and count != self.class_info.num_classes:
            raise InputError(
                f"{self.path}: the graph outputs {count} classes but its metadata lists {self.class_info.num_classes} "
                f"({', '.join(self.class_info.names)}); not a consistent TASeg export, export it again"
            )

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor) -> torch.Tensor:
        """Prepared inputs -> float32 logits (B, K, H, W) on `torch_device`."""
        if self.batch is None or rgb.shape[0] == self.batch:
            return self._run(rgb, thermal)
        outputs = []
        for start in range(0, rgb.shape[0], self.batch):
            r, t = rgb[start : start + self.batch], thermal[start : start + self.batch]
            short = self.batch - r.shape[0]
            if short:  # the last chunk is padded with copies of its first frame, then cut
                r = torch.cat([r, r[:1].expand(short, -1, -1, -1)])
                t = torch.cat([t, t[:1].expand(short, -1, -1, -1)])
            outputs.append(self._run(r.contiguous(), t.contiguous())[: self.batch - short])
        return torch.cat(outputs)

    def _run(self, rgb: torch.Tensor, thermal: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def release(self) -> None:
        """Give the runtime's memory back (node lifecycle cleanup)."""


def require(module: str, extra: str, backend: str):
    """Import an optional runtime, or fail with the pip line that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise InputError(
            f"backend '{backend}' needs the Python package '{module}': pip install 'taseg_ros[{extra}]' ({exc})"
        ) from exc
