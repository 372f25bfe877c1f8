"""The node's ROS-free logic: pairing, image conversion, colourising, diagnostics, parameters,
and the launch file's consistency with config/taseg.yaml. No rclpy needed."""
from __future__ import annotations

import ast
import py_compile
import fcntl
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import yaml

from taseg_ros.frames.thermal import ThermalAligner, ThermalNormalization
from taseg_ros.frames.render import colorize, overlay
from taseg_ros.ros import domains
from taseg_ros.ros.diagnostics import ERROR, LOSSY_HINT, OK, WARN, NodeStatistics, build_report
from taseg_ros.frames.codec import ImageDecodeError, check_image_fields, decode_rgb, decode_thermal, encode_image, image_to_array
from taseg_ros.frames.pairing import LatestSlot, StampPairer, stamp_to_ns
from taseg_ros.ros.params import NodeParams

REPO = Path(__file__).resolve().parents[1]
MS = 1_000_000


# --- pairing -------------------------------------------------------------------------------------


def test_pairs_within_slop_and_counts_unmatched():
    pairer = StampPairer(slop_s=0.010, queue_size=5)
    assert pairer.add_rgb(100 * MS, "rgb100") is None
    pair = pairer.add_thermal(104 * MS, "th104")
    assert (pair.rgb, pair.thermal, pair.skew_ns) == ("rgb100", "th104", 4 * MS)
    assert pairer.add_rgb(133 * MS, "rgb133") is None
    assert pairer.add_thermal(150 * MS, "th150") is None  # 17 ms from rgb133: no pair, rgb133 now unmatchable
    assert pairer.stats.unmatched_rgb == 1
    pair = pairer.add_rgb(152 * MS, "rgb152")
    assert (pair.rgb_stamp_ns, pair.thermal_stamp_ns) == (152 * MS, 150 * MS)
    assert pairer.stats.pairs == 2 and pairer.buffered() == (0, 0)


def test_closest_partner_wins_and_older_ones_are_discarded():
    pairer = StampPairer(slop_s=0.010)
    for stamp in (100, 103, 108):
        assert pairer.add_thermal(stamp * MS, f"th{stamp}") is None
    pair = pairer.add_rgb(107 * MS, "rgb107")
    assert pair.thermal == "th108"
    assert pairer.stats.unmatched_thermal == 2  # th100, th103 can never pair any more
    assert pairer.buffered() == (0, 0)


def test_buffers_are_bounded():
    pairer = StampPairer(slop_s=0.001, queue_size=3)
    for i in range(1, 101):
        pairer.add_rgb(i * 100 * MS, i)
    assert pairer.buffered() == (3, 0)
    assert pairer.stats.unmatched_rgb == 97


def test_zero_and_out_of_order_stamps_are_rejected_and_reported():
    events = []
    pairer = StampPairer(slop_s=0.010, time_reset_s=2.0)
    pairer.on_reject = lambda stream, event, stamp: events.append((stream, event, stamp))
    assert pairer.add_rgb(0, "zero") is None
    assert pairer.add_rgb(500 * MS, "a") is None
    assert pairer.add_rgb(400 * MS, "older") is None
    assert pairer.add_rgb(500 * MS, "duplicate") is None
    assert pairer.stats.zero_stamp == 1 and pairer.stats.out_of_order == 2
    assert events == [("rgb", "zero_stamp", 0), ("rgb", "out_of_order", 400 * MS), ("rgb", "out_of_order", 500 * MS)]
    pair = pairer.add_thermal(501 * MS, "t")
    assert pair.rgb == "a"  # the rejected frames never replaced the good one


def test_clock_reset_restarts_pairing():
    pairer = StampPairer(slop_s=0.010, time_reset_s=2.0)
    assert pairer.add_rgb(100_000 * MS, "late") is None
    assert pairer.add_thermal(100_001 * MS, "late_t") is not None
    # a bag loops: both streams jump back 100 s
    assert pairer.add_rgb(1_000 * MS, "early") is None
    assert pairer.stats.time_resets == 1 and pairer.stats.out_of_order == 0
    pair = pairer.add_thermal(1_002 * MS, "early_t")
    assert pairer.stats.time_resets == 2
    assert (pair.rgb, pair.thermal) == ("early", "early_t")


def test_pairing_rejects_bad_configuration():
    with pytest.raises(ValueError, match="slop"):
        StampPairer(slop_s=-0.1)
    with pytest.raises(ValueError, match="queue_size"):
        StampPairer(slop_s=0.01, queue_size=0)
    with pytest.raises(ValueError, match="time_reset"):
        StampPairer(slop_s=1.0, time_reset_s=0.5)


def test_stamp_to_ns():
    assert stamp_to_ns(SimpleNamespace(sec=12, nanosec=345)) == 12_000_000_345


def test_latest_slot_newest_wins_and_counts_drops():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True and slot.put(3) is True
    assert slot.dropped == 2 and slot.take(timeout=0) == 3
    assert slot.take(timeout=0.01) is None
    consumer_got = []
    consumer = threading.Thread(target=lambda: consumer_got.append(slot.take(timeout=10)))
    consumer.start()
    slot.put(4)
    consumer.join(timeout=10)
    assert consumer_got == [4] and slot.dropped == 2


def test_latest_slot_close_wakes_consumer():
    slot: LatestSlot[int] = LatestSlot()
    result = []
    consumer = threading.Thread(target=lambda: result.append(slot.take(timeout=30)))
    consumer.start()
    slot.close()
    consumer.join(timeout=10)
    assert not consumer.is_alive() and result == [None]
    slot.put(5)
    assert slot.take(timeout=0) is None  # closed
    slot.reopen()
    assert slot.take(timeout=0) == 5


# --- image conversion ----------------------------------------------------------------------------


def raw_image(array: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False, data_override=None):
    """An Image-like object with ROS's fields (rows padded by `pad` bytes)."""
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    if big_endian:
        array = array.astype(array.dtype.newbyteorder(">"))
    row = array.reshape(height, -1).view(np.uint8)
    padded = np.zeros((height, row.shape[1] + pad), np.uint8)
    padded[:, : row.shape[1]] = row
    data = padded.tobytes() if data_override is None else data_override
    return SimpleNamespace(
        encoding=encoding, height=height, width=width, step=padded.shape[1], is_bigendian=int(big_endian), data=data
    )


