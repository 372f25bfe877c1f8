"""Label-free quality (evaluation/quality.py), the gates (evaluation/gates.py) and `taseg bag eval`
without labels / against a baseline, each figure on frames where its value is known.

Real parts: street scenes and real MSRS frames panned by a few pixels per frame (a camera turning),
rosbag2 recordings written with the package's writer, the tiny models, the CLI, and the output
recording read back with Foxglove's own reader (mcap + mcap_ros2.decoder).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from bag_fixtures import msrs_frames, write_rgbt_bag
from dataset_fixtures import FixtureFrame
from taseg_ros.cli import bag as bag_cli
from taseg_ros.errors import InputError
from taseg_ros.evaluation.gates import Gate, check_gates, load_gates, parse_gate
from taseg_ros.evaluation.quality import (
    FIGURES,
    QualityTracker,
    RecordingQuality,
    class_flicker,
    confidence_figures,
    transition_counts,
    worst_segments,
)
from taseg_ros.scenes import panned, street_scene

pytestmark = pytest.mark.timeout(300)
STEP_PX = 3  # pan per frame


def scene(height: int, width: int, seed: int = 4) -> FixtureFrame:
    s = street_scene(np.random.default_rng(seed), height, width, night=False)
    return FixtureFrame(rgb=s.rgb, thermal=s.thermal, label=s.label)


def real_frame(samples_dir: Path, height: int, width: int) -> FixtureFrame:
    """A real MSRS pair resized to cover (height, width); labels: the grey level in 4 bands, so they
    move exactly with the image content."""
    import cv2

    frame = msrs_frames(samples_dir / "msrs", limit=13)[12]  # 00055D: a daytime street
    scale = max(height / frame.rgb.shape[0], width / frame.rgb.shape[1])
    rgb = cv2.resize(frame.rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)[:height, :width]
    thermal = cv2.resize(frame.thermal, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)[:height, :width]
    label = (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) // 64).astype(np.uint8)
    return FixtureFrame(rgb=rgb, thermal=thermal, label=label)


def track(frames, classes: int = 9, labels=None):
    """FrameQuality of each frame, the frame's own label as the prediction, confidence 1."""
    tracker = QualityTracker(classes)
    out = []
    for i, f in enumerate(frames):
        lab = f.label if labels is None else labels[i]
        out.append(tracker.update(lab, np.ones(lab.shape, np.float32), rgb=f.rgb))
    return out


# --- per-frame figures ---------------------------------------------------------------------------


def test_confidence_figures_known_values():
    confidence = np.full((10, 20), 0.9, np.float32)
    confidence[:, :10] = 0.2  # half the pixels at 0.2
    figures = confidence_figures(confidence, low_confidence=0.5)
    assert figures["mean_confidence"] == pytest.approx(0.55)
    assert figures["p5_confidence"] == pytest.approx(0.2)
    assert figures["low_confidence_share"] == 0.5
    assert confidence_figures(confidence, low_confidence=0.95)["low_confidence_share"] == 1.0


def test_identical_frames_have_zero_flicker():
    frame = scene(96, 128)
    first, *rest = track([frame] * 4)
    assert first.flicker is None and first.flicker_compensated is None  # nothing to compare with
    for q in rest:
        assert q.flicker == 0.0 and q.flicker_compensated == 0.0
        present = set(np.unique(frame.label).tolist())
        assert all((v == 0.0) if c in present else v is None for c, v in enumerate(q.class_flicker))
    shares = np.bincount(frame.label.ravel(), minlength=9) / frame.label.size
    assert np.allclose(first.class_shares, shares) and sum(first.class_shares) == pytest.approx(1.0)


@pytest.mark.parametrize("source", ["scene", "msrs"])
def test_a_panned_sequence_is_consistent_after_motion_compensation_only(source, request):
    big = scene(120, 160 + 12 * STEP_PX) if source == "scene" else real_frame(
        request.getfixturevalue("samples_dir"), 240, 320 + 12 * STEP_PX)
    frames = panned(big, 12, big.rgb.shape[1] - 11 * STEP_PX, STEP_PX)
    figures = track(frames)[1:]
    raw = np.mean([q.flicker for q in figures])
    compensated = np.mean([q.flicker_compensated for q in figures])
    assert raw > 0.02, raw  # the labels moved by 3 px
    assert compensated < 0.002 and compensated < raw / 20, (raw, compensated)


