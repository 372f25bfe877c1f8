"""Running a model over a dataset split: predictions and the split's scores.

One implementation for `taseg eval`, validation during training and the demo."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from taseg_ros.errors import InputError
from taseg_ros.evaluation.metrics import SegmentationEvaluator


def _segmenter(model, device, dtype: torch.dtype):
    from taseg_ros.inference import PRECISIONS, Segmenter

    precision = next(name for name, d in PRECISIONS.items() if d == dtype)
    return Segmenter(model, device=str(device), precision=precision)


def evaluate(
    model,
    dataset,
    *,
    device="cpu",
    dtype=torch.float32,
    indices: Iterable[int] | None = None,
    blank_thermal: bool = False,
    on_prediction: Callable[[dict, np.ndarray], None] | None = None,
    progress: bool = False,
) -> SegmentationEvaluator:
    """Predict every sample (or `indices`) of a labelled dataset and accumulate its
    confusion matrices (overall and per day/night condition). `model` is a TASeg, or a ready
    Segmenter (any runtime: `taseg eval --backend`; then `device` and `dtype` are its own)."""
    from taseg_ros.inference import Segmenter

    config = dataset.config
    evaluator = SegmentationEvaluator(config.classes.names, config.metric, config.name)
    segmenter = model if isinstance(model, Segmenter) else None
    model = torch.nn.Module() if segmenter is not None else model  # nothing to switch to eval mode and back
    was_training = model.training
    model.eval()
    indices = list(range(len(dataset))) if indices is None else list(indices)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="eval", dynamic_ncols=True)
    segmenter = segmenter or _segmenter(model, device, dtype)
    for index in indices:
        sample = dataset[index]
        if sample["label"] is None:
            raise InputError(f"{config.name} sample '{sample['id']}' has no label file; cannot score it")
        thermal = np.zeros_like(sample["thermal"]) if blank_thermal else sample["thermal"]
        labels = segmenter.predict_prepared(sample["rgb"], thermal).labels
        evaluator.update(sample["label"], labels, condition=sample["condition"], source=sample["id"])
        if on_prediction is not None:
            on_prediction(sample, labels)
    model.train(was_training)
    return evaluator


class PredictionWriter:
    """Writes prediction PNGs: class ids, palette colours and an overlay on the RGB frame."""

    KINDS = ("ids", "colour", "overlay")

    def __init__(self, out_dir: str | Path, palette: np.ndarray, kinds=KINDS, alpha: float = 0.5) -> None:
        unknown = set(kinds) - set(self.KINDS)
        if unknown:
            raise InputError(f"unknown prediction kinds {sorted(unknown)}; choose from {self.KINDS}")
        self.out_dir, self.palette, self.kinds, self.alpha = Path(out_dir), palette, tuple(kinds), alpha
        for kind in self.kinds:
            (self.out_dir / kind).mkdir(parents=True, exist_ok=True)

    def __call__(self, sample: dict, labels: np.ndarray) -> None:
        import cv2

        from taseg_ros.preprocessing import colorize, overlay

        name = f"{sample['id']}.png"
        colour = colorize(labels, self.palette)
        if "ids" in self.kinds:
            cv2.imwrite(str(self.out_dir / "ids" / name), labels)
        if "colour" in self.kinds:
            cv2.imwrite(str(self.out_dir / "colour" / name), cv2.cvtColor(colour, cv2.COLOR_RGB2BGR))
        if "overlay" in self.kinds:
            blend = overlay(sample["rgb"], colour, self.alpha)
            cv2.imwrite(str(self.out_dir / "overlay" / name), cv2.cvtColor(blend, cv2.COLOR_RGB2BGR))