@pytest.fixture
def rgb_frame():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("pad", [0, 3])
def test_decode_rgb_all_encodings(rgb_frame, pad):
    bgr = rgb_frame[:, :, ::-1]
    alpha = np.full(rgb_frame.shape[:2] + (1,), 200, np.uint8)
    assert np.array_equal(decode_rgb(raw_image(rgb_frame, "rgb8", pad)), rgb_frame)
    assert np.array_equal(decode_rgb(raw_image(bgr, "bgr8", pad)), rgb_frame)
    assert np.array_equal(decode_rgb(raw_image(np.concatenate([rgb_frame, alpha], 2), "rgba8", pad)), rgb_frame)
    assert np.array_equal(decode_rgb(raw_image(np.concatenate([bgr, alpha], 2), "bgra8", pad)), rgb_frame)
    grey = rgb_frame[:, :, 0]
    mono = decode_rgb(raw_image(grey, "mono8", pad))
    assert mono.shape == (5, 7, 3) and np.array_equal(mono[:, :, 1], grey)


@pytest.mark.parametrize("pad", [0, 2])
@pytest.mark.parametrize("big_endian", [False, True])
def test_decode_thermal_all_encodings(pad, big_endian):
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 65536, (4, 6), dtype=np.uint16)
    celsius = rng.normal(25, 10, (4, 6)).astype(np.float32)
    grey = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    for array, encoding in ((counts, "mono16"), (counts, "16UC1"), (celsius, "32FC1"), (grey, "mono8"), (grey, "8UC1")):
        out = decode_thermal(raw_image(array, encoding, pad, big_endian))
        assert out.dtype == array.dtype and np.array_equal(out, array), encoding
    replicated = np.repeat(grey[:, :, None], 3, axis=2)
    for encoding in ("bgr8", "rgb8"):
        out = decode_thermal(raw_image(replicated, encoding, pad))
        assert out.shape == (4, 6) and np.array_equal(out, grey)


@pytest.mark.parametrize("pad", [0, 4])
@pytest.mark.parametrize("encoding, to_yuv", [("yuv422", cv2.COLOR_RGB2YUV_UYVY), ("yuv422_yuy2", cv2.COLOR_RGB2YUV_YUY2)])
def test_decode_yuv422_as_cv_bridge_does(encoding, to_yuv, pad):
    """UYVY (ROS yuv422) and YUYV (yuv422_yuy2): an RGB image packed by OpenCV decodes to exactly
    OpenCV's own round trip (4:2:2 halves the chroma, so that, not the RGB image, is exact), and a
    swapped byte order would decode to other colours."""
    rgb = np.random.default_rng(3).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    packed = cv2.cvtColor(rgb, to_yuv)
    assert packed.shape == (6, 8, 2)
    back = cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_UYVY if encoding == "yuv422" else cv2.COLOR_YUV2RGB_YUY2)
    decoded = decode_rgb(raw_image(packed, encoding, pad))
    assert decoded.shape == (6, 8, 3) and np.array_equal(decoded, back)
    assert np.abs(decoded.astype(int) - rgb).mean() < 40  # close to the camera's colours, not noise
    grey = np.full((2, 4, 3), (90, 90, 90), np.uint8)  # a grey pair survives 4:2:2 almost exactly
    assert np.abs(decode_rgb(raw_image(cv2.cvtColor(grey, to_yuv), encoding)).astype(int) - 90).max() <= 2
    other = "yuv422_yuy2" if encoding == "yuv422" else "yuv422"
    assert not np.array_equal(decode_rgb(raw_image(packed, other)), back)
    with pytest.raises(ImageDecodeError, match="width=7 is odd") as odd:
        decode_rgb(SimpleNamespace(encoding=encoding, height=2, width=7, step=14, is_bigendian=0, data=bytes(28)))
    assert odd.value.reason == "size"


@pytest.mark.parametrize("encoding, top_left", [
    ("bayer_rggb8", ("R", "G", "G", "B")), ("bayer_bggr8", ("B", "G", "G", "R")),
    ("bayer_gbrg8", ("G", "B", "R", "G")), ("bayer_grbg8", ("G", "R", "B", "G")),
])
@pytest.mark.parametrize("pad", [0, 3])
def test_decode_bayer_patterns_by_known_colour(encoding, top_left, pad):
    """A mosaic of one colour laid out as the ROS name says (the first two letters are the top row)
    demosaics back to exactly that colour everywhere: OpenCV names the same patterns one row and
    column shifted (ROS RGGB = OpenCV BayerBG), so a wrong code gives other colours."""
    colour = {"R": 200, "G": 100, "B": 30}
    mosaic = np.zeros((6, 8), np.uint8)
    for (dy, dx), channel in zip(((0, 0), (0, 1), (1, 0), (1, 1)), top_left):
        mosaic[dy::2, dx::2] = colour[channel]
    decoded = decode_rgb(raw_image(mosaic, encoding, pad))
    assert decoded.shape == (6, 8, 3)
    assert np.array_equal(decoded, np.broadcast_to(np.array([200, 100, 30], np.uint8), (6, 8, 3)))


def test_float_thermal_keeps_nan_and_inf():
    values = np.array([[1.0, np.nan], [np.inf, -np.inf]], np.float32)
    out = decode_thermal(raw_image(values, "32FC1"))
    assert np.isnan(out[0, 1]) and np.isposinf(out[1, 0]) and out[0, 0] == 1.0


def test_bad_raw_images_raise_clear_errors(rgb_frame):
    with pytest.raises(ImageDecodeError, match="unsupported encoding 'yuv420'"):
        decode_rgb(raw_image(rgb_frame[:, :, :2].copy(), "yuv420"))
    with pytest.raises(ImageDecodeError, match="unsupported encoding 'mono16'"):
        decode_rgb(raw_image(np.zeros((2, 2), np.uint16), "mono16"))  # not an RGB encoding
    with pytest.raises(ImageDecodeError, match="empty image"):
        decode_rgb(SimpleNamespace(encoding="rgb8", height=0, width=0, step=0, is_bigendian=0, data=b""))
    good = raw_image(rgb_frame, "rgb8")
    with pytest.raises(ImageDecodeError, match=r"truncated data: 100 bytes, expected step \* height = 21 \* 5 = 105"):
        decode_rgb(raw_image(rgb_frame, "rgb8", data_override=good.data[:100]))
    with pytest.raises(ImageDecodeError, match="step=20 is smaller than one row"):
        check_image_fields(SimpleNamespace(encoding="rgb8", height=5, width=7, step=20, is_bigendian=0, data=good.data))
    with pytest.raises(ImageDecodeError, match="truncated data: 0 bytes"):
        check_image_fields(raw_image(rgb_frame, "rgb8", data_override=b""))