def test_class_flicker_is_one_minus_the_iou_of_the_class_masks():
    previous = np.zeros((20, 40), np.uint8)
    current = np.zeros((20, 40), np.uint8)
    previous[5:15, 5:15] = 1  # a 10x10 square ...
    current[5:15, 10:20] = 1  # ... moved 5 px right: overlap 50 px, union 150 px
    counts = transition_counts(previous, current, 3)
    flicker = class_flicker(counts)
    assert flicker[1] == pytest.approx(1 - 50 / 150)
    assert flicker[0] == pytest.approx(1 - (800 - 150) / (800 - 50))
    assert flicker[2] is None  # in neither frame
    assert 1 - np.trace(counts) / counts.sum() == pytest.approx(100 / 800)  # the overall flicker


def test_entropy_of_a_model_with_constant_and_with_one_hot_logits(tiny_checkpoint):
    """The Segmenter's entropy map (Prediction.entropy), normalised by log K: 1 for a model whose
    logits are the same for every class, 0 for one whose logits pick one class with certainty."""
    import torch

    from taseg_ros.inference import Segmenter
    from taseg_ros.model.checkpoint import load_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_checkpoint(tiny_checkpoint)
    head = model.mask_decoder.head
    rgb = scene(48, 64).rgb
    thermal01 = np.random.default_rng(0).random((48, 64), dtype=np.float32)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        constant = Segmenter(model).predict_prepared(rgb, thermal01, return_entropy=True)
        head.bias[3] = 60.0
        one_hot = Segmenter(model).predict_prepared(rgb, thermal01, return_entropy=True)
    assert np.allclose(constant.entropy, 1.0, atol=1e-5) and np.allclose(constant.confidence, 1 / 9)
    assert one_hot.entropy.max() < 1e-6 and (one_hot.labels == 3).all()
    tracker = QualityTracker(9)
    assert tracker.update(constant.labels, constant.confidence, constant.entropy).entropy == pytest.approx(1.0, abs=1e-5)


# --- worst segments -------------------------------------------------------------------------------


def test_worst_segments_of_a_known_series():
    times = np.arange(100) / 10.0  # 10 s at 10 Hz
    badness = np.full(100, 0.1)
    badness[40:50] = 0.9  # 4.0-4.9 s
    badness[80:85] = 0.5  # 8.0-8.4 s
    badness[7] = np.nan  # a frame without the figure
    first, second = worst_segments(times, badness, window_s=1.0, top=2)
    assert (first["start_s"], first["end_s"], first["frames"]) == (4.0, 4.9, 10) and first["mean"] == pytest.approx(0.9)
    assert 7.5 < second["start_s"] <= 8.0 and second["end_s"] >= 8.4  # overlaps the second stretch, not the first
    assert worst_segments(times[:3], badness[:3], window_s=5.0)[0]["frames"] == 3  # shorter than one window


def test_worst_flicker_segment_is_where_a_bad_stretch_was_inserted():
    frames = panned(scene(64, 96 + 39 * STEP_PX), 40, 96, STEP_PX)
    rng = np.random.default_rng(1)
    labels = [f.label if not 20 <= i < 25 else rng.integers(0, 4, f.label.shape).astype(np.uint8)
              for i, f in enumerate(frames)]
    recording = RecordingQuality(tuple(f"c{i}" for i in range(9)))
    for i, q in enumerate(track(frames, labels=labels)):
        recording.add(i / 10.0, q)
    worst = recording.worst(window_s=1.0, top=1)["flicker_compensated"][0]
    assert worst["start_s"] <= 2.0 and worst["end_s"] >= 2.5 and worst["mean"] > 0.2
    summary = recording.summary()
    assert summary["flicker_compensated"] == pytest.approx(np.nanmean(recording.series("flicker_compensated")))
    assert summary["thermal_reliance"] is None


# --- gates ---------------------------------------------------------------------------------------


