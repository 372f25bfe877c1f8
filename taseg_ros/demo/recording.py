"""Write realistic RGB-thermal rosbag2 recordings from frames: the demo's recording (and the tests').

    from taseg_ros.demo.recording import write_rgbt_bag
    frames = [street_scene(rng, 48, 64, night=False) for _ in range(40)]   # objects with rgb, thermal, label
    rec = write_rgbt_bag(tmp / "run1", frames, storage="mcap", drop_rgb=[5], drop_thermal=[11, 12],
                         compressed=True, label_topic="/labels")
    rec.expected_pairs       # frames with both cameras present
    rec.frames[3].rgb_stamp_ns, rec.frames[3].label

What a recording looks like (the way two unsynchronised cameras and ``ros2 bag record`` behave):
  - both cameras run at ``rate_hz``; the thermal camera's stamps sit ``thermal_offset_s`` after the
    RGB camera's, and every stamp has Gaussian ``jitter_s`` (driver timing noise);
  - each message is received (log time) after its stamp by a random delay in ``delay_s`` (transport,
    driver), so the two streams interleave irregularly in the recording;
  - frames listed in ``drop_rgb`` / ``drop_thermal`` are missing (dropped by the driver or the DDS);
  - images are raw ``sensor_msgs/Image`` (rgb8/bgr8 colour, mono8/mono16 thermal) or, with
    ``compressed``, ``sensor_msgs/CompressedImage`` on ``<topic>/compressed`` as image_transport
    publishes them (JPEG colour, lossless PNG thermal, 16-bit PNG for mono16);
  - an unrelated ``sensor_msgs/Imu`` topic at 5x the camera rate, as real recordings have;
  - optionally ground-truth labels (mono8 class ids) on ``label_topic``, stamped like the RGB frame.
Storage: sqlite3 (rosbag2's default before Jazzy) or mcap (the default since); message definitions
of any ROS 2 distribution (``distro``: humble, jazzy, kilted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from taseg_ros.bag.io.messages import compressed_message, image_message, make_header
from taseg_ros.bag.io.msgtypes import COMPRESSED_IMAGE, IMAGE, default_typestore
from taseg_ros.bag.io.writer import BagWriter
from taseg_ros.errors import InputError
from taseg_ros.frames.pairing import NS_PER_S
from taseg_ros.scenes import thermal_counts

DEFAULT_RGB_TOPIC = "/camera/color/image_raw"
DEFAULT_THERMAL_TOPIC = "/thermal/image_raw"
IMU_TOPIC = "/imu/data"
DEFAULT_START_NS = 1_700_000_000 * NS_PER_S


class RGBTFrame(Protocol):
    """What a recorded frame needs (taseg_ros.scenes.SceneFrame is one): RGB (H, W, 3) uint8, thermal
    (H, W) uint8, and optionally a label (H, W) of class ids."""

    rgb: np.ndarray
    thermal: np.ndarray
    label: np.ndarray | None

__all__ = [
    "DEFAULT_RGB_TOPIC",
    "DEFAULT_THERMAL_TOPIC",
    "FrameRecord",
    "RecordedBag",
    "thermal_counts",
    "write_rgbt_bag",
]


@dataclass
class FrameRecord:
    """One instant of the recording: what each camera wrote (None where the frame was dropped)."""

    index: int
    rgb_stamp_ns: int | None
    thermal_stamp_ns: int | None
    rgb_log_ns: int | None
    thermal_log_ns: int | None
    source: RGBTFrame

    @property
    def paired(self) -> bool:
        return self.rgb_stamp_ns is not None and self.thermal_stamp_ns is not None

    @property
    def label(self) -> np.ndarray | None:
        return self.source.label


@dataclass
class RecordedBag:
    path: Path
    storage: str
    rgb_topic: str
    thermal_topic: str
    label_topic: str | None
    rgb_type: str
    thermal_type: str
    rate_hz: float
    frames: list[FrameRecord] = field(default_factory=list)

    @property
    def expected_pairs(self) -> int:
        """Frames where both cameras are present (the pairs, for a slop above offset + jitter and
        well below the frame period)."""
        return sum(f.paired for f in self.frames)

    @property
    def paired_frames(self) -> list[FrameRecord]:
        return [f for f in self.frames if f.paired]


def _imu_message(stamp_ns: int, rng: np.random.Generator):
    ts = default_typestore()
    header = make_header(stamp_ns, "imu_link")
    vec = ts.types["geometry_msgs/msg/Vector3"]
    quat = ts.types["geometry_msgs/msg/Quaternion"]
    return ts.types["sensor_msgs/msg/Imu"](
        header=header,
        orientation=quat(x=0.0, y=0.0, z=0.0, w=1.0),
        orientation_covariance=np.zeros(9),
        angular_velocity=vec(x=float(rng.normal(0, 0.01)), y=float(rng.normal(0, 0.01)), z=float(rng.normal(0, 0.01))),
        angular_velocity_covariance=np.zeros(9),
        linear_acceleration=vec(x=float(rng.normal(0, 0.05)), y=float(rng.normal(0, 0.05)), z=9.81),
        linear_acceleration_covariance=np.zeros(9),
    )


def write_rgbt_bag(
    path: str | Path,
    frames: Sequence[RGBTFrame],
    *,
    storage: str = "mcap",
    rate_hz: float = 10.0,
    thermal_offset_s: float = 0.006,
    jitter_s: float = 0.002,
    delay_s: tuple[float, float] = (0.004, 0.030),
    drop_rgb: Sequence[int] = (),
    drop_thermal: Sequence[int] = (),
    compressed: bool | str = False,
    rgb_encoding: str = "rgb8",
    thermal_encoding: str = "mono8",
    rgb_topic: str = DEFAULT_RGB_TOPIC,
    thermal_topic: str = DEFAULT_THERMAL_TOPIC,
    label_topic: str | None = None,
    imu: bool = True,
    distro: str = "kilted",
    start_ns: int = DEFAULT_START_NS,
    seed: int = 0,
) -> RecordedBag:
    """Write ``frames`` as a two-camera recording at ``path`` (a new rosbag2 folder); see the module
    docstring for the timing model. ``compressed``: True (both), "rgb", "thermal" or False."""
    if rgb_encoding not in ("rgb8", "bgr8"):
        raise InputError(f"rgb_encoding must be rgb8 or bgr8, got {rgb_encoding!r}")
    if thermal_encoding not in ("mono8", "mono16"):
        raise InputError(f"thermal_encoding must be mono8 or mono16, got {thermal_encoding!r}")
    if not 0 <= thermal_offset_s + 3 * jitter_s < 0.5 / rate_hz:
        raise InputError("thermal_offset_s + 3 * jitter_s must stay below half a frame period")
    cameras = _Cameras(
        rgb_topic=f"{rgb_topic}/compressed" if compressed in (True, "rgb") else rgb_topic,
        thermal_topic=f"{thermal_topic}/compressed" if compressed in (True, "thermal") else thermal_topic,
        compress_rgb=compressed in (True, "rgb"),
        compress_thermal=compressed in (True, "thermal"),
        rgb_encoding=rgb_encoding,
        thermal_encoding=thermal_encoding,
        label_topic=label_topic,
        rng=np.random.default_rng(seed),
        jitter_s=jitter_s,
        delay_s=delay_s,
    )
    period_ns = int(round(1e9 / rate_hz))
    offset_ns = int(round(thermal_offset_s * 1e9))
    dropped_rgb, dropped_thermal = set(drop_rgb), set(drop_thermal)
    records = [
        cameras.add_frame(i, frame, start_ns + i * period_ns, offset_ns, i in dropped_rgb, i in dropped_thermal)
        for i, frame in enumerate(frames)
    ]
    if imu:
        cameras.add_imu(start_ns, period_ns, len(frames) * 5)
    cameras.write(path, storage, distro)
    return RecordedBag(
        path=Path(path),
        storage=storage,
        rgb_topic=cameras.rgb_topic,
        thermal_topic=cameras.thermal_topic,
        label_topic=label_topic,
        rgb_type=COMPRESSED_IMAGE if cameras.compress_rgb else IMAGE,
        thermal_type=COMPRESSED_IMAGE if cameras.compress_thermal else IMAGE,
        rate_hz=rate_hz,
        frames=records,
    )


@dataclass
class _Cameras:
    """The messages of a recording being made: (log time, order, topic, msgtype, message), sorted by
    log time before writing, as a recorder would."""

    rgb_topic: str
    thermal_topic: str
    compress_rgb: bool
    compress_thermal: bool
    rgb_encoding: str
    thermal_encoding: str
    label_topic: str | None
    rng: np.random.Generator
    jitter_s: float
    delay_s: tuple[float, float]
    messages: list[tuple[int, int, str, str, object]] = field(default_factory=list)

    def _jitter(self) -> int:
        return int(round(self.rng.normal(0.0, self.jitter_s) * 1e9))

    def _delay(self) -> int:
        return int(round(self.rng.uniform(*self.delay_s) * 1e9))

    def _add(self, log_ns: int, topic: str, msgtype: str, msg) -> None:
        self.messages.append((log_ns, len(self.messages), topic, msgtype, msg))

    def add_frame(
        self, i: int, frame: RGBTFrame, base_ns: int, offset_ns: int, drop_rgb: bool, drop_thermal: bool
    ) -> FrameRecord:
        rgb_stamp = base_ns + self._jitter()
        thermal_stamp = base_ns + offset_ns + self._jitter()
        rgb_log = None if drop_rgb else self._add_rgb(frame, rgb_stamp)
        thermal_log = None if drop_thermal else self._add_thermal(frame, thermal_stamp)
        return FrameRecord(
            index=i,
            rgb_stamp_ns=None if drop_rgb else rgb_stamp,
            thermal_stamp_ns=None if drop_thermal else thermal_stamp,
            rgb_log_ns=rgb_log,
            thermal_log_ns=thermal_log,
            source=frame,
        )

    def _add_rgb(self, frame: RGBTFrame, stamp: int) -> int:
        log = stamp + self._delay()
        if self.compress_rgb:
            msg = compressed_message(stamp, "camera_color_optical_frame", frame.rgb, "rgb8", "jpeg")
        else:
            image = frame.rgb if self.rgb_encoding == "rgb8" else np.ascontiguousarray(frame.rgb[:, :, ::-1])
            msg = image_message(stamp, "camera_color_optical_frame", image, self.rgb_encoding)
        self._add(log, self.rgb_topic, COMPRESSED_IMAGE if self.compress_rgb else IMAGE, msg)
        if self.label_topic is not None and frame.label is not None:
            label = image_message(stamp, "camera_color_optical_frame", frame.label.astype(np.uint8), "mono8")
            self._add(log + 50_000_000, self.label_topic, IMAGE, label)
        return log

    def _add_thermal(self, frame: RGBTFrame, stamp: int) -> int:
        log = stamp + self._delay()
        pixels = frame.thermal if self.thermal_encoding == "mono8" else thermal_counts(frame.thermal)
        if self.compress_thermal:
            msg = compressed_message(stamp, "thermal_optical_frame", pixels, self.thermal_encoding, "png")
        else:
            msg = image_message(stamp, "thermal_optical_frame", pixels, self.thermal_encoding)
        self._add(log, self.thermal_topic, COMPRESSED_IMAGE if self.compress_thermal else IMAGE, msg)
        return log

    def add_imu(self, start_ns: int, period_ns: int, count: int) -> None:
        """An unrelated sensor_msgs/Imu topic at 5x the camera rate, as real recordings have."""
        for k in range(count):
            stamp = start_ns + k * period_ns // 5
            self._add(stamp + 1_000_000, IMU_TOPIC, "sensor_msgs/msg/Imu", _imu_message(stamp, self.rng))

    def write(self, path: str | Path, storage: str, distro: str) -> None:
        self.messages.sort(key=lambda m: (m[0], m[1]))
        with BagWriter(path, storage=storage, compress=False, distro=distro) as writer:
            for log_ns, _, topic, msgtype, msg in self.messages:
                writer.write(topic, msgtype, log_ns, msg)