def test_untrusted_encoding_strings_are_escaped_in_messages():
    """A publisher's encoding string with an ANSI escape and a newline reaches the log as escapes
    (errors.safe_text), never as raw control characters; long strings are cut."""
    from taseg_ros.errors import safe_text

    hostile = "rgb8\x1b[2J\x1b[31mfake\nline"
    with pytest.raises(ImageDecodeError) as caught:
        check_image_fields(SimpleNamespace(encoding=hostile, height=1, width=1, step=3, is_bigendian=0, data=bytes(3)))
    message = str(caught.value)
    assert "\x1b" not in message and "\n" not in message
    assert "unsupported encoding 'rgb8\\x1b[2J\\x1b[31mfake\\nline'" in message
    assert safe_text("caf\u00e9 \u200b\x00") == "caf\u00e9 \\u200b\\x00"  # printable non-ASCII kept
    assert safe_text("x" * 100, limit=10) == "xxxxxxxxxx...(100 characters)"


def test_image_fields_from_rclpy_style_array_data(rgb_frame):
    import array

    msg = raw_image(rgb_frame, "rgb8")
    msg.data = array.array("B", msg.data)
    assert np.array_equal(image_to_array(msg), rgb_frame)


def compressed(array: np.ndarray, ext: str, fmt: str):
    ok, buffer = cv2.imencode(ext, array)
    assert ok
    return SimpleNamespace(format=fmt, data=buffer.tobytes())


def test_compressed_images(rgb_frame):
    png = compressed(rgb_frame[:, :, ::-1], ".png", "rgb8; png compressed bgr8")
    assert np.array_equal(decode_rgb(png), rgb_frame)
    counts = np.arange(24, dtype=np.uint16).reshape(4, 6) * 2000
    thermal = decode_thermal(compressed(counts, ".png", "mono16; png compressed mono16"))
    assert thermal.dtype == np.uint16 and np.array_equal(thermal, counts)  # 16-bit depth survives
    depth_png = compressed(counts, ".png", "16UC1; compressedDepth png")
    depth_png.data = bytes(12) + depth_png.data  # image_transport's ConfigHeader
    assert np.array_equal(decode_thermal(depth_png), counts)
    jpeg = decode_rgb(compressed(np.full((8, 8, 3), 128, np.uint8), ".jpg", "jpeg"))
    assert jpeg.shape == (8, 8, 3) and abs(int(jpeg.mean()) - 128) <= 2
    with pytest.raises(ImageDecodeError, match="could not be decoded"):
        decode_rgb(SimpleNamespace(format="jpeg", data=b"\xff\xd8 not a jpeg"))
    with pytest.raises(ImageDecodeError, match="empty data"):
        check_image_fields(SimpleNamespace(format="jpeg", data=b""))