def test_gates_parse_check_and_yaml(tmp_path):
    assert parse_gate("mean_confidence:change_min=-0.02") == Gate("mean_confidence", "change_min", -0.02)
    figures, baseline = {"mean_confidence": 0.70, "flicker": 0.10}, {"mean_confidence": 0.75, "flicker": 0.05}
    verdicts = check_gates([parse_gate("mean_confidence:change_min=-0.02"), parse_gate("flicker:max=0.2"),
                            parse_gate("flicker:change_max=0.01"), parse_gate("entropy:max=1")], figures, baseline)
    assert [v["passed"] for v in verdicts] == [False, True, False, False]
    assert verdicts[0]["value"] == pytest.approx(-0.05) and verdicts[3]["reason"] == "not computed in this run"
    path = tmp_path / "gates.yaml"
    path.write_text("gates:\n  flicker_compensated: {max: 0.05, change_max: 0.01}\n  baseline_agreement: {min: 0.9}\n")
    assert load_gates(path) == [Gate("flicker_compensated", "max", 0.05), Gate("flicker_compensated", "change_max", 0.01),
                                Gate("baseline_agreement", "min", 0.9)]
    for bad, says in (("mean_confidence", "FIGURE:BOUND=VALUE"), ("sharpness:max=1", "unknown figure"),
                      ("flicker:most=1", "unknown bound"), ("flicker:max=x", "needs a number")):
        with pytest.raises(InputError, match=says):
            parse_gate(bad)
    path.write_text("gates: [flicker]\n")
    with pytest.raises(InputError, match="expected a 'gates' mapping"):
        load_gates(path)


# --- bag eval -------------------------------------------------------------------------------------


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = bag_cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@functools.lru_cache(maxsize=4)
def segmenter(checkpoint):
    from taseg_ros.inference import Segmenter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Segmenter.from_checkpoint(checkpoint)


def predict_like_node(checkpoint, frame) -> np.ndarray:
    """The labels of a model on a recorded frame, as the node computes them."""
    from taseg_ros.frames.thermal import ThermalNormalization, normalize_thermal

    source = frame.source
    return segmenter(checkpoint).predict(source.rgb, normalize_thermal(source.thermal),
                       thermal_norm=ThermalNormalization("fixed", 0.0, 1.0)).labels


@pytest.fixture(scope="module")
def panned_bag(tmp_path_factory):
    """A street scene panned 3 px per frame, 12 frames at 10 Hz (one thermal frame dropped), mcap."""
    frames = panned(scene(48, 64 + 11 * STEP_PX), 12, 64, STEP_PX)
    return write_rgbt_bag(tmp_path_factory.mktemp("bags") / "panned", frames, storage="mcap", drop_thermal=(6,),
                          seed=2)


