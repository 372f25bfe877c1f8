"""The node's ROS-free logic: pairing, image conversion, colourising, diagnostics, parameters,
and the launch file's consistency with config/taseg.yaml. No rclpy needed."""
from __future__ import annotations

import ast
import py_compile
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
                               "thermal_homography", "thermal_homography_size", "no_pair_warning", "clock_offset_warning",
                               "log_throttle",
                               "quality_diagnostics"}
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


def launch_file_arguments() -> tuple[set[str], set[str]]:
    """(all declared launch argument names, names in PARAMETER_ARGUMENTS) from the launch file's AST."""
    tree = ast.parse((REPO / "launch" / "taseg.launch.py").read_text())
    declared, parameter_args = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            if node.args and isinstance(node.args[0], ast.Constant):
                declared.add(node.args[0].value)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PARAMETER_ARGUMENTS" for t in node.targets):
            parameter_args = {element.value for element in node.value.elts}
    return declared, parameter_args


def test_launch_file_compiles_and_matches_config(tmp_path):
    py_compile.compile(str(REPO / "launch" / "taseg.launch.py"), cfile=str(tmp_path / "launch.pyc"), doraise=True)
    declared, parameter_args = launch_file_arguments()
    fixed = {"namespace", "rgb_topic", "thermal_topic", "params_file", "rviz", "use_sim_time"}
    assert fixed <= declared
    assert parameter_args, "PARAMETER_ARGUMENTS not found in the launch file"
    unknown = parameter_args - set(load_config_params())
    assert not unknown, f"launch arguments that are not node parameters: {unknown}"
    assert "checkpoint" in parameter_args
    # every parameter argument is declared (by the loop over PARAMETER_ARGUMENTS) and nothing else is extra
    source = (REPO / "launch" / "taseg.launch.py").read_text()
    assert "for name in PARAMETER_ARGUMENTS" in source and "description(name)" in source
    assert declared == fixed


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