def test_real_rosbags_message_objects(rgb_frame):
    """The codec reads the message classes the rosbag tools get from `rosbags`."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image = store.types["sensor_msgs/msg/Image"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    counts = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    big = counts.astype(">u2").view(np.uint8).reshape(-1)
    msg = Image(Header(Time(1, 2), "thermal"), 3, 4, "mono16", 1, 8, big)
    assert np.array_equal(decode_thermal(msg), counts)
    assert stamp_to_ns(msg.header.stamp) == 1_000_000_002


def test_encode_image_round_trip(rgb_frame):
    for array, encoding in (
        (rgb_frame, "rgb8"),
        (rgb_frame[:, :, 0].copy(), "mono8"),
        (np.linspace(0, 1, 35, dtype=np.float32).reshape(5, 7), "32FC1"),
    ):
        fields = encode_image(array, encoding)
        assert (fields.height, fields.width, fields.encoding) == (5, 7, encoding)
        assert fields.step * fields.height == fields.data.size
        msg = SimpleNamespace(**{k: getattr(fields, k) for k in ("height", "width", "encoding", "step", "is_bigendian")},
                              data=fields.data.tobytes())
        assert np.array_equal(image_to_array(msg), array)
    with pytest.raises(ImageDecodeError, match="does not fit encoding 'rgb8'"):
        encode_image(rgb_frame[:, :, 0], "rgb8")


# --- colourising (the node's use of frames.render.colorize / overlay) -----------------------------


def test_colorize_and_overlay_values():
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    labels = np.array([[0, 1], [2, 7]], np.uint8)
    colour = colorize(labels, palette)
    assert colour.tolist() == [[[0, 0, 0], [255, 0, 0]], [[0, 0, 255], [0, 0, 0]]]  # 7: unknown -> black
    rgb = np.full((2, 2, 3), 100, np.uint8)
    blended = overlay(rgb, colour, 0.5)
    assert blended[0, 1].tolist() == [178, 50, 50] and blended[0, 0].tolist() == [50, 50, 50]
    assert np.array_equal(overlay(rgb, colour, 0.0), rgb)



def test_thermal_aligner_puts_thermal_on_the_rgb_grid_and_notes_it_once():
    same = np.arange(12, dtype=np.float32).reshape(3, 4)
    aligner = ThermalAligner()
    out, note = aligner(same, (3, 4))
    assert out is same and note is None and not aligner.noted  # nothing to do, nothing to say

    half = np.linspace(0, 1, 8 * 6, dtype=np.float32).reshape(6, 8)
    out, note = aligner(half, (12, 16))
    assert out.shape == (12, 16) and note == "thermal frames (8x6) are resized to the RGB frame (16x12)"
    out, note = aligner(half, (12, 16))
    assert out.shape == (12, 16) and note is None  # once per aligner

    # thermal px (x, y) -> RGB px (2x + 2, 2y): the registration a user measures between the cameras
    warp = ThermalAligner(np.array([[2.0, 0, 2], [0, 2.0, 0], [0, 0, 1]]))
    out, note = warp(half, (12, 16))
    assert "warped by the thermal homography" in note
    assert out[4, 8] == pytest.approx(half[2, 3]) and out[10, 14] == pytest.approx(half[5, 6])
    assert np.all(out[:, 0] == 0)  # left of the thermal camera's view: no data, zero
    assert warp(same, (3, 4))[1] is None  # a homography warps every frame but is noted once

# --- diagnostics ---------------------------------------------------------------------------------


def test_statistics_and_report():
    stats = NodeStatistics(fps_window_s=10.0)
    for i in range(11):
        stats.record_output(latency_s=0.1 + 0.01 * i, inference_s=0.05, prepare_s=0.0015, publish_s=0.0005,
                            now=100.0 + 0.5 * i)
    stats.count_error("bad_rgb", 2)
    assert stats.fps(now=105.0) == pytest.approx(2.0)
    pairing = {"rgb_received": 20, "thermal_received": 0, "pairs": 11, "unmatched_rgb": 9, "zero_stamp": 1}
    report = build_report(active=True, stats=stats, pairing=pairing, dropped=3, seconds_since_pair=0.2,
                          seconds_since_input={"rgb": 0.0, "thermal": 0.1}, no_pair_warn_s=3.0, now=105.0)
    assert report.level == OK
    values = report.values
    assert values["dropped"] == "3" and values["unmatched_rgb"] == "9" and values["processed"] == "11"
    assert values["errors"] == "3" and values["errors_bad_rgb"] == "2"
    assert values["latency_max_ms"] == "200.0" and values["inference_mean_ms"] == "50.0"
    assert values["overhead_mean_ms"] == "2.0" and values["prepare_mean_ms"] == "1.5" and values["publish_p95_ms"] == "0.5"
    stale = build_report(active=True, stats=stats, pairing=pairing, dropped=3, seconds_since_pair=5.0,
                         seconds_since_input={"rgb": 0.0, "thermal": None}, no_pair_warn_s=3.0)
    assert stale.level == WARN and "no message for > 3 s on: thermal" in stale.message
    skewed = build_report(active=True, stats=stats, pairing=pairing, dropped=3, seconds_since_pair=5.0,
                          seconds_since_input={"rgb": 0.0, "thermal": 0.0}, no_pair_warn_s=3.0)
    assert skewed.level == WARN and "stamps do not match" in skewed.message
    inactive = build_report(active=False, stats=stats, pairing=pairing, dropped=0, seconds_since_pair=None,
                            seconds_since_input={"rgb": None, "thermal": None}, no_pair_warn_s=3.0)
    assert inactive.level == OK and inactive.message == "inactive"



def test_report_warns_when_input_stamps_are_far_from_the_node_clock():
    def report(rgb_age, thermal_age):
        stats = NodeStatistics()
        for _ in range(5):
            stats.record_stamp_age("rgb", rgb_age)
            stats.record_stamp_age("thermal", thermal_age)
        return build_report(active=True, stats=stats, pairing={}, dropped=0, seconds_since_pair=0.1,
                            seconds_since_input={"rgb": 0.0, "thermal": 0.0}, no_pair_warn_s=3.0,
                            clock_offset_warn_s=2.0)

    live = report(0.04, 0.03)  # transport delays
    assert live.level == OK and live.values["rgb_stamp_age_mean_ms"] == "40.0"
    bag = report(3600.0, 3600.0)  # `ros2 bag play` without --clock: hour-old stamps
    assert bag.level == WARN and "rgb 3.6e+03 s behind, thermal 3.6e+03 s behind" in bag.message
    assert "use_sim_time" in bag.message
    camera = report(0.04, -7.5)  # a thermal driver stamping with its own clock, ahead of ours
    assert camera.level == WARN and "(thermal 7.5 s ahead)" in camera.message
    silent = NodeStatistics()  # nothing received yet: no offset to speak of
    assert build_report(active=True, stats=silent, pairing={}, dropped=0, seconds_since_pair=0.1,
                        seconds_since_input={"rgb": None, "thermal": None}, no_pair_warn_s=3.0,
                        clock_offset_warn_s=2.0).level == OK

def test_report_describes_the_recent_window_and_names_failures():
    """Issue 19: diagnostics stayed OK "processing" while every pair failed, said "stamps do not match"
    for frames the node could not decode, and kept all-time means after a burst of bad stamps."""
    def report(stats, now, since_pair=0.1, inputs=(0.0, 0.0), lossy=False):
        return build_report(active=True, stats=stats, pairing={}, dropped=0, seconds_since_pair=since_pair,
                            seconds_since_input=dict(zip(("rgb", "thermal"), inputs)), no_pair_warn_s=3.0,
                            clock_offset_warn_s=2.0, now=now, lossy_inputs=lossy)

    stats = NodeStatistics(recent_s=10.0)
    for i in range(4):
        stats.record_output(0.1, 0.05, 0.001, 0.001, now=100.0 + i)
    for i in range(3):
        stats.record_failure("bad_rgb", "data", "compressed image (format 'jpeg', 9 bytes) could not be decoded",
                             now=104.0 + i)
    partial = report(stats, 107.0)
    assert partial.level == WARN and partial.message.startswith("in the last 10 s, 3 of 7 pairs failed: 3 x bad_rgb/data")
    assert partial.values["recent_pairs_ok"] == "4" and partial.values["errors_bad_rgb_data"] == "3"
    # 10 s later the good pairs have aged out of the window: every recent pair failed -> ERROR
    stats.record_failure("model", "", "model failed on a 160x120 pair: RuntimeError: out of memory", now=113.0)
    failing = report(stats, 113.5)
    assert failing.level == ERROR
    assert failing.message == ("every pair of the last 10 s failed (4): 3 x bad_rgb/data: compressed image (format "
                               "'jpeg', 9 bytes) could not be decoded; 1 x model: model failed on a 160x120 pair: "
                               "RuntimeError: out of memory")
    assert failing.values["latency_mean_ms"] == "nan" and failing.values["processed"] == "4"
    stats.record_output(0.1, 0.05, 0.001, 0.001, now=130.0)
    assert report(stats, 130.5).level == OK  # the burst aged out

    refused = NodeStatistics()
    for i in range(5):
        refused.record_failure("bad_rgb", "encoding", "unsupported encoding 'yuv420'; supported: rgb8", pair=False,
                               now=200.0 + i)
    status = report(refused, 205.0, since_pair=5.0)
    assert status.level == ERROR and "stamps do not match" not in status.message
    assert status.message == ("no RGB/thermal pair matched for 5.0 s; input frames refused: 5 x bad_rgb/encoding: "
                              "unsupported encoding 'yuv420'; supported: rgb8")
    assert status.values["errors_bad_rgb"] == "5" and status.values["errors_bad_rgb_encoding"] == "5"
    assert report(NodeStatistics(), 205.0, since_pair=5.0).message.endswith("their stamps do not match within the slop")

    # a burst of hour-old stamps warns, then ages out (it was a mean over the last 200 messages, at any age)
    clock = NodeStatistics(recent_s=10.0)
    for i in range(20):
        clock.record_stamp_age("rgb", 3600.0, now=300.0 + 0.1 * i)
    assert "far from this node's clock" in report(clock, 302.0).message
    clock.record_stamp_age("rgb", 0.03, now=315.0)
    assert report(clock, 315.0).level == OK and report(clock, 315.0).values["rgb_stamp_age_mean_ms"] == "30.0"

    lost = NodeStatistics()
    lost.record_lost("rgb", 4, now=400.0)
    silent = report(lost, 401.0, since_pair=5.0, inputs=(4.5, 0.0), lossy=True)
    assert silent.level == WARN and "messages lost in transport in the last 10 s: 4 rgb" in silent.message
    assert "input_qos:=reliable" in silent.message and silent.values["lost_rgb"] == "4"
    nobody = report(NodeStatistics(), 401.0, since_pair=5.0, inputs=(None, 0.0), lossy=True)
    assert nobody.message.endswith("no message for > 3 s on: rgb" + LOSSY_HINT)  # publishers unknown: the hint
    assert "input_qos" in build_report(
        active=True, stats=NodeStatistics(), pairing={}, dropped=0, seconds_since_pair=5.0, no_pair_warn_s=3.0,
        seconds_since_input={"rgb": None, "thermal": 0.0}, lossy_inputs=True, publishers={"rgb": 1, "thermal": 1}).message
    unpublished = build_report(
        active=True, stats=NodeStatistics(), pairing={}, dropped=0, seconds_since_pair=5.0, no_pair_warn_s=3.0,
        seconds_since_input={"rgb": None, "thermal": None}, lossy_inputs=True, publishers={"rgb": 0, "thermal": 1})
    assert unpublished.message.endswith("on: rgb (no publisher), thermal" + LOSSY_HINT)


# --- parameters, config file, launch file -----------------------------------------------------------


def load_config_params() -> dict:
    data = yaml.safe_load((REPO / "config" / "taseg.yaml").read_text())
    return data["/**"]["ros__parameters"]


def test_config_yaml_matches_node_defaults():
    assert load_config_params() == NodeParams.defaults()


def test_config_yaml_is_generated_from_the_parameter_table():
    """config/taseg.yaml holds every parameter's default and description from ros/params.NodeParams
    (regenerate with `python -m taseg_ros.ros.params > config/taseg.yaml`)."""
    from taseg_ros.ros.params import PARAMETERS, render_config_yaml

    text = (REPO / "config" / "taseg.yaml").read_text()
    assert text == render_config_yaml()
    for name, row in PARAMETERS.items():
        assert row.metadata["doc"].split()[0] in text and f"    {name}: " in text


def test_every_parameter_has_a_description_and_numeric_limits_are_stated():
    from taseg_ros.ros.params import LIVE_PARAMETERS, PARAMETERS, description

    assert LIVE_PARAMETERS == {"overlay_alpha", "thermal_normalization", "thermal_range", "thermal_percentiles",
                               "thermal_homography", "thermal_homography_size", "no_pair_warning", "clock_offset_warning", "log_throttle",
                               "quality_diagnostics", "input_timeout", "input_fallback", "frozen_warning",
                               "confidence_encoding", "jpeg_quality"}
    for name in PARAMETERS:
        text = description(name)
        assert len(text) > 40 and ("applies to the next frame" in text) == (name in LIVE_PARAMETERS), text
    assert description("overlay_alpha").endswith("[range: in [0, 1]; applies to the next frame]")
    assert "range: > 0 seconds" in description("diagnostics_period")
    assert "one of: auto, torch, onnxruntime, openvino, tensorrt" in description("backend")


def test_param_validation_names_the_parameter():
    good = NodeParams(checkpoint="model.safetensors")
    good.validate()
    assert good.thermal_norm() == ThermalNormalization("auto", 0.0, 255.0, (1.0, 99.0))
    assert good.homography() is None
    cases = {
        "checkpoint": dict(checkpoint=""),
        "device": dict(device="tpu"),
        "precision": dict(precision="int8"),
        "rgb_transport": dict(rgb_transport="theora"),
        "input_qos": dict(input_qos="fast"),
        "thermal_homography": dict(thermal_homography=[1.0, 0.0]),
        "overlay_alpha": dict(overlay_alpha=1.5),
        "time_reset": dict(slop=0.5, time_reset=0.1),
    }
    for name, change in cases.items():
        params = NodeParams(**{**dict(checkpoint="m.safetensors"), **change})
        with pytest.raises(ValueError, match=f"'{name}'"):
            params.validate()
    with pytest.raises(ValueError, match="fixed range needs high > low"):
        NodeParams(checkpoint="m", thermal_normalization="fixed", thermal_range=[5.0, 1.0]).validate()
    warp = NodeParams(checkpoint="m", thermal_homography=[2.0, 0, 0, 0, 2.0, 0, 0, 0, 1.0])
    warp.validate()
    assert warp.homography()[0, 0] == 2.0


def test_launch_file_compiles_and_declares_every_parameter_from_the_table(tmp_path):
    """Every node parameter is a launch argument, generated from ros/params.NodeParams (test_ros2_tools
    runs `ros2 launch ... --show-args` on the built package and checks each one is listed)."""
    py_compile.compile(str(REPO / "launch" / "taseg.launch.py"), cfile=str(tmp_path / "launch.pyc"), doraise=True)
    source = (REPO / "launch" / "taseg.launch.py").read_text()
    tree = ast.parse(source)
    literal_args = [node.args[0].value for node in ast.walk(tree) if isinstance(node, ast.Call)
                    and getattr(node.func, "id", None) == "DeclareLaunchArgument" and node.args
                    and isinstance(node.args[0], ast.Constant)]
    assert not literal_args, f"launch arguments spelled out instead of generated: {literal_args}"
    assert "for name in NodeParams.names()" in source and "description(name)" in source and "launch_value(name" in source
    fixed = next(node for node in ast.walk(tree) if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", None) == "LAUNCH_ARGUMENTS")
    names = {key.value for key in fixed.value.keys}
    assert names == {"namespace", "rgb_topic", "thermal_topic", "params_file", "rviz", "use_sim_time", "dds_transport"}
    assert not names & set(NodeParams.names())


def test_rviz_config_shows_overlay_and_labels():
    config = yaml.safe_load((REPO / "config" / "taseg.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    enabled = {d["Topic"]["Value"] for d in displays if d["Class"] == "rviz_default_plugins/Image" and d["Enabled"]}
    assert enabled == {"/taseg/overlay", "/taseg/colorized"}


def test_ros_free_modules_do_not_import_rclpy():
    import subprocess

    code = (
        "import sys; import taseg_ros.frames.pairing, taseg_ros.frames.codec, taseg_ros.frames.thermal, "
        "taseg_ros.frames.render, taseg_ros.frames.files, taseg_ros.frames.settings, taseg_ros.ros.diagnostics, "
        "taseg_ros.ros.params; bad = [m for m in sys.modules if m.split('.')[0] in "
        "('rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'torch')]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the node's health (ros/health.py): camera faults, frozen streams, stamp skew -------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ListLog:
    """A logger that keeps what it is told (info/warning/error), as the node's rclpy logger would print it."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, text):
        self.lines.append(("info", text))

    def warning(self, text):
        self.lines.append(("warning", text))

    def error(self, text):
        self.lines.append(("error", text))


