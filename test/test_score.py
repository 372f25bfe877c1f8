"""`taseg score` on real PNG files, reproducing hand-computed numbers."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from taseg_ros.cli.score import register
from taseg_ros.classes import load_classes
from taseg_ros.frames.render import colorize

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rgbt_samples"

# MFNet: a day and a night image (4x4), ids 0..8
GT = {
    "00001D": [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]],
    "00002N": [[0, 0, 0, 0], [4, 4, 4, 4], [0, 0, 0, 0], [4, 4, 4, 4]],
}
PRED = {
    "00001D": [[0, 0, 1, 0], [0, 0, 1, 1], [2, 3, 3, 3], [2, 2, 3, 3]],
    "00002N": [[0, 0, 0, 0], [4, 4, 0, 0], [0, 0, 0, 0], [4, 4, 4, 4]],
}
# By hand. Day: C00=4, C11=3, C10=1, C22=3, C23=1, C33=4 -> IoU 4/5, 3/4, 3/4, 4/5.
# Night: C00=8, C44=6, C40=2 -> IoU 8/10, 6/8. All: C00=12 (col0 = 15) -> 12/15, 3/4, 3/4, 4/5, 6/8.
DAY_IOU = {"unlabeled": 0.8, "car": 0.75, "person": 0.75, "bike": 0.8}
NIGHT_IOU = {"unlabeled": 0.8, "curve": 0.75}
ALL_IOU = {"unlabeled": 0.8, "car": 0.75, "person": 0.75, "bike": 0.8, "curve": 0.75}


def score(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="taseg")
    register(parser.add_subparsers())
    args = parser.parse_args(["score", *map(str, argv)])
    return args.func(args)


def write_pngs(folder: Path, arrays: dict, transform=lambda a: a) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, a in arrays.items():
        assert cv2.imwrite(str(folder / f"{stem}.png"), transform(np.asarray(a, np.uint8)))
    return folder


def check_mfnet_numbers(metrics: dict) -> None:
    per = metrics["overall"]["per_class"]
    for name, iou in ALL_IOU.items():
        assert per[name]["iou"] == pytest.approx(iou)
    for name in ("car_stop", "guardrail", "color_cone", "bump"):
        assert per[name]["iou"] is None  # absent and never predicted
    assert metrics["overall"]["miou_by_nan_policy"]["zero"] == pytest.approx(3.85 / 9)
    assert metrics["overall"]["miou_by_nan_policy"]["nanmean"] == pytest.approx(3.85 / 5)
    assert metrics["overall"]["miou"] == pytest.approx(3.85 / 9)  # MFNet headline: RTFNet's nan -> 0
    day, night = metrics["by_condition"]["day"], metrics["by_condition"]["night"]
    for name, iou in DAY_IOU.items():
        assert day["per_class"][name]["iou"] == pytest.approx(iou)
    for name, iou in NIGHT_IOU.items():
        assert night["per_class"][name]["iou"] == pytest.approx(iou)
    assert day["miou_by_nan_policy"]["nanmean"] == pytest.approx(3.1 / 4)
    assert night["miou_by_nan_policy"]["nanmean"] == pytest.approx(1.55 / 2)
    assert day["macc_by_nan_policy"]["nanmean"] == pytest.approx((1 + 0.75 + 0.75 + 1) / 4)
    assert metrics["num_images_by_condition"] == {"day": 1, "night": 1}


def test_score_id_pngs(tmp_path, capsys):
    gt = write_pngs(tmp_path / "labels", GT)
    pred = write_pngs(tmp_path / "pred", PRED)
    assert score("--pred", pred, "--gt", gt, "--dataset", "mfnet", "--out", tmp_path / "out") == 0
    check_mfnet_numbers(json.loads((tmp_path / "out" / "metrics.json").read_text()))
    out = capsys.readouterr().out
    assert "42.8" in out  # headline 3.85/9 = 42.8 %
    for name in ("metrics.md", "iou_per_class.png", "confusion_matrix.png", "confusion_matrix_night.png"):
        assert (tmp_path / "out" / name).is_file()


def test_score_colour_pngs(tmp_path):
    palette = load_classes("mfnet").palette
    gt = write_pngs(tmp_path / "labels", GT)
    pred = write_pngs(tmp_path / "pred", PRED, lambda a: colorize(a, palette)[:, :, ::-1])  # RGB -> cv2 BGR
    assert cv2.imread(str(pred / "00001D.png"), cv2.IMREAD_UNCHANGED).shape == (4, 4, 3)
    assert score("--pred", pred, "--gt", gt, "--dataset", "mfnet", "--out", tmp_path / "out") == 0
    check_mfnet_numbers(json.loads((tmp_path / "out" / "metrics.json").read_text()))


def test_score_raw_fmb_labels_with_ignore(tmp_path):
    # FMB raw 0 -> ignored, raw v -> v-1. Pairs kept: (0,0) (0,1) (1,1) (1,1) -> IoU 1/2, 2/3
    gt = write_pngs(tmp_path / "Label", {"a": [[0, 1, 1], [2, 2, 0]]})
    pred = write_pngs(tmp_path / "pred", {"a": [[5, 0, 1], [1, 1, 13]]})
    assert score("--pred", pred, "--gt", gt, "--dataset", "fmb", "--out", tmp_path / "out") == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["overall"]["per_class"]["road"]["iou"] == pytest.approx(0.5)
    assert m["overall"]["per_class"]["sidewalk"]["iou"] == pytest.approx(2 / 3)
    assert m["overall"]["num_pixels"] == 4
    assert m["overall"]["miou"] == pytest.approx((0.5 + 2 / 3) / 14)
    # --pred-format raw: predictions in FMB's on-disk encoding (1..14)
    raw_pred = write_pngs(tmp_path / "raw_pred", {"a": [[6, 1, 2], [2, 2, 14]]})
    assert score("--pred", raw_pred, "--gt", gt, "--dataset", "fmb", "--pred-format", "raw", "--out", tmp_path / "o2") == 0
    assert json.loads((tmp_path / "o2" / "metrics.json").read_text())["overall"] == m["overall"]


def test_score_ids_file_and_extra_predictions(tmp_path, capsys):
    gt = write_pngs(tmp_path / "labels", {**GT, "00003D_flip": GT["00001D"]})
    pred = write_pngs(tmp_path / "pred", {**PRED, "99999D": PRED["00001D"]})
    ids = tmp_path / "test.txt"
    ids.write_text("00001D\n00002N\n")
    assert score("--pred", pred, "--gt", gt, "--dataset", "mfnet", "--ids", ids, "--out", tmp_path / "out") == 0
    check_mfnet_numbers(json.loads((tmp_path / "out" / "metrics.json").read_text()))
    assert "99999D" in capsys.readouterr().err


def test_missing_predictions_are_named(tmp_path):
    gt = write_pngs(tmp_path / "labels", GT)
    pred = write_pngs(tmp_path / "pred", {"00001D": PRED["00001D"]})
    with pytest.raises(FileNotFoundError, match=r"1 of 2 ground-truth images have no prediction PNG in .*pred: 00002N"):
        score("--pred", pred, "--gt", gt, "--dataset", "mfnet")


def test_unknown_colour_is_named(tmp_path):
    palette = load_classes("mfnet").palette
    gt = write_pngs(tmp_path / "labels", GT)

    def paint(a):
        rgb = colorize(a, palette)
        rgb[0, 0] = (1, 2, 3)
        return rgb[:, :, ::-1]

    pred = write_pngs(tmp_path / "pred", PRED, paint)
    with pytest.raises(ValueError, match=r"pred/00001D\.png: 1 colour\(s\) not in the dataset palette .*\(1, 2, 3\) x1"):
        score("--pred", pred, "--gt", gt, "--dataset", "mfnet")


def test_size_mismatch_and_resize(tmp_path):
    gt = write_pngs(tmp_path / "labels", {"a": np.kron(np.array([[0, 1], [2, 0]]), np.ones((4, 4), int))})
    pred = write_pngs(tmp_path / "pred", {"a": [[0, 1], [2, 0]]})
    with pytest.raises(ValueError, match=r"pred/a\.png: prediction is 2x2 but the ground truth .*a\.png is 8x8"):
        score("--pred", pred, "--gt", gt, "--dataset", "pst900")
    assert score("--pred", pred, "--gt", gt, "--dataset", "pst900", "--resize-pred", "--out", tmp_path / "o") == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["overall"]["miou_by_nan_policy"]["nanmean"] == pytest.approx(1.0)
    assert m["overall"]["miou"] == pytest.approx(3 / 5)  # PST900: absent classes 3, 4 count as 0
    # --eval-resolution: both resized (nearest) before scoring
    assert score("--pred", pred, "--gt", gt, "--dataset", "pst900", "--resize-pred", "--eval-resolution", "2x2",
                 "--out", tmp_path / "o2") == 0
    assert json.loads((tmp_path / "o2" / "metrics.json").read_text())["overall"]["num_pixels"] == 4


def test_eval_resolution_is_width_by_height_and_the_old_order_is_refused(tmp_path):
    """WIDTHxHEIGHT as every other size; the old HEIGHTxWIDTH spelling of a size turns the labels on their
    side, which is refused with the order named and the size to give instead."""
    labels = np.kron(np.array([[0, 1], [2, 0]]), np.ones((4, 8), int))  # 16 wide, 8 high
    gt = write_pngs(tmp_path / "labels", {"a": labels})
    pred = write_pngs(tmp_path / "pred", {"a": labels})
    assert score("--pred", pred, "--gt", gt, "--dataset", "pst900", "--eval-resolution", "4x2", "-o", tmp_path / "o") == 0
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["overall"]["num_pixels"] == 8
    with pytest.raises(ValueError, match=r"--eval-resolution 2x4 is WIDTHxHEIGHT \(2 wide, 4 high\), but the labels "
                       r"are 16x8; it read HEIGHTxWIDTH before: for the same frame give 4x2"):
        score("--pred", pred, "--gt", gt, "--dataset", "pst900", "--eval-resolution", "2x4")
    with pytest.raises(SystemExit):
        score("--pred", pred, "--gt", gt, "--dataset", "pst900", "--eval-resolution", "4by2")


def test_label_out_of_range_in_gt_is_named(tmp_path):
    gt = write_pngs(tmp_path / "labels", {"a": [[0, 9]]})
    pred = write_pngs(tmp_path / "pred", {"a": [[0, 1]]})
    with pytest.raises(ValueError, match=r"labels/a\.png: label values \[9\]"):
        score("--pred", pred, "--gt", gt, "--dataset", "mfnet")


def test_folder_dataset_classes_yaml_and_day_night_lists(tmp_path):
    root = tmp_path / "own"
    root.mkdir()
    (root / "classes.yaml").write_text("classes: [bg, person]\nignore_index: 255\n")
    (root / "night.txt").write_text("n1\n")
    gt = write_pngs(root / "labels", {"d1": [[0, 1, 255]], "n1": [[1, 1, 0]]})
    pred = write_pngs(tmp_path / "pred", {"d1": [[0, 0, 1]], "n1": [[1, 1, 0]]})
    assert score("--pred", pred, "--gt", gt, "--dataset", root / "classes.yaml", "--out", tmp_path / "o") == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    # all: (0,0) (1,0) (1,1) (1,1) (0,0) -> C=[[2,0],[1,2]] -> IoU 2/3, 2/3; night only: IoU 1, 1
    assert m["overall"]["miou"] == pytest.approx(2 / 3)
    assert m["protocol"]["nan_policy"] == "nanmean"
    assert list(m["by_condition"]) == ["night"] and m["by_condition"]["night"]["miou"] == pytest.approx(1.0)


def test_real_pst900_label_scores_itself_perfectly_with_official_absent_class_zero(tmp_path):
    labels = SAMPLES / "pst900" / "test" / "labels"
    if not labels.is_dir():
        pytest.skip("shared RGB-T samples not present")
    palette = load_classes("pst900").palette
    lab = cv2.imread(str(labels / "sample_0000.png"), cv2.IMREAD_UNCHANGED)
    pred = write_pngs(tmp_path / "pred", {"sample_0000": lab}, lambda a: colorize(a, palette)[:, :, ::-1])
    assert score("--pred", pred, "--gt", labels, "--dataset", "pst900", "--out", tmp_path / "o") == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["overall"]["miou"] == pytest.approx(4 / 5)  # survivor absent -> 0 in the official mean
    assert m["overall"]["miou_by_nan_policy"]["nanmean"] == pytest.approx(1.0)


def test_taseg_main_reports_errors_in_one_line(tmp_path, monkeypatch, capsys):
    import taseg_ros.cli as cli

    monkeypatch.setitem(cli.COMMANDS, "score", ".score")  # until COMMANDS lists it
    gt = write_pngs(tmp_path / "labels", GT)
    pred = write_pngs(tmp_path / "pred", {"00001D": PRED["00001D"]})
    assert cli.main(["score", "--pred", str(pred), "--gt", str(gt), "--dataset", "mfnet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("taseg score: error:") and "00002N" in err
    write_pngs(pred, {"00002N": PRED["00002N"]})
    assert cli.main(["score", "--pred", str(pred), "--gt", str(gt), "--dataset", "mfnet"]) == 0
