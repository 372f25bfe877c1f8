"""Semantic-segmentation scores the way the RGB-T papers compute them.

One int64 confusion matrix over the whole split (rows = ground truth, columns = prediction,
ground-truth pixels equal to IGNORE_INDEX dropped); per-class IoU and accuracy from that
matrix; the mean last. Per-image means are never averaged.

    IoU_c = C[c,c] / (C[c,:].sum() + C[:,c].sum() - C[c,c])     NaN when the union is 0
    Acc_c = C[c,c] / C[c,:].sum()                               NaN when class c is absent

A NaN IoU means class c is absent from the ground truth and never predicted. Papers differ on
it, so both conventions are always computed:
    zero:    NaN -> 0, kept in the mean (RTFNet training log, CRM, MMSFormer, PSTNet official)
    nanmean: NaN left out of the mean (CAINet, LASNet, CMX)
The dataset's protocol (`metric.nan_policy`) picks the headline number.

PSTNet's official IoU = TP / (TP + FP + FN + 1e-15) with TP/FP/FN summed over the test set is
the `zero` convention: TP + FP + FN is exactly the union above, so it gives 0 where the union
is 0 and differs elsewhere by less than 1e-15 relative (see `pst900_official_iou`).

Day/night scores (MFNet, KP) come from their own confusion matrices over the day / night
images, not from splitting per-image numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from taseg_ros.datasets.config import IGNORE_INDEX, NAN_POLICIES, MetricProtocol
from taseg_ros.errors import InputError


class ConfusionMatrix:
    """Accumulates a (K, K) int64 confusion matrix, rows = ground truth, columns = prediction."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise InputError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray, ignore_index: int = IGNORE_INDEX, source: str = "") -> None:
        """Add one image. gt: class ids or `ignore_index`; pred: class ids 0..K-1."""
        gt = np.asarray(gt)
        pred = np.asarray(pred)
        where = f"{source}: " if source else ""
        if gt.shape != pred.shape:
            raise InputError(f"{where}prediction shape {pred.shape} differs from ground truth {gt.shape}")
        k = self.num_classes
        gt = gt.reshape(-1).astype(np.int64, copy=False)
        pred = pred.reshape(-1).astype(np.int64, copy=False)
        keep = gt != ignore_index
        if not keep.all():
            gt, pred = gt[keep], pred[keep]
        if gt.size == 0:
            return
        if gt.min() < 0 or gt.max() >= k:
            bad = np.unique(gt[(gt < 0) | (gt >= k)])
            raise InputError(f"{where}ground-truth values {bad[:10].tolist()} are not classes 0..{k - 1} or {ignore_index}")
        if pred.min() < 0 or pred.max() >= k:
            bad = np.unique(pred[(pred < 0) | (pred >= k)])
            raise InputError(f"{where}predicted values {bad[:10].tolist()} are not classes 0..{k - 1}")
        self.matrix += np.bincount(gt * k + pred, minlength=k * k).reshape(k, k)

    def __iadd__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        if other.num_classes != self.num_classes:
            raise InputError(f"cannot add a {other.num_classes}-class matrix to a {self.num_classes}-class one")
        self.matrix += other.matrix
        return self

    def scores(self, protocol: MetricProtocol | None = None) -> "Scores":
        return compute_scores(self.matrix, protocol)


def _nan_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _mean(values: np.ndarray, policy: str) -> float:
    if values.size == 0:
        return float("nan")
    if policy == "zero":
        return float(np.nan_to_num(values, nan=0.0).mean())
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


@dataclass
class Scores:
    """Scores of one confusion matrix. Per-class arrays have NaN where undefined."""

    matrix: np.ndarray
    iou: np.ndarray
    acc: np.ndarray
    scored: np.ndarray  # indices of the classes in the means
    nan_policy: str = "zero"
    miou_by_policy: dict[str, float] = field(default_factory=dict)
    macc_by_policy: dict[str, float] = field(default_factory=dict)

    @property
    def miou(self) -> float:
        """Headline mIoU under the protocol's NaN policy."""
        return self.miou_by_policy[self.nan_policy]

    @property
    def macc(self) -> float:
        return self.macc_by_policy[self.nan_policy]

    @property
    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    @property
    def support(self) -> np.ndarray:
        """Ground-truth pixels per class."""
        return self.matrix.sum(axis=1)

    @property
    def predicted(self) -> np.ndarray:
        return self.matrix.sum(axis=0)

    @property
    def num_pixels(self) -> int:
        return int(self.matrix.sum())

    @property
    def absent_classes(self) -> list[int]:
        """Scored classes whose IoU is NaN: absent from the ground truth and never predicted."""
        return [int(c) for c in self.scored if np.isnan(self.iou[c])]