def frame(value: int, size: int = 640 * 480):
    """An input message: only its data matters to the health (frozen check) and its header stamp."""
    data = np.random.default_rng(value).integers(0, 256, size, dtype=np.uint8).tobytes()
    return SimpleNamespace(data=data)


def health_with(clock, **params):
    from taseg_ros.ros.health import NodeHealth

    health = NodeHealth(ListLog(), clock=clock)
    health.configure(NodeParams(checkpoint="m", **params), classes=None)
    health.activate({"rgb": "/cam/rgb", "thermal": "/cam/thermal"})
    return health


def report_of(health):
    return health.report(active=True, pairing={}, dropped=0, publishers=None)


def test_a_silent_camera_is_named_and_the_fallback_says_what_it_publishes():
    clock = FakeClock()
    for fallback in ("none", "blank"):
        health = health_with(clock, input_timeout=1.0, input_fallback=fallback)
        for i in range(5):  # both streams at 4 Hz (steps exact in binary: no rounding at the limit)
            clock.now += 0.25
            health.arrived("rgb", frame(i), 0, 0)
            health.arrived("thermal", frame(100 + i), 0, 0)
        assert health.missing_stream() is None and report_of(health).level == OK
        for i in range(6):  # the thermal camera stops; RGB goes on for 1.5 s
            clock.now += 0.25
            health.arrived("rgb", frame(10 + i), 0, 0)
            assert health.missing_stream() == ("thermal" if i >= 4 else None), i  # silent for more than 1 s
        report = report_of(health)
        assert report.values["thermal_silent_s"] == "1.5" and report.values["rgb_silent_s"] == "0.0"
        if fallback == "none":
            assert report.level == ERROR and report.values["input_fallback_active"] == ""
            assert report.message == "/cam/thermal silent for 1.5 s (input_timeout 1 s): publishing nothing (input_fallback none)"
        else:
            for _ in range(4):  # what the node's worker reports for each frame it published with thermal blanked
                health.degraded["thermal"] += 1
            report = report_of(health)
            assert report.level == WARN and report.values["input_fallback_active"] == "thermal"
            assert report.message.startswith("/cam/thermal silent for 1.5 s (input_timeout 1 s), since ")
            assert report.message.endswith("UTC: publishing from /cam/rgb alone with thermal blanked "
                                           "(input_fallback blank), 4 frame(s) degraded")
            assert report.values["degraded_thermal_blanked"] == "4"
        health.arrived("thermal", frame(200), 0, 0)  # it returns: pairs again
        assert health.missing_stream() is None and report_of(health).level != ERROR
    clock.now += 5.0  # both silent: no camera fault (nothing runs), the no-pair warning says it
    assert health.missing_stream() is None
    off = health_with(clock, input_timeout=0.0)
    clock.now += 10.0
    off.arrived("rgb", frame(1), 0, 0)
    assert off.missing_stream() is None