def foxglove_messages(recording: Path) -> dict[str, list]:
    """Every message of the taseg topics, decoded by Foxglove's own reader (mcap + mcap_ros2)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out: dict[str, list] = {}
    (path,) = recording.glob("*.mcap")
    with open(path, "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, _, msg in reader.iter_decoded_messages():
            if channel.topic.startswith("/taseg/"):
                out.setdefault(channel.topic, []).append((schema.name, msg))
    return out


def test_eval_without_labels_reports_every_figure_and_foxglove_reads_the_topics(panned_bag, thermal_checkpoint,
                                                                                  tmp_path):
    out = tmp_path / "eval"
    code, stdout, _ = run_cli("eval", panned_bag.path, "--checkpoint", thermal_checkpoint, "-o", out,
                              "--thermal-reliance", "--segment-window", "0.5")
    assert code == 0, stdout
    report = json.loads((out / "report.json").read_text())
    frames = report["per_frame"]
    assert len(frames) == panned_bag.expected_pairs == 11 and report["scores"] is None
    for name in ("mean_confidence", "p5_confidence", "low_confidence_share", "entropy", "thermal_reliance"):
        values = [f["quality"][name] for f in frames]
        assert all(0.0 <= v <= 1.0 for v in values), name
        assert report["quality"]["summary"][name] == pytest.approx(np.mean(values)), name
    assert frames[0]["quality"]["flicker"] is None and all(f["quality"]["flicker"] is not None for f in frames[1:])
    assert report["quality"]["summary"]["thermal_reliance"] > 0  # this model's labels depend on thermal
    worst = report["quality"]["worst_segments"]
    assert set(worst) == {"low_confidence_share", "entropy", "flicker_compensated"}
    assert all(0 <= s["start_s"] <= s["end_s"] <= report["recording_duration_s"] for s in worst["entropy"])
    assert sum(report["quality"]["classes"][c]["share"] for c in report["class_names"]) == pytest.approx(1.0)
    markdown = (out / "report.md").read_text()
    assert "## Label-free quality" in markdown and "### Worst segments" in markdown and "quality.png" in markdown
    assert (out / "quality.png").stat().st_size > 0 and "label-free: mean confidence" in stdout

    topics = foxglove_messages(out / "panned_taseg")
    n = len(frames)
    assert [s for s, _ in topics["/taseg/confidence"]] == ["sensor_msgs/msg/Image"] * n
    assert {m.encoding for _, m in topics["/taseg/confidence"]} == {"32FC1"}
    for name in ("mean_confidence", "p5_confidence", "low_confidence_share", "entropy", "thermal_reliance"):
        values = [m.data for s, m in topics[f"/taseg/quality/{name}"] if s == "std_msgs/msg/Float32"]
        assert np.allclose(values, [f["quality"][name] for f in frames], atol=1e-6), name
    assert len(topics["/taseg/quality/flicker_compensated"]) == n - 1  # none for the first frame
    shares = topics["/taseg/quality/class_shares"]
    assert len(shares) == n and shares[0][0] == "std_msgs/msg/Float32MultiArray"
    assert np.allclose(shares[0][1].data, frames[0]["quality"]["class_shares"], atol=1e-6)
    confidence = topics["/taseg/confidence"][0][1]
    pixels = np.frombuffer(bytes(confidence.data), np.float32).reshape(confidence.height, confidence.width)
    assert pixels.mean() == pytest.approx(frames[0]["quality"]["mean_confidence"], abs=1e-5)


def test_thermal_reliance_is_zero_when_thermal_has_no_effect(panned_bag, tiny_checkpoint, thermal_checkpoint):
    from taseg_ros.bag.evaluate.run import EvalSettings, evaluate_bag
    from taseg_ros.bag.pairs import PairSource

    reliance = {}
    for name, path in (("untrained", tiny_checkpoint), ("thermal", thermal_checkpoint)):
        result = evaluate_bag(EvalSettings(PairSource(panned_bag.path, max_pairs=5), thermal_reliance=True), segmenter(path))
        reliance[name] = result.quality.series("thermal_reliance")
    assert (reliance["untrained"] == 0).all()  # a fresh model's thermal branch adds zero
    assert (reliance["thermal"] > 0).all()


def test_model_baseline_agreement_changes_and_gate_exit_codes(panned_bag, tiny_checkpoint, thermal_checkpoint,
                                                              tmp_path):
    # the same model as its own baseline: full agreement, no change
    code, stdout, _ = run_cli("eval", panned_bag.path, "--checkpoint", tiny_checkpoint, "--baseline", tiny_checkpoint,
                              "-o", tmp_path / "same", "--no-output-bag", "--max-pairs", "4",
                              "--gate", "baseline_agreement:min=1",
                              "--gate", "flicker_compensated:change_max=0", "--gate", "entropy:change_min=0")
    assert code == 0, stdout
    comparison = json.loads((tmp_path / "same" / "report.json").read_text())["comparison"]
    assert comparison["kind"] == "model" and comparison["passed"]
    assert comparison["figures"]["baseline_agreement"]["value"] == 1.0
    assert all(row["change"] == 0 for name, row in comparison["figures"].items() if row["change"] is not None)

    # another model: agreement below 1, the per-frame agreement computed from both models' labels
    gates = tmp_path / "gates.yaml"
    gates.write_text("gates:\n  baseline_agreement: {min: 0.999}\n  mean_confidence: {change_min: -1}\n")
    code, stdout, _ = run_cli("eval", panned_bag.path, "--checkpoint", thermal_checkpoint, "--baseline",
                              tiny_checkpoint, "-o", tmp_path / "other", "--no-output-bag", "--gates", gates,
                              "--max-pairs", "5")
    assert code == 1, stdout
    report = json.loads((tmp_path / "other" / "report.json").read_text())
    verdicts = {g["gate"]: g["passed"] for g in report["comparison"]["gates"]}
    assert verdicts == {"baseline_agreement:min=0.999": False, "mean_confidence:change_min=-1": True}
    assert "FAILED baseline_agreement:min=0.999" in stdout and "**FAIL**" in (tmp_path / "other" / "report.md").read_text()
    agreement = [f["quality"]["baseline_agreement"] for f in report["per_frame"]]
    expected = [np.mean(predict_like_node(thermal_checkpoint, f) == predict_like_node(tiny_checkpoint, f))
                for f in panned_bag.paired_frames[:5]]  # raw images: the decoded frames are the source frames
    assert np.allclose(agreement, expected) and min(agreement) < 1
    base = [f["baseline_quality"]["mean_confidence"] for f in report["per_frame"]]
    change = report["comparison"]["figures"]["mean_confidence"]["change"]
    assert change == pytest.approx(report["quality"]["summary"]["mean_confidence"] - np.mean(base))


def test_report_baseline_and_what_is_refused(panned_bag, tiny_checkpoint, tmp_path):
    first = tmp_path / "first"
    assert run_cli("eval", panned_bag.path, "--checkpoint", tiny_checkpoint, "-o", first, "--no-output-bag",
                   "--max-pairs", "4")[0] == 0
    code, stdout, _ = run_cli("eval", panned_bag.path, "--checkpoint", tiny_checkpoint, "--baseline", first,
                              "-o", tmp_path / "second", "--no-output-bag", "--max-pairs", "4",
                              "--gate", "flicker:change_max=0",
                              "--gate", "mean_confidence:change_min=0.01")
    assert code == 1, stdout  # same model, same figures: the change of the mean confidence is 0 < 0.01
    comparison = json.loads((tmp_path / "second" / "report.json").read_text())["comparison"]
    assert comparison["kind"] == "report" and comparison["figures"]["flicker"]["change"] == pytest.approx(0, abs=1e-12)
    assert [g["passed"] for g in comparison["gates"]] == [True, False]

    # refused in one line (exit 2), nothing written
    report = json.loads((first / "report.json").read_text())
    other_classes = tmp_path / "other_classes.json"
    other_classes.write_text(json.dumps({**report, "class_names": ["a", "b"]}))
    other_recording = tmp_path / "other_recording.json"
    other_recording.write_text(json.dumps({**report, "recording_start_ns": 5}))
    old_report = tmp_path / "old.json"
    old_report.write_text(json.dumps({k: v for k, v in report.items() if k != "quality"}))
    interrupted = tmp_path / "interrupted.json"
    interrupted.write_text(json.dumps({**report, "interrupted": True}))
    from taseg_ros.model.checkpoint import init_checkpoint

    pst = tmp_path / "pst.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init_checkpoint("tiny", "pst900", pst, seed=0)
    cases = [
        (["--baseline", other_classes], "differ from the model's"),
        (["--baseline", other_recording], "a report of another recording"),
        (["--baseline", old_report], "with label-free figures"),
        (["--baseline", interrupted], "the report of an interrupted run"),
        # a report of the first 4 pairs is no baseline of the whole recording (was accepted and compared)
        (["--baseline", first], "its figures are means over 4 pairs, this run's over"),
        (["--baseline", pst], "differ from the checkpoint's"),
        (["--gate", "flicker:change_max=0"], "a change bound needs --baseline"),
        (["--gate", "thermal_reliance:max=0.5"], "needs --thermal-reliance"),
        (["--baseline", first, "--gate", "baseline_agreement:min=0.9"], "needs a model as --baseline"),
        (["--gate", "flicker<0.1"], "FIGURE:BOUND=VALUE"),
        (["--low-confidence", "0"], "--low-confidence"),
    ]
    for extra, says in cases:
        out = tmp_path / "refused"
        code, stdout, stderr = run_cli("eval", panned_bag.path, "--checkpoint", tiny_checkpoint, "-o", out, *extra)
        assert code == 2 and says in stderr and len(stderr.strip().splitlines()) == 1, (extra, stderr)
        assert not out.exists(), extra


def test_label_free_figures_beside_miou_on_real_msrs_frames(samples_dir, tiny_checkpoint, tmp_path):
    from taseg_ros.bag.labels import stamp_id
    from taseg_ros.frames.files import write_image

    frames = panned(real_frame(samples_dir, 120, 160 + 7 * STEP_PX), 8, 160, STEP_PX)
    rec = write_rgbt_bag(tmp_path / "msrs_pan", frames, storage="sqlite3", seed=5)
    labels = tmp_path / "labels"
    for f in rec.paired_frames:
        write_image(labels / f"{stamp_id(f.rgb_stamp_ns)}.png", (f.source.label > 1).astype(np.uint8))
    code, stdout, _ = run_cli("eval", rec.path, "--checkpoint", tiny_checkpoint, "--labels", labels, "-o",
                              tmp_path / "eval", "--no-output-bag")
    assert code == 0, stdout
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["scores"] is not None and report["frames"]["scored"] == 8
    assert set(report["quality"]["summary"]) == set(FIGURES)
    assert "mIoU" in stdout and "label-free: mean confidence" in stdout


def test_frames_too_small_for_optical_flow_have_raw_flicker_only():
    tracker = QualityTracker(3)
    labels = np.zeros((8, 8), np.uint8)
    rgb = np.zeros((8, 8, 3), np.uint8)
    tracker.update(labels, np.ones((8, 8), np.float32), rgb=rgb)
    second = tracker.update(labels, np.ones((8, 8), np.float32), rgb=rgb)
    assert second.flicker == 0.0 and second.flicker_compensated is None