def compute_scores(matrix: np.ndarray, protocol: MetricProtocol | None = None) -> Scores:
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise InputError(f"confusion matrix must be square, got shape {matrix.shape}")
    protocol = protocol or MetricProtocol()
    k = matrix.shape[0]
    tp = np.diag(matrix).astype(np.float64)
    gt_count = matrix.sum(axis=1).astype(np.float64)
    pred_count = matrix.sum(axis=0).astype(np.float64)
    iou = _nan_divide(tp, gt_count + pred_count - tp)
    acc = _nan_divide(tp, gt_count)
    scored = np.arange(k) if protocol.classes_scored is None else np.asarray(protocol.classes_scored, int)
    if scored.size and (scored.min() < 0 or scored.max() >= k):
        raise InputError(f"classes_scored {scored.tolist()} outside 0..{k - 1}")
    return Scores(
        matrix=matrix,
        iou=iou,
        acc=acc,
        scored=scored,
        nan_policy=protocol.nan_policy,
        miou_by_policy={p: _mean(iou[scored], p) for p in NAN_POLICIES},
        macc_by_policy={p: _mean(acc[scored], p) for p in NAN_POLICIES},
    )


def pst900_official_iou(matrix: np.ndarray) -> np.ndarray:
    """PSTNet's eval_iou.py:iouEval formula on a confusion matrix: TP / (TP + FP + FN + 1e-15)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    return tp / (tp + fp + fn + 1e-15)


@dataclass
class EvaluationResult:
    class_names: tuple[str, ...]
    protocol: MetricProtocol
    overall: Scores
    by_condition: dict[str, Scores]
    num_images: int
    num_images_by_condition: dict[str, int]
    dataset: str = ""


class SegmentationEvaluator:
    """Scores a split image by image: one confusion matrix overall and one per condition.

        ev = SegmentationEvaluator(config.classes.names, config.metric)
        for sample, pred in ...:
            ev.update(sample["label"], pred, condition=sample["condition"])
        result = ev.result()
    """

    def __init__(self, class_names, protocol: MetricProtocol | None = None, dataset: str = "") -> None:
        self.class_names = tuple(class_names)
        self.protocol = protocol or MetricProtocol()
        self.dataset = dataset
        self.total = ConfusionMatrix(len(self.class_names))
        self.conditions: dict[str, ConfusionMatrix] = {c: ConfusionMatrix(len(self.class_names)) for c in self.protocol.conditions}
        self.num_images = 0
        self.num_images_by_condition: dict[str, int] = {c: 0 for c in self.protocol.conditions}

    def update(self, gt: np.ndarray, pred: np.ndarray, condition: str | None = None, source: str = "") -> None:
        # One per-image matrix, added to the total and to its condition: the update is checked once.
        image = ConfusionMatrix(len(self.class_names))
        image.update(gt, pred, source=source)
        self.total += image
        self.num_images += 1
        if condition is not None:
            if condition not in self.conditions:
                self.conditions[condition] = ConfusionMatrix(len(self.class_names))
                self.num_images_by_condition[condition] = 0
            self.conditions[condition] += image
            self.num_images_by_condition[condition] += 1

    def result(self) -> EvaluationResult:
        if self.num_images == 0:
            raise InputError("no images were scored")
        return EvaluationResult(
            class_names=self.class_names,
            protocol=self.protocol,
            overall=self.total.scores(self.protocol),
            by_condition={
                c: m.scores(self.protocol) for c, m in self.conditions.items() if self.num_images_by_condition[c]
            },
            num_images=self.num_images,
            num_images_by_condition={c: n for c, n in self.num_images_by_condition.items() if n},
            dataset=self.dataset,
        )