def test_a_frozen_stream_warns_after_frozen_warning_and_clears_when_it_moves():
    from taseg_ros.ros.health import frame_digest

    clock = FakeClock()
    health = health_with(clock, frozen_warning=2.0, input_timeout=0.0, no_pair_warning=100.0)
    health.last_pair_at = clock.now
    stuck = frame(7)
    for i in range(25):  # 2.4 s of one repeated thermal image (a hung driver), RGB alive
        clock.now += 0.1  # (the first of them arrives at 0.1 s)
        health.last_pair_at = clock.now
        health.arrived("rgb", frame(i), 0, 0)
        health.arrived("thermal", stuck, 0, 0)
        if i == 19:  # 1.9 s: within frozen_warning (flat-field correction lasts about a second)
            assert report_of(health).level == OK
    report = report_of(health)
    assert report.level == WARN and report.values["thermal_frozen_s"] == "2.4" and report.values["rgb_frozen_s"] == "0.0"
    assert report.message == ("/cam/thermal frozen: the same image for 2.4 s (25 frames); a thermal camera's flat-field "
                              "correction, or a hung driver?")
    health.arrived("thermal", frame(8), 0, 0)
    assert report_of(health).level == OK and report_of(health).values["thermal_frozen_s"] == "0.0"
    # the digest: equal for equal bytes, different for a live camera's next frame, cheap for a large one
    assert frame_digest(stuck.data) == frame_digest(bytes(stuck.data)) != frame_digest(frame(9).data)
    assert frame_digest(b"") == frame_digest(bytearray())


def test_the_stamp_skew_of_the_pairs_is_in_the_diagnostics():
    from taseg_ros.frames.pairing import Pair

    clock = FakeClock()
    health = health_with(clock)
    for skew_ms in (3.0, -1.0, 4.0):  # thermal minus RGB
        health.paired(Pair(1_000_000_000, 1_000_000_000 + int(skew_ms * MS), None, None))
    values = report_of(health).values
    assert values["stamp_skew_mean_ms"] == "2.00" and values["stamp_skew_max_ms"] == "4.00"
    assert report_of(health_with(clock)).values["stamp_skew_mean_ms"] == "nan"


def test_a_publisher_with_incompatible_qos_is_named_with_the_fix():
    clock = FakeClock()
    health = health_with(clock, no_pair_warning=3.0)
    health.incompatible("rgb", "RELIABILITY")
    assert health.log.lines[-1] == ("error", "/cam/rgb: a publisher offers QoS that input_qos reliable cannot match "
                                    "(RELIABILITY), so none of its frames arrive: set input_qos:=sensor_data (a "
                                    "best-effort camera)")
    clock.now += 5.0
    health.arrived("thermal", frame(1), 0, 0)
    report = report_of(health)
    assert report.level == ERROR and report.message == health.log.lines[-1][1]


