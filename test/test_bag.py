"""The rosbag tools (`taseg bag info|extract|eval|replay`) on real rosbag2 files written with rosbags.

Recordings are made by bag_fixtures (the demo's recording writer): two cameras at 10 Hz with a thermal stamp offset,
stamp jitter and random transport delays (so the streams interleave irregularly), a few dropped
frames, raw or compressed images, sqlite3 or mcap, Humble/Jazzy/Kilted message definitions; from
generated frames with known labels and from the real MSRS pairs in ../shared (skipped when absent).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from bag_fixtures import (
    DEFAULT_RGB_TOPIC,
    DEFAULT_THERMAL_TOPIC,
    msrs_frames,
    synthetic_frames,
    thermal_counts,
    write_rgbt_bag,
)
from taseg_ros.bag.io.reader import BagError, open_bag
from taseg_ros.bag.io.stop import stop_on_sigint
from taseg_ros.bag.labels import stamp_id
from taseg_ros.bag.pairs import PairSource
from taseg_ros.cli import bag as bag_cli
from taseg_ros.evaluation.metrics import ConfusionMatrix
from taseg_ros.frames.pairing import Pair
from taseg_ros.ros.domains import claim_domain

REPO = Path(__file__).resolve().parents[1]
DROP_RGB = (5, 17)
DROP_THERMAL = (11, 23, 24)
N_FRAMES = 40
EXPECTED_PAIRS = N_FRAMES - len(DROP_RGB) - len(DROP_THERMAL)  # 35: no frame index is dropped twice

pytestmark = pytest.mark.timeout(300)


def record(path, frames=None, **kwargs):
    frames = frames if frames is not None else synthetic_frames(N_FRAMES, 48, 64, seed=1)
    kwargs.setdefault("drop_rgb", DROP_RGB)
    kwargs.setdefault("drop_thermal", DROP_THERMAL)
    return write_rgbt_bag(path, frames, **kwargs)


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint):
    from taseg_ros.inference import Segmenter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Segmenter.from_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def raw_bag(tmp_path_factory):
    """sqlite3, raw rgb8 + mono8, Humble definitions, labels on a topic."""
    return record(
        tmp_path_factory.mktemp("bags") / "raw_sqlite", storage="sqlite3", distro="humble", label_topic="/labels"
    )


@pytest.fixture(scope="module")
def compressed_bag(tmp_path_factory):
    """mcap, JPEG RGB + PNG mono16 thermal (CompressedImage), Jazzy definitions, labels on a topic."""
    return record(
        tmp_path_factory.mktemp("bags") / "compressed_mcap",
        storage="mcap",
        distro="jazzy",
        compressed=True,
        thermal_encoding="mono16",
        label_topic="/labels",
    )


def run_cli(*argv) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = bag_cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def predict_like_node(segmenter, rgb, thermal):
    from taseg_ros.frames.thermal import ThermalNormalization, normalize_thermal

    return segmenter.predict(
        rgb, normalize_thermal(thermal), thermal_norm=ThermalNormalization("fixed", 0.0, 1.0)
    ).labels


# --- info -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "storage,compressed,distro,thermal_encoding,rgb_encoding",
    [
        ("sqlite3", False, "humble", "mono16", "rgb8"),
        ("mcap", True, "jazzy", "mono8", "rgb8"),
        ("mcap", False, "kilted", "mono8", "bgr8"),
    ],
)
def test_info_counts_pairs_gaps_and_offsets(tmp_path, storage, compressed, distro, thermal_encoding, rgb_encoding):
    from taseg_ros.bag.info import format_info, inspect_bag

    rec = record(
        tmp_path / "run",
        storage=storage,
        compressed=compressed,
        distro=distro,
        thermal_encoding=thermal_encoding,
        rgb_encoding=rgb_encoding,
    )
    info = inspect_bag(rec.path)
    assert info.storage == storage
    assert (info.rgb.topic, info.thermal.topic) == (rec.rgb_topic, rec.thermal_topic)  # guessed
    assert (info.rgb.count, info.thermal.count) == (N_FRAMES - 2, N_FRAMES - 3)
    assert info.pairs == EXPECTED_PAIRS == rec.expected_pairs
    assert info.pairing["unmatched_rgb"] == 3 and info.pairing["unmatched_thermal"] == 2
    # gaps: RGB misses frames 5 and 17; thermal 11 and the run 23-24
    assert (info.rgb.gaps, info.rgb.missing_frames) == (2, 2)
    assert (info.thermal.gaps, info.thermal.missing_frames) == (2, 3)
    assert (info.rgb.width, info.rgb.height) == (64, 48)
    assert 9.0 < info.rgb.rate_hz < 11.0
    assert info.rgb.median_period_ms == pytest.approx(100.0, abs=3.0)
    # thermal stamps sit 6 ms after RGB with 2 ms jitter on each
    assert 3.0 < info.nearest_offset_ms["median"] < 9.0
    assert info.rgb_without_partner == 3
    topics = {t.name: t for t in info.topics}
    assert topics["/imu/data"].msgtype == "sensor_msgs/msg/Imu" and topics["/imu/data"].count == 5 * N_FRAMES
    assert info.usable and info.verdict.startswith("USABLE")
    text = format_info(info)
    assert f"pairs at slop 20 ms (the node's pairing): {EXPECTED_PAIRS}" in text
    assert ("mono16" in text) == (thermal_encoding == "mono16")


def test_info_slop_below_the_offset_is_called_out_with_a_better_slop(tmp_path):
    rec = record(tmp_path / "run", thermal_offset_s=0.012, jitter_s=0.001)
    code, out, _ = run_cli("info", rec.path, "--slop", "0.002")
    assert code == 1
    assert "pairs at slop 2 ms (the node's pairing): 0" in out
    assert "NOT USABLE at slop 2 ms" in out and "try --slop 0.02" in out
    code, out, _ = run_cli("info", rec.path, "--json", "--slop", "0.02")
    data = json.loads(out)
    assert code == 0 and data["pairs"] == EXPECTED_PAIRS and data["usable"] is True


def test_info_without_metadata_yaml_reads_the_storage_file(tmp_path):
    rec = record(tmp_path / "run", storage="sqlite3")
    (rec.path / "metadata.yaml").unlink()  # what a killed `ros2 bag record` leaves behind
    code, out, _ = run_cli("info", rec.path)
    assert code == 0
    assert "metadata.yaml is missing; reading run.db3 directly" in out
    assert f"(the node's pairing): {EXPECTED_PAIRS}" in out


# --- errors -----------------------------------------------------------------------------------------


def test_missing_topic_lists_the_topics_that_exist(raw_bag, tmp_path):
    code, _, err = run_cli("extract", raw_bag.path, "-o", tmp_path / "ds", "--rgb-topic", "/camera/rgb")
    assert code == 2
    assert err.count("\n") == 1, "one line"
    assert "--rgb-topic /camera/rgb: no such topic" in err
    assert f"{DEFAULT_RGB_TOPIC} (sensor_msgs/msg/Image, 38 msgs)" in err
    assert "/imu/data (sensor_msgs/msg/Imu, 200 msgs)" in err


def test_wrong_message_type_is_named(raw_bag, tmp_path):
    code, _, err = run_cli("info", raw_bag.path, "--thermal-topic", "/imu/data")
    assert code == 2
    assert (
        "--thermal-topic /imu/data: the topic is sensor_msgs/msg/Imu, expected sensor_msgs/msg/Image or "
        "sensor_msgs/msg/CompressedImage" in err
    )
    assert DEFAULT_THERMAL_TOPIC in err  # the image topics that would do


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_recording_is_a_clear_error(tmp_path, storage):
    rec = record(tmp_path / "run", storage=storage)
    storage_file = next(p for p in rec.path.iterdir() if p.suffix in (".mcap", ".db3"))
    size = storage_file.stat().st_size
    with storage_file.open("r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(BagError) as excinfo:
        open_bag(rec.path)
    text = str(excinfo.value)
    assert storage_file.name in text and "truncated" in text
    if storage == "mcap":
        assert "mcap recover" in text


def test_unreadable_and_missing_recordings(tmp_path):
    garbage = tmp_path / "notes.mcap"
    garbage.write_text("this is not a recording")
    code, _, err = run_cli("info", garbage)
    assert code == 2 and "notes.mcap: cannot read this rosbag2 recording" in err and "not a ROS 2 mcap file" in err
    code, _, err = run_cli("info", tmp_path / "nope")
    assert code == 2 and "recording not found" in err and "nope" in err
    (tmp_path / "empty_dir").mkdir()
    code, _, err = run_cli("info", tmp_path / "empty_dir")
    assert code == 2 and "not a rosbag2 recording" in err


def test_ambiguous_image_topics_ask_for_the_options(tmp_path):
    rec = record(tmp_path / "run", rgb_topic="/cam_a/image", thermal_topic="/cam_b/image")
    code, out, _ = run_cli("info", rec.path)
    assert code == 1
    assert "cannot tell which image topic is the thermal camera; pass --rgb-topic and --thermal-topic" in out
    code, out, _ = run_cli("info", rec.path, "--rgb-topic", "/cam_a/image", "--thermal-topic", "/cam_b/image")
    assert code == 0 and f": {EXPECTED_PAIRS} (unmatched" in out


# --- extract ----------------------------------------------------------------------------------------


def test_extract_writes_the_folder_dataset(compressed_bag, tmp_path):
    from taseg_ros.datasets import build_dataset
    from taseg_ros.frames.files import read_image

    out = tmp_path / "mine"
    code, text, err = run_cli("extract", compressed_bag.path, "-o", out, "--label-topic", "/labels")
    assert code == 0, err
    frames = compressed_bag.paired_frames
    ids = [stamp_id(f.rgb_stamp_ns) for f in frames]
    assert sorted(p.stem for p in (out / "rgb").iterdir()) == sorted(ids)
    assert sorted(p.stem for p in (out / "thermal").iterdir()) == sorted(ids)
    assert sorted(p.stem for p in (out / "labels").iterdir()) == sorted(ids)
    assert f"{EXPECTED_PAIRS} of {EXPECTED_PAIRS} pairs" in text
    with open_bag(compressed_bag.path) as bag:
        jpegs = {
            bag.deserialize(m).header.stamp.nanosec: bytes(bag.deserialize(m).data)
            for m in bag.messages([compressed_bag.rgb_topic])
        }
    for frame, i in zip(frames, ids):
        thermal = read_image(out / "thermal" / f"{i}.png")
        assert thermal.dtype == np.uint16 and np.array_equal(
            thermal, thermal_counts(frame.source.thermal)
        )  # PNG: exact
        assert np.array_equal(read_image(out / "labels" / f"{i}.png"), frame.label)
        recorded_bgr = cv2.imdecode(np.frombuffer(jpegs[frame.rgb_stamp_ns % 10**9], np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(
            read_image(out / "rgb" / f"{i}.png"), recorded_bgr
        )  # the JPEG's pixels, stored losslessly
    train, val = (out / "train.txt").read_text().split(), (out / "val.txt").read_text().split()
    assert train + val == ids and len(val) == 7  # the last 20 %, one block
    rows = (out / "frames.csv").read_text().splitlines()
    assert len(rows) == 1 + EXPECTED_PAIRS and rows[1].startswith(f"{ids[0]},")
    ds = build_dataset("folder", out, "train")
    sample = ds[0]
    assert len(ds) == 28 and sample["label"].shape == (48, 64) and sample["thermal"].dtype == np.float32

    # extracting the same recording again changes nothing
    before = {p.name: p.read_text() for p in out.glob("*.txt")}
    assert run_cli("extract", compressed_bag.path, "-o", out, "--label-topic", "/labels")[0] == 0
    assert {p.name: p.read_text() for p in out.glob("*.txt")} == before


def extract(bag, out, **options):
    """`taseg bag extract` through its library entry point."""
    from taseg_ros.bag.extract import ExtractSettings, extract_pairs
    from taseg_ros.bag.pairs import PairSource

    return extract_pairs(ExtractSettings(PairSource(bag), out, **options))


def test_extract_every_and_hz_thin_the_pairs(raw_bag, tmp_path):
    all_ids = [stamp_id(f.rgb_stamp_ns) for f in raw_bag.paired_frames]
    every = extract(raw_bag.path, tmp_path / "every", every=3, val_fraction=0)
    assert every.written == all_ids[::3]
    assert not (tmp_path / "every" / "val.txt").exists()
    hz = extract(raw_bag.path, tmp_path / "hz", hz=2.5, prefix="run1_")
    stamps = np.array([f.rgb_stamp_ns for f in raw_bag.paired_frames])
    kept = np.array([int(i.split("_")[1]) * 10**9 + int(i.split("_")[2]) for i in hz.written])
    assert all(i.startswith("run1_") for i in hz.written) and set(kept) <= set(stamps)
    gaps = np.diff(kept) * 1e-9
    assert gaps.min() >= 0.9 / 2.5 and gaps.max() < 0.65
    assert 8 <= len(kept) <= 11  # ~4 s at 2.5 Hz
    # a second recording adds to the folder
    extract(raw_bag.path, tmp_path / "hz", every=10, prefix="run2_", val_fraction=0)
    listed = (tmp_path / "hz" / "train.txt").read_text().split() + (tmp_path / "hz" / "val.txt").read_text().split()
    assert len(listed) == len(set(listed)) == len(hz.written) + 4



def test_extract_keeps_raw_thermal_and_records_the_homography_for_the_loader(raw_bag, tmp_path):
    """The thermal files stay as the camera sent them; classes.yaml records the homography, and the
    loader applies it after normalising, as the node does (the full parity suite: test_parity.py)."""
    import yaml

    from taseg_ros.datasets import build_dataset
    from taseg_ros.frames.files import read_image
    from taseg_ros.frames.thermal import normalize_thermal

    shift = np.array([[1.0, 0, 2], [0, 1.0, 0], [0, 0, 1]])  # thermal px (x, y) -> RGB px (x + 2, y)
    result = extract(raw_bag.path, tmp_path / "warped", every=5, val_fraction=0, homography=shift)
    assert len(result.written) > 3
    notes = [note for note in result.notes if note.startswith("thermal frames")]
    assert notes == ["thermal frames (64x48) written at the camera's own size; the loader normalises them and "
                     "then they are warped by the recorded --thermal-homography onto the RGB grid, as the node does"]
    recorded = yaml.safe_load((tmp_path / "warped" / "classes.yaml").read_text())["thermal"]
    assert recorded == {"normalization": {"mode": "auto", "low": 0.0, "high": 255.0, "percentiles": [1.0, 99.0]},
                        "homography": [1.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]}
    dataset = build_dataset("folder", tmp_path / "warped", "train")
    for index, frame in enumerate(raw_bag.paired_frames[::5]):
        thermal = read_image(tmp_path / "warped" / "thermal" / f"{stamp_id(frame.rgb_stamp_ns)}.png")
        assert np.array_equal(thermal, frame.source.thermal)  # this recording's thermal topic is mono8
        loaded = dataset[index]["thermal"]
        assert np.array_equal(loaded[:, 2:], normalize_thermal(thermal)[:, :-2]) and not loaded[:, :2].any()
    # more frames join the folder only with the same preparation
    with pytest.raises(ValueError, match="records the thermal preparation .* homography \\[1 0 2 0 1 0 0 0 1\\]"):
        extract(raw_bag.path, tmp_path / "warped", every=7, val_fraction=0)


def test_extract_real_msrs_pairs(samples_dir, tmp_path):
    from taseg_ros.frames.files import read_image

    frames = msrs_frames(samples_dir / "msrs")  # 20 real 640x480 pairs
    rec = write_rgbt_bag(
        tmp_path / "msrs", frames, storage="mcap", compressed="rgb", drop_rgb=[3], drop_thermal=[8, 14], seed=3
    )
    code, out, _ = run_cli("info", rec.path)
    assert code == 0 and f"(the node's pairing): {len(frames) - 3}" in out and "640x480" in out
    result = extract(rec.path, tmp_path / "ds")
    assert len(result.written) == len(frames) - 3 == rec.expected_pairs
    for f in rec.paired_frames:
        thermal = read_image(tmp_path / "ds" / "thermal" / f"{stamp_id(f.rgb_stamp_ns)}.png")
        assert np.array_equal(thermal, f.source.thermal)


# --- eval ------------------------------------------------------------------------------------------


def test_eval_scores_match_an_independent_computation(raw_bag, segmenter, tmp_path):
    from taseg_ros.bag.evaluate.report import format_summary, write_eval_report
    from taseg_ros.bag.evaluate.run import EvalSettings, evaluate_bag

    result = evaluate_bag(EvalSettings(PairSource(raw_bag.path), label_topic="/labels"), segmenter, output_bag=tmp_path / "out")
    assert (result.pairs, result.processed, result.scored) == (EXPECTED_PAIRS,) * 3
    assert result.labels_total == N_FRAMES - len(DROP_RGB) and result.labels_unmatched == 3
    expected = ConfusionMatrix(9)
    for f in raw_bag.paired_frames:  # raw images: the decoded frames are the source frames
        expected.update(f.label, predict_like_node(segmenter, f.source.rgb, f.source.thermal))
    assert np.array_equal(result.scores.overall.matrix, expected.matrix)
    assert result.dropped == len(result.dropped_arrivals_ns) and 0 <= result.dropped < EXPECTED_PAIRS

    files = write_eval_report(result, tmp_path / "report")
    report = json.loads(files["json"].read_text())
    assert report["frames"]["scored"] == EXPECTED_PAIRS
    assert report["scores"]["overall"]["confusion_matrix"] == expected.matrix.tolist()
    assert report["realtime"]["dropped"] == result.dropped
    assert len(report["per_frame"]) == EXPECTED_PAIRS
    assert "mIoU" in files["markdown"].read_text() and files["confusion"].stat().st_size > 0
    assert f"{EXPECTED_PAIRS} pairs scored" in format_summary(result)

    # the output recording: inputs as recorded, the node's output topics with the RGB stamps
    with open_bag(tmp_path / "out") as out:
        counts = {t.name: t.count for t in out.topics.values()}
        assert counts[DEFAULT_RGB_TOPIC] == N_FRAMES - 2 and counts[DEFAULT_THERMAL_TOPIC] == N_FRAMES - 3
        for name in ("labels", "colorized", "overlay", "ground_truth", "ground_truth/colorized"):
            assert counts[f"/taseg/{name}"] == EXPECTED_PAIRS
        assert counts["/taseg/class_info"] == 1 and counts["/labels"] == N_FRAMES - 2
        by_stamp = {f.rgb_stamp_ns: f for f in raw_bag.paired_frames}
        for message in out.messages(["/taseg/labels"]):
            msg = out.deserialize(message)
            frame = by_stamp[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec]
            labels = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width)
            assert np.array_equal(labels, predict_like_node(segmenter, frame.source.rgb, frame.source.thermal))
            break
        class_info = json.loads(out.deserialize(next(out.messages(["/taseg/class_info"]))).data)
        assert class_info["classes"][:3] == ["unlabeled", "car", "person"]


def test_eval_with_perfect_labels_scores_one(compressed_bag, segmenter, tmp_path):
    """Labels folder named by stamp (as extraction names files) holding the model's own predictions
    on the decoded frames: every pair matched, mIoU exactly 1."""
    from taseg_ros.bag.evaluate.run import EvalSettings, evaluate_bag
    from taseg_ros.frames.files import write_image
    from taseg_ros.frames.codec import decode_rgb, decode_thermal

    from taseg_ros.frames.pairing import stamp_to_ns

    labels = tmp_path / "labels"
    with open_bag(compressed_bag.path) as bag:
        msgs = [bag.deserialize(m) for m in bag.messages([compressed_bag.rgb_topic, compressed_bag.thermal_topic])]
    by_stamp = {stamp_to_ns(m.header.stamp): m for m in msgs}
    for f in compressed_bag.paired_frames:
        rgb, thermal = decode_rgb(by_stamp[f.rgb_stamp_ns]), decode_thermal(by_stamp[f.thermal_stamp_ns])
        write_image(labels / f"{stamp_id(f.rgb_stamp_ns)}.png", predict_like_node(segmenter, rgb, thermal))
    write_image(labels / "notes.png", np.zeros((4, 4), np.uint8))  # no stamp in the name: ignored
    result = evaluate_bag(EvalSettings(PairSource(compressed_bag.path), labels_dir=labels), segmenter)
    assert result.scored == EXPECTED_PAIRS and result.labels_unmatched == 0
    assert result.scores.overall.miou == 1.0 and result.scores.overall.pixel_accuracy == 1.0


def test_eval_realtime_mode_follows_the_newest_pair_wins_policy(raw_bag, segmenter, tmp_path):
    from taseg_ros.bag.evaluate.run import EvalSettings, evaluate_bag

    result = evaluate_bag(EvalSettings(PairSource(raw_bag.path), mode="realtime", label_topic="/labels"), segmenter,
                          output_bag=tmp_path / "out")
    assert result.pairs == EXPECTED_PAIRS
    assert result.processed + result.dropped == EXPECTED_PAIRS  # every pair is either run or replaced
    assert result.scored == result.processed
    assert all(f.start_ns >= f.arrival_ns and f.finish_ns > f.start_ns for f in result.frames)
    starts = [f.start_ns for f in result.frames]
    finishes = [f.finish_ns for f in result.frames]
    assert all(s >= prev for s, prev in zip(starts[1:], finishes[:-1])), "one worker: no overlap"
    with open_bag(tmp_path / "out") as out:
        assert out.topics["/taseg/labels"].count == result.processed
        log_times = [m.log_time_ns for m in out.messages(["/taseg/labels"])]
        assert log_times == sorted(f.finish_ns for f in result.frames)  # published when the worker finished
    assert "latency_ms" in result.timing() and result.timing()["latency_ms"]["count"] == result.processed


def test_eval_on_real_msrs_frames(samples_dir, segmenter, tmp_path):
    from taseg_ros.bag.evaluate.run import EvalSettings, evaluate_bag
    from taseg_ros.frames.files import write_image

    frames = msrs_frames(samples_dir / "msrs", limit=8, size=(120, 160))
    rec = write_rgbt_bag(tmp_path / "msrs", frames, storage="sqlite3", drop_thermal=[2], seed=5)
    labels = tmp_path / "labels"
    for f in rec.paired_frames:
        write_image(
            labels / f"{stamp_id(f.rgb_stamp_ns)}.png", predict_like_node(segmenter, f.source.rgb, f.source.thermal)
        )
    result = evaluate_bag(EvalSettings(PairSource(rec.path), labels_dir=labels), segmenter, output_bag=tmp_path / "out")
    assert result.pairs == result.scored == 7
    assert result.scores.overall.miou == 1.0
    with open_bag(tmp_path / "out") as out:
        assert out.topics["/taseg/overlay"].count == 7


def test_ctrl_c_leaves_a_finished_output_recording(raw_bag, segmenter, tmp_path):
    """A real SIGINT in the middle of the run: the loop stops after the current pair, the output
    recording is closed properly (metadata.yaml, mcap summary) and holds the pairs done so far."""
    from taseg_ros.bag.evaluate.run import EvalSettings, evaluate_bag

    def interrupt_at_five(n):
        if n == 5:
            os.kill(os.getpid(), signal.SIGINT)

    with stop_on_sigint() as stop:
        result = evaluate_bag(EvalSettings(PairSource(raw_bag.path)), segmenter, output_bag=tmp_path / "out",
                              stop=lambda: bool(stop), on_pair=interrupt_at_five)
    assert result.interrupted and result.processed == 5
    assert (tmp_path / "out" / "metadata.yaml").is_file()
    with open_bag(tmp_path / "out") as out:
        assert out.topics["/taseg/labels"].count == 5
        assert len(list(out.messages(["/taseg/overlay"]))) == 5


@pytest.mark.slow
def test_ctrl_c_on_the_command_line(tmp_path, tiny_checkpoint):
    """`taseg bag eval` in its own process, interrupted by SIGINT: exit code 130, finished recording."""
    rec = record(
        tmp_path / "long", frames=synthetic_frames(400, 48, 64, seed=2), drop_rgb=(), drop_thermal=(), imu=False
    )
    out_bag = tmp_path / "eval" / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taseg_ros.cli.bag",
            "eval",
            str(rec.path),
            "--checkpoint",
            str(tiny_checkpoint),
            "-o",
            str(tmp_path / "eval"),
            "--output-bag",
            str(out_bag),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120

    def first_chunk_written() -> bool:  # the writer flushes ~1 MiB chunks: a few dozen pairs are done
        # (written under a temporary folder beside out_bag, renamed onto it when finished)
        return any(p.stat().st_size > 1000 for p in (tmp_path / "eval").rglob("out.mcap"))

    while not first_chunk_written() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "INTERRUPTED" in stdout
    with open_bag(out_bag) as out:
        done = out.topics["/taseg/labels"].count
        assert 0 < done < 400
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["interrupted"] is True and report["frames"]["processed"] == done


def test_eval_errors(raw_bag, segmenter, tmp_path):
    from taseg_ros.bag.evaluate.run import EvalSettings, evaluate_bag
    from taseg_ros.frames.files import write_image

    labels = tmp_path / "labels"
    first = raw_bag.paired_frames[0]
    write_image(labels / "labels" / f"{stamp_id(first.rgb_stamp_ns)}.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(BagError, match=r"label is 10x10 but the RGB frame is 64x48"):
        evaluate_bag(EvalSettings(PairSource(raw_bag.path), labels_dir=labels), segmenter)
    (labels / "classes.yaml").write_text("classes: [road, sky]\n")
    with pytest.raises(BagError, match=r"the labels use classes \['road', 'sky'\] but the model predicts"):
        evaluate_bag(EvalSettings(PairSource(raw_bag.path), labels_dir=labels), segmenter)
    with pytest.raises(BagError, match="no label PNG named by stamp"):
        evaluate_bag(EvalSettings(PairSource(raw_bag.path), labels_dir=tmp_path), segmenter)
    late_thermal = record(tmp_path / "late", thermal_offset_s=0.03)
    with pytest.raises(BagError, match=r"no RGB/thermal pair within slop 5 ms: NOT USABLE .* try --slop 0.05"):
        evaluate_bag(EvalSettings(PairSource(late_thermal.path, slop_s=0.005)), segmenter)


# --- bad input: a clear answer, nothing destroyed (issue 14) -----------------------------------------

SHARED_ROSBAGS = REPO / ".." / "shared" / "data" / "rosbags"


def real_rosbag(name: str) -> Path:
    """A recording written by the real ROS 2 tools (../shared/data/rosbags, see its PROVENANCE.md)."""
    path = SHARED_ROSBAGS / name
    if not path.is_dir():
        pytest.skip(f"real rosbag2 recording not found at {path}")
    return path


def hand_made_bag(path, rgb_message, thermal_message, n=10, label_topic=None, label_offset_ns=0):
    """Two cameras at 10 Hz with messages built by the callers (encodings the fixtures refuse to
    write: yuv420, 0x0 images, float thermal); labels (all zeros) stamped ``label_offset_ns`` off."""
    from taseg_ros.bag.io.messages import image_message
    from taseg_ros.bag.io.msgtypes import IMAGE
    from taseg_ros.bag.io.writer import BagWriter

    start = 1_700_000_000 * 10**9
    with BagWriter(path, storage="mcap") as out:
        for i in range(n):
            stamp = start + i * 100_000_000
            out.write(DEFAULT_RGB_TOPIC, IMAGE, stamp + 1_000_000, rgb_message(i, stamp))
            out.write(DEFAULT_THERMAL_TOPIC, IMAGE, stamp + 2_000_000, thermal_message(i, stamp))
            if label_topic is not None:
                label = image_message(stamp + label_offset_ns, "cam", np.zeros((8, 8), np.uint8), "mono8")
                out.write(label_topic, IMAGE, stamp + 3_000_000, label)
    return Path(path)


def raw_image(stamp, encoding, height, width, data, step):
    from taseg_ros.bag.io.messages import make_header
    from taseg_ros.bag.io.msgtypes import IMAGE, default_typestore

    return default_typestore().types[IMAGE](
        header=make_header(stamp, "cam"), height=height, width=width, encoding=encoding, is_bigendian=0,
        step=step, data=np.asarray(data, np.uint8),
    )


def rgb8(i, stamp):
    from taseg_ros.bag.io.messages import image_message

    return image_message(stamp, "cam", np.full((8, 8, 3), i, np.uint8), "rgb8")


def mono16(i, stamp):
    from taseg_ros.bag.io.messages import image_message

    return image_message(stamp, "cam", np.full((8, 8), 1000 + i, np.uint16), "mono16")


def test_info_extract_eval_say_plainly_that_a_camera_stream_is_missing(tmp_path, tiny_checkpoint):
    """No image topic at all, and one image topic only: not "cannot tell which image topic is the
    thermal camera ... Image topics: none"."""
    from taseg_ros.bag.io.messages import string_message
    from taseg_ros.bag.io.msgtypes import STRING
    from taseg_ros.bag.io.writer import BagWriter

    talker = tmp_path / "talker"
    with BagWriter(talker) as out:
        for i in range(5):
            out.write("/chatter", STRING, (i + 1) * 10**8, string_message(f"hello {i}"))
    code, out, _ = run_cli("info", talker)
    assert code == 1
    assert "verdict: NOT USABLE: the recording has no image topics" in out and "an RGB and a thermal camera" in out
    assert "cannot tell" not in out and "Image topics: none" not in out
    one = record(tmp_path / "one", drop_rgb=(), drop_thermal=tuple(range(N_FRAMES)))  # the thermal camera died
    code, out, _ = run_cli("info", one.path)
    assert code == 1
    assert f"one camera image topic, {DEFAULT_RGB_TOPIC} (sensor_msgs/msg/Image, {N_FRAMES} msgs): a thermal camera " \
        "stream is missing" in out
    code, out, _ = run_cli("info", one.path, "--thermal-topic", DEFAULT_RGB_TOPIC)
    assert code == 1 and "an RGB camera stream is missing" in out
    for argv in (["extract", one.path, "-o", tmp_path / "ds"],
                 ["eval", one.path, "--checkpoint", tiny_checkpoint, "-o", tmp_path / "ev"]):
        code, _, err = run_cli(*argv)
        assert code == 2 and err.count("\n") == 1, err
        assert "a thermal camera stream is missing" in err
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ev").exists()  # no half-written output


