"""Running a model over a dataset split: predictions and the split's scores.

One implementation for `taseg eval`, validation during training and the demo."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from taseg_ros.errors import InputError
from taseg_ros.evaluation.metrics import SegmentationEvaluator
from taseg_ros.formatting import progress_bar
from taseg_ros.frames.blank import blank_thermal as blank  # the parameter below is named blank_thermal
from taseg_ros.frames.files import write_output
from taseg_ros.frames.render import DEFAULT_OVERLAY_ALPHA, IMAGE_OUTPUTS, check_alpha, colorize, overlay
from taseg_ros.inference import Segmenter


def evaluate(
    model,
    dataset,
    *,
    device="cpu",
    precision: str = "fp32",
    indices: Iterable[int] | None = None,
    blank_thermal: bool = False,
    on_prediction: Callable[[dict, np.ndarray], None] | None = None,
    progress: bool = False,
) -> SegmentationEvaluator:
    """Predict every sample (or `indices`) of a labelled dataset and accumulate its
    confusion matrices (overall and per day/night condition). `model` is a TASeg, or a ready
    Segmenter (any runtime: `taseg eval --backend`; then `device` and `precision`, a name of
    devices.PRECISIONS, are its own)."""
    config = dataset.config
    evaluator = SegmentationEvaluator(config.classes.names, config.metric, config.name)
    segmenter = model if isinstance(model, Segmenter) else None
    model = torch.nn.Module() if segmenter is not None else model  # nothing to switch to eval mode and back
    was_training = model.training
    model.eval()
    indices = list(range(len(dataset))) if indices is None else list(indices)
    if progress:
        indices = progress_bar(indices, desc="eval", enabled=True, leave=True)
    segmenter = segmenter or Segmenter(model, device=str(device), precision=precision)
    for index in indices:
        sample = dataset[index]
        if sample["label"] is None:
            raise InputError(f"{config.name} sample '{sample['id']}' has no label file; cannot score it")
        thermal = blank(sample["rgb"].shape[:2]) if blank_thermal else sample["thermal"]
        labels = segmenter.predict_prepared(sample["rgb"], thermal).labels
        evaluator.update(sample["label"], labels, condition=sample["condition"], source=sample["id"])
        if on_prediction is not None:
            on_prediction(sample, labels)
    model.train(was_training)
    return evaluator


class PredictionWriter:
    """Writes prediction images into one folder per output (frames.render.OUTPUTS names): ``labels/``
    (class-id PNGs), ``colorized/`` (palette colours) and ``overlay/`` (colours over the RGB frame)."""

    OUTPUTS = IMAGE_OUTPUTS

    def __init__(self, out_dir: str | Path, palette: np.ndarray, outputs=OUTPUTS,
                 alpha: float = DEFAULT_OVERLAY_ALPHA) -> None:
        unknown = set(outputs) - set(self.OUTPUTS)
        if unknown:
            raise InputError(f"unknown prediction outputs {sorted(unknown)}; choose from {self.OUTPUTS}")
        self.out_dir, self.palette, self.outputs, self.alpha = Path(out_dir), palette, tuple(outputs), check_alpha(alpha)
        for name in self.outputs:
            (self.out_dir / name).mkdir(parents=True, exist_ok=True)

    def __call__(self, sample: dict, labels: np.ndarray) -> None:
        colour = colorize(labels, self.palette)
        images = {"labels": lambda: labels, "colorized": lambda: colour,
                  "overlay": lambda: overlay(sample["rgb"], colour, self.alpha)}
        for name in self.outputs:
            write_output(self.out_dir / name / f"{sample['id']}.png", name, images[name]())