def test_notes_are_counted_and_logged_once_per_kind():
    from taseg_ros.frames.thermal import FrameNote

    health = health_with(FakeClock(), log_throttle=60.0)
    health.note(FrameNote("thermal_aligned", "thermal", "thermal frames (80x60) are resized to the RGB frame (160x120)"))
    health.note(FrameNote("nonfinite_thermal", "thermal", "12 of 4800 pixels are NaN/inf", ""))
    health.note(FrameNote("nonfinite_thermal", "thermal", "13 of 4800 pixels are NaN/inf", ""))
    health.note(FrameNote("bad_thermal", "thermal", "truncated; pair skipped", "truncated"), failed=True)
    assert health.log.lines == [
        ("warning", "thermal frames (80x60) are resized to the RGB frame (160x120); set thermal_homography for a "
                    "registered overlay"),
        ("warning", "/cam/thermal: 12 of 4800 pixels are NaN/inf"),
        ("warning", "/cam/thermal: truncated; pair skipped (1 x truncated since configure)"),
    ]
    assert health.stats.errors == {"nonfinite_thermal": 2, "bad_thermal": 1}


# --- parameters: empty lists, launch arguments, descriptions --------------------------------------


def test_yaml_null_and_unset_lists_mean_empty():
    """`ros2 param dump` writes a parameter without a value as null; rcl reads it back as the string
    'null'. For a list parameter it means []."""
    from taseg_ros.ros.params import no_value

    for value in (None, "null", "~", "NULL", ""):
        assert no_value(value) and NodeParams.from_parameters({"thermal_homography": value}).thermal_homography == []
    assert not no_value([]) and not no_value("none")
    with pytest.raises(ValueError, match="parameter 'thermal_homography' = 'none'"):
        NodeParams.from_parameters({"thermal_homography": "none"})


def test_launch_values_are_typed_and_checked_naming_the_argument():
    from taseg_ros.ros.params import launch_value

    assert launch_value("slop", "0.05") == 0.05 and launch_value("slop", "1") == 1.0
    assert launch_value("checkpoint", "123") == "123"  # text parameters stay text
    assert launch_value("thermal_homography", "[]") == []
    assert launch_value("thermal_range", "[0, 65535]") == [0.0, 65535.0]
    assert launch_value("publish_confidence", "true") is True and launch_value("use_sim_time", "false") is False
    for name, text, why in (("slop", "abc", "parameter 'slop' = 'abc': expected a value like 0.02"),
                            ("input_qos", "fast", "expected one of sensor_data, reliable, best_effort"),
                            ("overlay_alpha", "2", "must be in [0, 1]"),
                            ("use_sim_time", "maybe", "expected true or false")):
        with pytest.raises(ValueError, match=re.escape(why)) as refused:
            launch_value(name, text)
        assert str(refused.value).startswith(f"launch argument {name}:={text}: ")


# --- the DDS transport the launch file gives the node --------------------------------------------


def test_dds_transport_auto_sets_udp_with_large_buffers_unless_the_environment_has_its_own():
    from taseg_ros.ros.transport import FASTDDS_NODE_TRANSPORT, SOCKETS_SIZE, node_environment

    assert node_environment("auto", {}, rmem_max=SOCKETS_SIZE) == ({"FASTDDS_BUILTIN_TRANSPORTS": FASTDDS_NODE_TRANSPORT}, [])
    assert FASTDDS_NODE_TRANSPORT == "UDPv4?sockets_size=4194304"
    env, notes = node_environment("auto", {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}, rmem_max=212992)
    assert env and notes == ["net.core.rmem_max is 212992 bytes, so the node's 4194304 byte receive buffer is cut to "
                             "that and large frames may be lost: sudo sysctl -w net.core.rmem_max=4194304 (README: no "
                             "frames lost in transport)"]
    assert node_environment("auto", {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"})[0] == {}
    assert node_environment("auto", {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/fastdds.xml"})[0] == {}
    assert node_environment("auto", {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"})[0] == {}
    assert node_environment("keep", {}) == ({}, [])
    assert node_environment("LARGE_DATA", {}) == ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}, [])


# --- dependencies: one table for setup.py, package.xml, the README and the node's message ---------


def test_dependencies_are_one_table_for_setup_package_xml_and_readme():
    import xml.etree.ElementTree as ET

    from taseg_ros import dependencies

    setup_text = (REPO / "setup.py").read_text()
    assert 'install_requires=DEPENDENCIES["pip_requirements"]()' in setup_text
    declared = {e.text for e in ET.parse(REPO / "package.xml").getroot().iter("exec_depend")}
    assert set(dependencies.rosdep_keys()) <= declared
    assert {"python3-pytorch-pip", "python3-tensorboard-pip", "python3-rosbags-pip", "vision_msgs"} <= declared
    readme = (REPO / "README.md").read_text()
    assert f"python3 -m pip install {' '.join(dependencies.pip_only())}" in readme.replace("'", "")


def test_a_missing_dependency_is_one_line_with_the_package_and_how_to_install_it():
    from taseg_ros.dependencies import missing_message

    torch = missing_message("torch")
    assert torch.startswith("the Python package 'torch>=2.1' is not installed (import torch failed)")
    assert "key python3-pytorch-pip" in torch and "python3 -m pip install 'torch>=2.1'" in torch and "\n" not in torch
    assert "'rosbags-image'" in missing_message("rosbags.image") and "'open_clip_torch>=2.20'" in missing_message("open_clip")
    assert "key python3-rosbags-pip" in missing_message("rosbags.typesys")
    assert "source /opt/ros/$ROS_DISTRO/setup.bash" in missing_message("rclpy")
    assert missing_message("not_ours") is None and missing_message(None) is None


# --- outputs: confidence encodings, compressed images ---------------------------------------------


def test_mono8_confidence_is_round_255_p():
    from taseg_ros.frames.render import confidence_image

    p = np.array([[0.0, 0.5, 1.0], [0.1, 0.998, 0.002]], np.float32)
    assert confidence_image(p, "mono8").tolist() == [[0, 128, 255], [26, 254, 1]]
    assert confidence_image(p, "32FC1").dtype == np.float32 and np.array_equal(confidence_image(p, "32FC1"), p)


def test_compressed_outputs_decode_as_image_transport_writes_them():
    from taseg_ros.frames.codec import encode_compressed

    labels = np.random.default_rng(3).integers(0, 9, (48, 64), dtype=np.uint8)
    fmt, data = encode_compressed(labels, "mono8", "png")
    assert fmt == "png"
    assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), labels)  # lossless
    y, x = np.mgrid[0:48, 0:64]
    rgb_frame = np.dstack([x * 4, y * 5, 255 - x * 2]).astype(np.uint8)  # smooth, as a photo: JPEG keeps it close
    fmt, data = encode_compressed(rgb_frame, "rgb8", "jpeg", jpeg_quality=95)
    assert fmt == "jpeg"
    decoded = decode_rgb(SimpleNamespace(format=fmt, data=data))  # the node's own decoder: RGB order back
    assert np.abs(decoded.astype(int) - rgb_frame.astype(int)).mean() < 2
    with pytest.raises(ImageDecodeError, match="cannot compress '32FC1'"):
        encode_compressed(np.zeros((2, 2), np.float32), "32FC1", "png")


def test_parameter_changes_follow_the_lifecycle_state():
    """What `ros2 param set` gets (NodeParams.refuse_change): read-at-configure parameters only while
    unconfigured, every value checked against its row, live ones also across parameters when configured."""
    params = NodeParams(checkpoint="m.safetensors")
    assert params.refuse_change({"checkpoint": "other.safetensors", "slop": 0.05}, "unconfigured", "/taseg") is None
    assert params.refuse_change({"checkpoint": "other.safetensors"}, "active", "/front/taseg") == (
        "checkpoint: read at configure, and the node is active; change it while unconfigured: ros2 lifecycle set "
        "/front/taseg deactivate, then cleanup; set it; configure; activate")
    assert "the node is inactive; change it while unconfigured: ros2 lifecycle set /taseg cleanup;" in \
        params.refuse_change({"device": "cpu"}, "inactive", "/taseg")
    assert params.refuse_change({"overlay_alpha": 0.2}, "active", "/taseg") is None
    assert "parameter 'slop' = 'fast'" in params.refuse_change({"slop": "fast"}, "unconfigured", "/taseg")
    # across parameters: checked at set time when configured, at configure otherwise
    crossed = {"thermal_percentiles": [99.0, 1.0]}
    assert "percentiles must satisfy" in params.refuse_change(crossed, "active", "/taseg")
    assert params.refuse_change(crossed, "unconfigured", "/taseg") is None


def image_in(stamp_ns: int, value: int = 0, encoding: str = "mono8"):
    """A raw Image-like message (the codec is duck-typed) of 4x6 pixels."""
    data = np.full((4, 6, 3 if encoding == "rgb8" else 1), value, np.uint8).tobytes()
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec), frame_id="cam"),
                           encoding=encoding, height=4, width=6, step=len(data) // 4, is_bigendian=0, data=data)


