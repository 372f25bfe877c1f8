"""Metrics against hand-computed values: ignore pixels, absent classes, NaN policies, day/night."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from taseg_ros.datasets import IGNORE_INDEX, MetricProtocol
from taseg_ros.evaluation import ConfusionMatrix, SegmentationEvaluator, compute_scores, pst900_official_iou
from taseg_ros.evaluation.report import format_table, to_dict, to_json, to_markdown, write_report

# gt/pred pairs after dropping the ignored pixel: (0,0) (0,1) (1,1) (1,1) (2,0)
GT = np.array([[0, 0, 1], [1, 2, IGNORE_INDEX]])
PRED = np.array([[0, 1, 1], [1, 0, 2]])


def test_confusion_matrix_by_hand():
    cm = ConfusionMatrix(3)
    cm.update(GT, PRED)
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert cm.matrix.dtype == np.int64
    s = cm.scores()
    # IoU_c = TP / (row + col - TP): 1/(2+2-1), 2/(2+3-2), 0/(1+0-0)
    np.testing.assert_allclose(s.iou, [1 / 3, 2 / 3, 0.0])
    np.testing.assert_allclose(s.acc, [1 / 2, 1.0, 0.0])
    assert s.miou == pytest.approx(1 / 3)
    assert s.macc == pytest.approx(1 / 2)
    assert s.pixel_accuracy == pytest.approx(3 / 5)
    assert s.num_pixels == 5  # the ignored pixel is not counted
    np.testing.assert_array_equal(s.support, [2, 2, 1])


def test_absent_class_under_both_nan_policies():
    # class 3: absent from gt and never predicted -> IoU NaN; class 4: absent from gt but predicted -> IoU 0
    gt = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 4])
    zero = compute_scores(_matrix(gt, pred, 5), MetricProtocol(nan_policy="zero"))
    nanmean = compute_scores(_matrix(gt, pred, 5), MetricProtocol(nan_policy="nanmean"))
    assert np.isnan(zero.iou[3]) and zero.iou[4] == 0.0 and zero.iou[2] == 0.0
    assert np.isnan(zero.acc[3]) and np.isnan(zero.acc[4])
    # IoUs: 1/2, 2/3, 0, NaN, 0
    assert zero.miou == pytest.approx((1 / 2 + 2 / 3 + 0 + 0 + 0) / 5)
    assert nanmean.miou == pytest.approx((1 / 2 + 2 / 3 + 0 + 0) / 4)
    assert zero.miou_by_policy == nanmean.miou_by_policy  # both always computed; only the headline differs
    # accuracies: 1/2, 1, 0, NaN, NaN
    assert zero.macc == pytest.approx(1.5 / 5) and nanmean.macc == pytest.approx(1.5 / 3)
    assert zero.absent_classes == [3]


def test_classes_scored_subset():
    s = compute_scores(_matrix(GT, PRED, 3), MetricProtocol(classes_scored=(1, 2)))
    assert s.miou == pytest.approx((2 / 3 + 0) / 2)


def test_day_night_from_their_own_matrices():
    day_gt, day_pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    night_gt, night_pred = np.array([0, 0, 0, 2]), np.array([0, 0, 2, 2])
    ev = SegmentationEvaluator(["a", "b", "c"], MetricProtocol(nan_policy="nanmean", conditions=("day", "night")))
    ev.update(day_gt, day_pred, condition="day")
    ev.update(night_gt, night_pred, condition="night")
    r = ev.result()
    # day: C=[[1,1,0],[0,2,0],[0,0,0]] -> IoU 1/2, 2/3, NaN
    np.testing.assert_allclose(r.by_condition["day"].iou[:2], [1 / 2, 2 / 3])
    assert np.isnan(r.by_condition["day"].iou[2])
    assert r.by_condition["day"].miou == pytest.approx((1 / 2 + 2 / 3) / 2)
    # night: C=[[2,0,1],[0,0,0],[0,0,1]] -> IoU 2/3, NaN, 1/2
    assert r.by_condition["night"].miou == pytest.approx((2 / 3 + 1 / 2) / 2)
    # all: C=[[3,1,1],[0,2,0],[0,0,1]] -> IoU 3/5, 2/3, 1/2 (not the mean of day and night)
    np.testing.assert_allclose(r.overall.iou, [3 / 5, 2 / 3, 1 / 2])
    assert r.overall.miou == pytest.approx((3 / 5 + 2 / 3 + 1 / 2) / 3)
    assert r.num_images == 2 and r.num_images_by_condition == {"day": 1, "night": 1}
    np.testing.assert_array_equal(r.overall.matrix, r.by_condition["day"].matrix + r.by_condition["night"].matrix)


def test_pst900_official_formula_is_the_zero_policy():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, 5000)  # class 4 never in gt
    pred = np.where(rng.random(5000) < 0.7, gt, rng.integers(0, 4, 5000))  # and never predicted
    m = _matrix(gt, pred, 5)
    official = pst900_official_iou(m)
    ours = compute_scores(m, MetricProtocol(nan_policy="zero"))
    np.testing.assert_allclose(official, np.nan_to_num(ours.iou), rtol=0, atol=1e-12)
    assert official.mean() == pytest.approx(ours.miou, abs=1e-12)


def test_bincount_matrix_matches_a_pixel_loop():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 6, (20, 30))
    gt[rng.random((20, 30)) < 0.1] = IGNORE_INDEX
    pred = rng.integers(0, 6, (20, 30))
    expected = np.zeros((6, 6), np.int64)
    for g, p in zip(gt.ravel(), pred.ravel()):
        if g != IGNORE_INDEX:
            expected[g, p] += 1
    cm = ConfusionMatrix(6)
    cm.update(gt, pred)
    np.testing.assert_array_equal(cm.matrix, expected)


def test_bad_inputs_are_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"x\.png: predicted values \[3, 7\] are not classes 0\.\.2"):
        cm.update(np.zeros(4, int), np.array([0, 3, 7, 1]), source="x.png")
    with pytest.raises(ValueError, match=r"ground-truth values \[5\]"):
        cm.update(np.array([0, 5]), np.array([0, 0]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="no images"):
        SegmentationEvaluator(["a"]).result()


def test_reports(tmp_path):
    ev = SegmentationEvaluator(["road", "car", "bump"], MetricProtocol(conditions=("day", "night")), dataset="toy")
    ev.update(GT, PRED, condition="day")
    ev.update(np.array([[0, 1]]), np.array([[0, 1]]), condition="night")
    r = ev.result()
    table = format_table(r)
    assert "mIoU (zero, headline)" in table and "mIoU (nanmean)" in table
    # all: C=[[2,1,0],[0,3,0],[1,0,0]] -> IoU 2/4, 3/4, 0 -> mIoU 41.7
    assert "41.7" in table
    d = to_dict(r)
    assert d["overall"]["miou"] == pytest.approx((2 / 4 + 3 / 4 + 0) / 3)
    assert d["by_condition"]["night"]["per_class"]["bump"]["iou"] is None  # NaN -> null
    json.loads(to_json(r))  # strict JSON (no NaN)
    assert "| road |" in to_markdown(r)
    files = write_report(r, tmp_path / "rep")
    for key in ("iou_bars", "confusion", "confusion_day", "confusion_night"):
        img = cv2.imread(str(files[key]))
        assert img is not None and img.shape[0] > 100 and img.std() > 0
    assert json.loads(files["json"].read_text())["overall"]["confusion_matrix"] == [[2, 1, 0], [0, 3, 0], [1, 0, 0]]


def _matrix(gt, pred, k):
    cm = ConfusionMatrix(k)
    cm.update(np.asarray(gt), np.asarray(pred))
    return cm.matrix