def test_the_real_rosbag2_recordings(tmp_path, tiny_checkpoint, monkeypatch):
    """`taseg bag info|extract|eval` on files the real ROS 2 tools wrote: a Foxy `ros2 bag record` of
    the talker (no images) and a rosbag2_py recording with one 2x2 mono8 image stream."""
    monkeypatch.chdir(tmp_path)
    talker, images = real_rosbag("rosbag2_talker_sqlite3_foxy2020"), real_rosbag("ait_images_bag")
    code, out, _ = run_cli("info", talker)
    assert code == 1 and "(sqlite3," in out
    assert any(line.split()[:4] == ["/topic", "std_msgs/msg/String", "10", "msgs"] for line in out.splitlines())
    assert "verdict: NOT USABLE: the recording has no image topics" in out
    code, out, _ = run_cli("info", images)
    assert code == 1 and "/image  sensor_msgs/msg/Image" in out
    assert "one camera image topic, /image (sensor_msgs/msg/Image, 3 msgs): a thermal camera stream is missing" in out
    for bag, reason in ((talker, "no image topics"), (images, "a thermal camera stream is missing")):
        for argv in (["extract", bag, "-o", "ds"], ["eval", bag, "--checkpoint", tiny_checkpoint]):
            code, _, err = run_cli(*argv)
            assert code == 2 and err.count("\n") == 1 and reason in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written, not even an empty folder
    code, _, err = run_cli("extract", images, "-o", "ds", "--rgb-topic", "/image", "--thermal-topic", "/image")
    assert code == 2 and "--rgb-topic and --thermal-topic are both /image" in err