def test_the_input_path_pairs_and_falls_back_to_single_frames():
    from taseg_ros.ros.inputs import InputPath

    clock = FakeClock()
    health = health_with(clock, input_timeout=1.0, input_fallback="blank")
    slot = LatestSlot()
    path = InputPath(health.params, health, slot)
    t = 5_000_000_000
    path.accept("rgb", image_in(t, 1, "rgb8"), 0)
    path.accept("thermal", image_in(t + 2 * MS, 2), 0)
    pair = slot.take(timeout=0)
    assert pair.rgb_stamp_ns == t and pair.thermal is not None and health.stats.snapshot()["skew"]["mean"] == pytest.approx(0.002)
    for i in range(1, 7):  # the thermal camera stops; 1.5 s of RGB
        clock.now += 0.25
        path.accept("rgb", image_in(t + i * 250 * MS, i, "rgb8"), 0)
    single = slot.take(timeout=0)
    assert single.thermal is None and single.rgb_stamp_ns == t + 6 * 250 * MS
    assert slot.dropped == 1  # the first single frame (after 1.25 s) was replaced by the next before anyone took it
    path.accept("rgb", image_in(t, 9, "yuv420"), 0)  # refused by the field check, counted
    assert health.stats.errors["bad_rgb"] == 1 and slot.take(timeout=0) is None
    path.params = health.params = NodeParams(checkpoint="m", input_timeout=1.0, input_fallback="none")
    clock.now += 0.25
    path.accept("rgb", image_in(t + 7 * 250 * MS, 7, "rgb8"), 0)
    assert slot.take(timeout=0) is None  # none: nothing without a partner


def test_a_domain_is_claimed_by_one_process_at_a_time(tmp_path, monkeypatch):
    """Two claims in one process differ; a second process gets none of them; its id is free again when
    it exits; a link planted where a lock file goes is skipped, never followed."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() reads TMPDIR again
    monkeypatch.setattr(domains, "_held", {})
    target = tmp_path / "not_to_be_created"
    os.symlink(target, tmp_path / f"taseg_ros_domain_{domains.CANDIDATES[0]}.lock")
    mine = {domains.claim_domain(), domains.claim_domain()}
    assert mine == set(domains.CANDIDATES[1:3]) and not target.exists()
    child = subprocess.run([sys.executable, "-c", "from taseg_ros.ros.domains import claim_domain; print(claim_domain())"],
                           capture_output=True, text=True, timeout=120, check=True)
    theirs = int(child.stdout)
    assert theirs == domains.CANDIDATES[3], child.stdout
    with open(tmp_path / f"taseg_ros_domain_{theirs}.lock") as lock:  # released when the child ended
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    held = next(iter(mine))
    with open(tmp_path / f"taseg_ros_domain_{held}.lock") as lock, pytest.raises(BlockingIOError):
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file description: refused while held
    for fd in domains._held.values():
        os.close(fd)


def test_a_registration_check_in_flight_is_waited_for_never_left_running():
    """A check still inside OpenCV when the interpreter exits aborted the node (`terminate called without
    an active exception`, exit -6 on Ctrl-C, 1 in ~9 stops): the check's thread is not a daemon, and
    deactivate, cleanup and exit (finish_checks) wait for it; a new activation too."""
    clock = FakeClock()
    health = health_with(clock, registration_check_period=1.0)
    started, release, done = threading.Event(), threading.Event(), []

    def slow_check(rgb, thermal, homography):
        started.set()
        release.wait(30)
        done.append(True)

    health.registration.check = slow_check
    thermal = SimpleNamespace(encoding="mono16", height=4, width=6, step=12, is_bigendian=0, data=bytes(48))
    health._check_registration(np.zeros((4, 6, 3), np.uint8), thermal)
    assert started.wait(30)
    check = health._registration_check
    assert check is not None and not check.daemon
    assert not health.finish_checks(timeout=0.05) and check.is_alive()  # still running: says so
    health._registration_check = check
    threading.Timer(0.2, release.set).start()
    assert health.finish_checks() and done == [True] and not check.is_alive()
    assert health._registration_check is None and health.finish_checks()  # nothing in flight: nothing to wait for
