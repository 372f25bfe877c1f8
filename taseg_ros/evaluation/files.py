"""Scoring prediction image files against a dataset's label files (what `taseg score` runs).

Predictions are matched to ground truth by file stem. A prediction PNG is either
    ids:    single channel, class ids 0..K-1 in the order of the dataset's class list
    colour: RGB(A), each pixel a colour of the dataset palette
    raw:    single channel in the dataset's on-disk label encoding (FMB: 1..14), mapped like
            the ground truth
`auto` picks ids for 1 channel and colour for 3 or 4 channels.

Ground truth is read exactly as the dataset stores it (raw values; the dataset's label map
turns them into class ids and ignored pixels).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from taseg_ros.datasets import DATASETS
from taseg_ros.datasets.config import IGNORE_INDEX, DatasetConfig, condition_from_id
from taseg_ros.datasets.io import index_by_stem, label_single_channel, read_split_file
from taseg_ros.frames.files import read_image
from taseg_ros.frames.render import decode_colours
from taseg_ros.datasets.transforms import resize_labels
from taseg_ros.errors import InputError, MissingInputError
from taseg_ros.evaluation.metrics import EvaluationResult, SegmentationEvaluator

PRED_FORMATS = ("auto", "ids", "colour", "raw")


def decode_prediction(image: np.ndarray, config: DatasetConfig, path: Path, fmt: str = "auto") -> np.ndarray:
    """A decoded prediction image (cv2 order: BGR(A)) -> (H, W) int64 class ids."""
    if fmt not in PRED_FORMATS:
        raise InputError(f"prediction format must be one of {PRED_FORMATS}, got {fmt!r}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if fmt == "auto":
        fmt = "ids" if channels == 1 else "colour"
    if fmt == "colour":
        if channels not in (3, 4) or image.dtype != np.uint8:
            raise InputError(f"{path}: a colour prediction must be an 8-bit RGB/RGBA PNG, got shape {image.shape}")
        return decode_colours(image[:, :, 2::-1], config.classes.palette, str(path))
    if channels != 1:
        raise InputError(f"{path}: a class-id prediction must be a single-channel PNG, got {channels} channels")
    ids = image if image.ndim == 2 else image[:, :, 0]
    if fmt == "raw":
        mapped = config.label_map.apply(ids, source=str(path))
        if (mapped == IGNORE_INDEX).any():
            raise InputError(f"{path}: prediction contains the dataset's ignored label values; predict a class everywhere")
        return mapped
    return ids.astype(np.int64)


def condition_lookup(config: DatasetConfig, gt_dir: Path) -> Callable[[str], str | None]:
    """Day/night of an id: from the id (MFNet, KP), else day.txt/night.txt of a folder dataset
    (looked up next to the label folder)."""
    if config.day_night in ("id_suffix", "kaist_set"):
        return lambda i: condition_from_id(config.day_night, i)
    table: dict[str, str] = {}
    for cond in ("day", "night"):
        path = gt_dir.parent / f"{cond}.txt"
        if path.is_file():
            table.update({i: cond for i in read_split_file(path)})
    return table.get


def _parse_ids(ids_file: Path | None, gt_files: dict[str, Path], gt_dir: Path) -> list[str]:
    if ids_file is None:
        if not gt_files:
            raise InputError(f"{gt_dir}: no label PNG files")
        return sorted(gt_files)
    ids = read_split_file(ids_file)
    if not ids:
        raise InputError(f"{ids_file}: lists no ids")
    missing = [i for i in ids if i not in gt_files]
    if missing:
        raise MissingInputError(
            f"{len(missing)} id(s) of {ids_file} have no label file in {gt_dir}: {', '.join(missing[:10])}"
            + (" ..." if len(missing) > 10 else "")
        )
    return ids


def score_directories(
    pred_dir: str | Path,
    gt_dir: str | Path,
    config: DatasetConfig,
    ids_file: str | Path | None = None,
    pred_format: str = "auto",
    eval_resolution: tuple[int, int] | None | str = "protocol",
    resize_predictions: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[EvaluationResult, list[str]]:
    """Score every ground-truth label (or the ids of `ids_file`) against the prediction of the
    same stem. Returns the result and the stems of predictions that had no ground truth."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not d.is_dir():
            raise MissingInputError(f"{what} folder not found: {d}")
    gt_files = index_by_stem(gt_dir, (".png",))
    pred_files = index_by_stem(pred_dir, (".png",))
    ids = _parse_ids(None if ids_file is None else Path(ids_file), gt_files, gt_dir)
    missing = [i for i in ids if i not in pred_files]
    if missing:
        raise MissingInputError(
            f"{len(missing)} of {len(ids)} ground-truth images have no prediction PNG in {pred_dir}: "
            + ", ".join(missing[:10])
            + (" ..." if len(missing) > 10 else "")
        )
    protocol = config.metric
    size = protocol.eval_resolution if eval_resolution == "protocol" else eval_resolution
    label_channel = DATASETS[config.layout].label_channel if config.layout in DATASETS else "same"
    condition_of = condition_lookup(config, gt_dir)
    evaluator = SegmentationEvaluator(config.classes.names, protocol, dataset=config.name)
    for n, i in enumerate(ids):
        gt_path, pred_path = gt_files[i], pred_files[i]
        gt = config.label_map.apply(label_single_channel(read_image(gt_path), gt_path, label_channel), str(gt_path))
        pred = decode_prediction(read_image(pred_path), config, pred_path, pred_format)
        if pred.shape != gt.shape:
            if not resize_predictions:
                raise InputError(
                    f"{pred_path}: prediction is {pred.shape[1]}x{pred.shape[0]} but the ground truth "
                    f"{gt_path} is {gt.shape[1]}x{gt.shape[0]} (WxH); --resize-pred resizes predictions "
                    "to the ground truth (nearest neighbour)"
                )
            pred = resize_labels(pred, gt.shape)
        if size is not None:
            gt, pred = resize_labels(gt, size), resize_labels(pred, size)
        evaluator.update(gt, pred, condition=condition_of(i), source=str(pred_path))
        if progress is not None:
            progress(n + 1, len(ids))
    extra = sorted(set(pred_files) - set(ids))
    return evaluator.result(), extra