def test_an_output_that_is_or_overlaps_the_recording_is_refused(raw_bag, tiny_checkpoint, tmp_path):
    """`bag eval REC --output-bag REC --force` deleted the recording; every bag output is checked."""
    before = {p.name: p.read_bytes() for p in raw_bag.path.iterdir()}
    (tmp_path / "afile").write_text("a file")
    ev = ["eval", raw_bag.path, "--checkpoint", tiny_checkpoint]
    cases = [
        (ev + ["--output-bag", raw_bag.path, "--force"], "the output is also an input (BAG)"),
        (ev + ["--output-bag", raw_bag.path / "out", "--force"], "the output lies inside the input"),
        (ev + ["--output-bag", raw_bag.path.parent, "--force"], "the output would contain the input"),
        (ev + ["-o", raw_bag.path, "--no-output-bag", "--force"], "the output is also an input (BAG)"),
        (ev + ["-o", tmp_path / "afile" / "ev"], "afile is a file"),
        (ev + ["-o", tmp_path / "ev", "--output-bag", tmp_path / "afile"], "afile is an existing file"),
        (["extract", raw_bag.path, "-o", raw_bag.path], "the output is also an input (BAG)"),
        (["extract", raw_bag.path, "-o", tmp_path / "afile" / "ds"], "afile is a file"),
        (["replay", raw_bag.path, "-o", raw_bag.path, "--force"], "the output is also an input (BAG)"),
    ]
    for argv, message in cases:
        code, _, err = run_cli(*argv)
        assert code == 2 and err.count("\n") == 1 and message in err, (argv, err)
    assert {p.name: p.read_bytes() for p in raw_bag.path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_extract_label_topic_matching_no_label_fails_before_writing(tmp_path):
    """Labels stamped 50 ms after their frames (on receipt, say) match nothing within 1 ms."""
    late = hand_made_bag(tmp_path / "late", rgb8, mono16, label_topic="/labels", label_offset_ns=50_000_000)
    code, _, err = run_cli("extract", late, "-o", tmp_path / "ds", "--label-topic", "/labels")
    assert code == 2 and err.count("\n") == 1
    assert "--label-topic /labels: none of its 10 labels matches one of the 10 pairs within 1 ms" in err
    assert "the closest is 50.0 ms from a pair's RGB stamp" in err
    assert not (tmp_path / "ds").exists()
    exact = hand_made_bag(tmp_path / "exact", rgb8, mono16, label_topic="/labels")
    code, out, err = run_cli("extract", exact, "-o", tmp_path / "ds2", "--label-topic", "/labels", "--every", "2")
    assert code == 0, err
    assert "labels: 5 of the 10 labels on /labels matched an extracted pair (within 1 ms of its RGB stamp)" in out
    assert len(list((tmp_path / "ds2" / "labels").iterdir())) == 5


@pytest.mark.parametrize("command", ["extract", "eval"])
def test_max_pairs_zero_is_refused(raw_bag, tiny_checkpoint, tmp_path, command):
    extra = ["-o", tmp_path / "out"] + (["--checkpoint", tiny_checkpoint] if command == "eval" else [])
    code, _, err = run_cli(command, raw_bag.path, "--max-pairs", "0", *extra)
    assert code == 2 and "--max-pairs must be >= 1, got 0" in err
    assert not (tmp_path / "out").exists()


def test_extract_and_eval_say_why_no_frame_could_be_decoded(tmp_path, tiny_checkpoint):
    """yuv420 RGB and 0x0 thermal frames pair perfectly (the old answers: extract "no pair was
    extracted: USABLE: 10 pairs = 100%", eval exit 0 with nothing scored); the cause is each frame's
    decode failure, counted."""
    yuv = hand_made_bag(tmp_path / "yuv", lambda i, s: raw_image(s, "yuv420", 8, 8, np.zeros(128), 16), mono16)
    code, _, err = run_cli("extract", yuv, "-o", tmp_path / "ds")
    assert code == 2 and err.count("\n") == 1
    assert "no pair was extracted: 10 of 10 pairs could not be decoded: 10 x RGB /camera/color/image_raw: " \
        "unsupported encoding 'yuv420'" in err
    assert "USABLE" not in err and not (tmp_path / "ds").exists()
    empty = hand_made_bag(tmp_path / "empty", rgb8, lambda i, s: raw_image(s, "mono16", 0, 0, [], 0))
    code, _, err = run_cli("extract", empty, "-o", tmp_path / "ds")
    assert code == 2 and "10 x thermal /thermal/image_raw: empty image: height=0, width=0" in err
    assert not (tmp_path / "ds").exists()
    code, _, err = run_cli("eval", yuv, "--checkpoint", tiny_checkpoint, "-o", tmp_path / "ev")
    assert code == 2 and err.count("\n") == 1
    assert "no pair could be evaluated: 10 of 10 pairs failed: 10 x /camera/color/image_raw: unsupported " \
        "encoding 'yuv420'" in err
    assert not (tmp_path / "ev").exists()  # neither report nor output recording


def test_extract_and_eval_count_nan_thermal_frames(tmp_path, segmenter):
    """Float thermal: frames with NaN pixels, and frames without one finite pixel, are counted and
    said (they were taken silently)."""
    from taseg_ros.bag.evaluate.run import EvalSettings, evaluate_bag
    from taseg_ros.bag.io.messages import image_message

    def float_thermal(i, stamp):
        frame = np.full((8, 8), 20.0 + i, np.float32)
        if i in (2, 5):
            frame[:] = np.nan
        elif i == 7:
            frame[0, :3] = np.inf
        return image_message(stamp, "cam", frame, "32FC1")

    rec = hand_made_bag(tmp_path / "nan", rgb8, float_thermal)
    code, out, err = run_cli("extract", rec, "-o", tmp_path / "ds")
    assert code == 0, err
    assert "3 thermal frames hold NaN/inf pixels (2 without one finite pixel)" in out
    assert len(list((tmp_path / "ds" / "thermal").glob("*.tiff"))) == 10
    result = evaluate_bag(EvalSettings(PairSource(rec)), segmenter)
    assert result.processed == 10 and result.note_counts == {"nonfinite_thermal": 1, "blank_thermal": 2}
    assert any("no finite thermal pixel (all 64 are NaN/inf)" in note for note in result.notes)


def test_eval_refuses_a_namespace_ros_rejects(raw_bag, tiny_checkpoint, tmp_path):
    code, _, err = run_cli("eval", raw_bag.path, "--checkpoint", tiny_checkpoint, "-o", tmp_path / "ev",
                           "--namespace", "bad name!")
    assert code == 2 and err.count("\n") == 1
    assert "--namespace 'bad name!': not a valid ROS 2 namespace ('bad name!' holds ' ', '!')" in err
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("name", ["/taseg", "taseg", "/robot1/taseg", "/taseg/", "bad name!", "/1robot", "/a//b",
                                  "/a-b", "/ä", "/_x", "/x.y"])
def test_namespace_rules_agree_with_rcl(name):
    """Our ROS-free check gives rcl's verdict (rclpy's validate_namespace, which calls rmw)."""
    pytest.importorskip("rclpy")
    from rclpy.exceptions import InvalidNamespaceException
    from rclpy.validate_namespace import validate_namespace

    from taseg_ros.ros.names import check_namespace

    try:
        ours = check_namespace(name)
    except ValueError:
        ours = None
    normalised = "/" + name.strip().strip("/")
    try:
        validate_namespace(normalised)
        theirs = normalised
    except InvalidNamespaceException:
        theirs = None
    assert ours == theirs


# --- the real-time policy ---------------------------------------------------------------------------


def test_realtime_worker_drops_what_the_node_would_drop():
    """Pairs every 100 ms, 230 ms per pair: the worker takes pair 0, pair 1 waits and is replaced by
    pair 2, which runs when 0 is done at 230 ms, and so on."""
    from taseg_ros.bag.pairs import simulate_realtime

    ms = 1_000_000
    pairs = [(i * 100 * ms, Pair(i + 1, i + 1, None, None)) for i in range(10)]
    worker = simulate_realtime(pairs, {p.rgb_stamp_ns: 0.230 for _, p in pairs})
    assert [item.pair.rgb_stamp_ns - 1 for item in worker.processed] == [0, 2, 4, 6, 9]
    assert [item.start_ns // ms for item in worker.processed] == [0, 230, 460, 690, 920]
    assert worker.dropped == 5
    fast = simulate_realtime(pairs, {p.rgb_stamp_ns: 0.050 for _, p in pairs})
    assert fast.dropped == 0 and len(fast.processed) == 10
    assert all(item.wait_s == 0 for item in fast.processed)


def test_timing_summary_in_milliseconds():
    """The one summary of durations (taseg_ros.timing) the bag reports use."""
    from taseg_ros.timing import SUMMARY_KEYS, summarize_ms

    s = summarize_ms([0.001, 0.002, 0.003, 0.004, 0.010])
    assert tuple(s) == SUMMARY_KEYS
    assert s["count"] == 5 and s["mean"] == pytest.approx(4.0) and s["median"] == pytest.approx(3.0)
    assert (s["q1"], s["q3"]) == (pytest.approx(2.0), pytest.approx(4.0))
    assert s["p90"] == pytest.approx(7.6) and s["min"] == pytest.approx(1.0) and s["max"] == pytest.approx(10.0)
    assert summarize_ms([]) == {key: 0 if key == "count" else None for key in SUMMARY_KEYS}


# --- CLI -------------------------------------------------------------------------------------------


def test_parser_registers_one_bag_command_with_four_actions():
    import argparse

    parser = argparse.ArgumentParser(prog="taseg")
    bag_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bag", "eval", "run1", "--checkpoint", "m.safetensors", "--mode", "realtime"])
    assert args.func is bag_cli.evaluate.run_eval and args.mode == "realtime" and args.slop == 0.02
    for action in ("info", "extract", "replay"):
        assert parser.parse_args(["bag", action, "run1"] + (["-o", "x"] if action == "extract" else [])).bag == "run1"
    with pytest.raises(SystemExit):
        parser.parse_args(["bag", "extract", "run1", "-o", "x", "--every", "2", "--hz", "1"])
    with pytest.raises(SystemExit):
        parser.parse_args(["bag", "eval", "run1", "--checkpoint", "m", "--labels", "d", "--label-topic", "/l"])


def test_eval_cli_refuses_to_overwrite_an_output_recording(raw_bag, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("eval", raw_bag.path, "--checkpoint", tiny_checkpoint, "--max-pairs", "3")
    assert code == 0, err
    assert (
        Path("raw_sqlite_eval/raw_sqlite_taseg/metadata.yaml").is_file() and Path("raw_sqlite_eval/report.md").is_file()
    )
    assert "processed 3" in out
    code, _, err = run_cli("eval", raw_bag.path, "--checkpoint", tiny_checkpoint, "--max-pairs", "3")
    assert code == 2 and "output recording exists" in err and "--force" in err
    code, _, err = run_cli("eval", raw_bag.path, "--checkpoint", tiny_checkpoint, "--max-pairs", "2", "--force")
    assert code == 0, err


# --- the documented workflow --------------------------------------------------------------------------


def _doc_commands() -> list[str]:
    text = (REPO / "docs" / "own_recordings.md").read_text()
    blocks = text.split("```bash\n")[1:]
    return [line.strip() for block in blocks for line in block.split("```")[0].splitlines() if line.strip()]


def test_documented_workflow_runs_as_written(tmp_path, tiny_checkpoint, monkeypatch):
    """Every `taseg bag` command of docs/own_recordings.md (except replay, which needs a node: tested
    below), run in order on recordings named as in the text; the labelling step writes the known labels."""
    commands = _doc_commands()
    assert any(c.startswith("ros2 bag record") for c in commands)
    assert "taseg train training/recipes/own_data.yaml --data-root data/mine" in commands
    monkeypatch.chdir(tmp_path)
    recordings = {
        name: record(tmp_path / name, frames=synthetic_frames(N_FRAMES, 48, 64, seed=seed))
        for name, seed in (("run1", 7), ("run2", 8), ("run3", 9))
    }
    (tmp_path / "runs" / "own_data").mkdir(parents=True)  # what the `taseg train` step leaves
    shutil.copy(tiny_checkpoint, tmp_path / "runs" / "own_data" / "best.safetensors")
    (tmp_path / "models").mkdir()  # a model trained on a public dataset, for the first labelling round
    shutil.copy(tiny_checkpoint, tmp_path / "models" / "taseg_mfnet.safetensors")
    from taseg_ros.ros.params import homography_params_text

    # what `taseg bag calibrate board_run` leaves (it needs a recording of a board: test_registration.py)
    (tmp_path / "registration.yaml").write_text(homography_params_text(np.eye(3), ["calibrated"]))
    shutil.copy(tiny_checkpoint, tmp_path / "models" / "previous.safetensors")  # the model in service before

    def label_everything(folder: str, rec) -> None:  # the "label" step, done by a person in reality
        from taseg_ros.frames.files import write_image

        for f in rec.paired_frames:
            if (Path(folder) / "rgb" / f"{stamp_id(f.rgb_stamp_ns)}.png").is_file():
                write_image(Path(folder) / "labels" / f"{stamp_id(f.rgb_stamp_ns)}.png", f.label)

    import argparse

    parser = argparse.ArgumentParser(prog="taseg")
    bag_cli.register(parser.add_subparsers(dest="command"))
    ran = []
    for command in commands:
        argv = shlex.split(command)
        if argv[:2] != ["taseg", "bag"]:
            continue
        parser.parse_args(argv[1:])  # every documented `taseg bag` command parses
        if argv[2] == "replay" or argv[3] == "board_run":
            continue
        code, out, err = run_cli(*argv[2:])
        assert code == 0, f"{command}\n{out}\n{err}"
        ran.append(argv[2])
        if argv[2] == "extract":
            label_everything(argv[argv.index("-o") + 1], recordings[argv[3]])
    assert ran == ["info", "refine", "info", "extract", "select", "extract", "eval", "eval", "eval", "eval", "eval",
                   "report"]
    assert Path("registration_refined.yaml").is_file() and len(list(Path("data/round1/rgb").iterdir())) > 0
    from taseg_ros.datasets import build_dataset

    assert len(build_dataset("folder", "data/mine", "train")) > 0  # what `taseg train` will read
    labelled = len(list(Path("data/run2_labels/labels").iterdir()))
    report = json.loads(Path("eval_run2/report.json").read_text())
    assert report["frames"]["pairs"] == EXPECTED_PAIRS and report["frames"]["scored"] == labelled > 0
    assert report["scores"]["classes"][0] == "unlabeled"
    assert Path("eval_run2/run2_taseg/run2_taseg.mcap").is_file()  # the file the text says to open
    live = json.loads(Path("eval_run2_live/report.json").read_text())
    assert live["mode"] == "realtime" and 0 < live["frames"]["scored"] <= live["frames"]["processed"]
    assert not Path("eval_run2_live/run2_taseg").exists()  # --no-output-bag
    unlabelled = json.loads(Path("eval_run2_nolabels/report.json").read_text())
    assert unlabelled["scores"] is None and unlabelled["quality"]["summary"]["flicker_compensated"] is not None
    gated = json.loads(Path("eval_run2_vs_previous/report.json").read_text())["comparison"]
    assert gated["kind"] == "model" and gated["passed"] and len(gated["gates"]) == 3
    fleet = json.loads(Path("fleet_new/fleet.json").read_text())  # the fleet section: run2 and run3, gated
    assert [r["name"] for r in fleet["recordings"]] == ["run2", "run3"] and fleet["verdict"]["passed"]
    assert fleet["rollup"]["change"]["mean_confidence"] == 0.0  # the baseline is the same model


# --- replay (real DDS, the node in this process) -------------------------------------------------------


@pytest.fixture(scope="module")
def running_node(tiny_checkpoint):
    """A TASegNode in its own context and namespace, on a domain of its own (no cross-talk with other tests or test runs)."""
    rclpy = pytest.importorskip("rclpy")
    node_module = pytest.importorskip("taseg_ros.ros.node")
    client_module = pytest.importorskip("taseg_ros.ros.client")
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    domain = claim_domain()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    namespace = f"/replay_{os.getpid()}"
    node = node_module.TASegNode(
        namespace=namespace,
        context=context,
        parameter_overrides=[
            Parameter("checkpoint", value=str(tiny_checkpoint)),
            Parameter("rgb_transport", value="compressed"),
            Parameter("thermal_transport", value="compressed"),
        ],
    )
    executor = SingleThreadedExecutor(context=context)  # see test_ros_node.py: rclpy#1452
    executor.add_node(node)
    spinner = threading.Thread(target=client_module.spin_resiliently, args=(executor,), daemon=True)
    spinner.start()
    from rclpy.lifecycle import TransitionCallbackReturn

    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.configure_error
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    yield namespace, domain
    node.release_resources()
    executor.shutdown(timeout_sec=5)
    node.destroy_node()
    rclpy.shutdown(context=context)
    spinner.join(timeout=10)
    context.destroy()  # the DDS participant goes now, not at garbage collection


def test_replay_through_the_node(compressed_bag, running_node, tmp_path):
    from taseg_ros.bag.replay import ReplaySettings, format_replay, replay_bag

    namespace, domain = running_node
    settings = ReplaySettings(
        PairSource(compressed_bag.path),
        node=f"{namespace}/taseg",
        publish_rgb_topic=f"{namespace}/rgb/image/compressed",
        publish_thermal_topic=f"{namespace}/thermal/image/compressed",
        domain_id=domain,
        # generous: replay ends as soon as every pair is answered; a loaded machine may need long
        wait_s=120,
        drain_s=30,
    )
    result = replay_bag(settings, tmp_path / "replay")
    assert result.published == {
        f"{namespace}/rgb/image/compressed": N_FRAMES - 2,
        f"{namespace}/thermal/image/compressed": N_FRAMES - 3,
    }
    assert result.expected_pairs == EXPECTED_PAIRS
    assert result.answered_pairs + result.dropped == EXPECTED_PAIRS and result.answered_pairs > 0
    assert result.unexpected_outputs == 0
    assert result.latency_from_pair_ms["count"] == result.answered_pairs and result.latency_from_pair_ms["min"] > 0
    with open_bag(tmp_path / "replay") as out:
        counts = {t.name: t.count for t in out.topics.values()}
        assert counts[f"{namespace}/rgb/image/compressed"] == N_FRAMES - 2
        assert (
            counts[f"{namespace}/taseg/labels"] == result.received[f"{namespace}/taseg/labels"] >= result.answered_pairs
        )
        assert counts[f"{namespace}/taseg/class_info"] == 1
    assert f"pairs expected {EXPECTED_PAIRS}" in format_replay(result)


def test_replay_without_a_node_says_how_to_start_one(compressed_bag, tmp_path):
    pytest.importorskip("rclpy")
    from taseg_ros.bag.replay import ReplaySettings, replay_bag

    with pytest.raises(BagError) as excinfo:
        replay_bag(ReplaySettings(PairSource(compressed_bag.path), node="/nobody/taseg", wait_s=1.0,
                                  domain_id=claim_domain()))
    text = str(excinfo.value)
    assert "no running node answered within 1 s" in text
    assert "-p rgb_transport:=compressed" in text and f"-r rgb/image/compressed:={compressed_bag.rgb_topic}" in text
    assert "-r __ns:=/nobody" in text
