"""Reading and writing rosbag2 recordings (sqlite3 and mcap) with ``rosbags``, with errors a user can act on.

    with open_bag("run1") as bag:            # a rosbag2 folder, or a bare .mcap / .db3 file
        bag.topics                            # {name: TopicSummary(name, msgtype, count)}
        rgb = bag.image_topic("/camera/color/image_raw", "--rgb-topic")   # checks it exists and is an image
        for m in bag.messages([rgb.name]):    # RawMessage(topic, msgtype, log_time_ns, data), in log-time order
            msg = bag.deserialize(m)          # rosbags message object (sensor_msgs/msg/Image, ...)

    with BagWriter("out_bag", storage="mcap") as out:    # always finished on exit, even on Ctrl-C / errors
        out.write("/taseg/labels", IMAGE, log_time_ns, image_message(stamp_ns, "cam", labels, "mono8"))

Messages are (de)serialised with the ROS 2 Kilted type store: ``sensor_msgs/Image``,
``sensor_msgs/CompressedImage``, ``std_msgs/String`` and ``std_msgs/Header`` are identical (same
RIHS01 hash) in Humble, Jazzy and Kilted, so bags from any of them read the same way.

Every problem with the input becomes a ``BagError`` (a ``ValueError``, so the CLI prints it as one
line) that names the file and, where it helps, what to do: a missing topic lists the topics that
exist; a truncated recording says how to repair it.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
STORAGES = ("mcap", "sqlite3")

_STORAGE_FILES = {".mcap": "mcap", ".db3": "sqlite3"}


class BagError(ValueError):
    """A recording that cannot be used as asked; the message names the file/topic and the fix."""


def typestore(distro: str = "kilted"):
    """The ``rosbags`` type store of a ROS 2 distribution (humble, jazzy, kilted, ...)."""
    from rosbags.typesys import Stores, get_typestore

    try:
        return get_typestore(Stores[f"ROS2_{distro.upper()}"])
    except KeyError:
        known = sorted(s.name[5:].lower() for s in Stores if s.name.startswith("ROS2_"))
        raise ValueError(f"unknown ROS 2 distribution '{distro}'; known: {', '.join(known)}") from None


_TYPESTORE = None


def default_typestore():
    global _TYPESTORE
    if _TYPESTORE is None:
        _TYPESTORE = typestore("kilted")
    return _TYPESTORE


@dataclass(frozen=True)
class TopicSummary:
    name: str
    msgtype: str  # "a | b" when one topic was recorded with several types
    count: int

    @property
    def is_image(self) -> bool:
        return self.msgtype in IMAGE_TYPES


@dataclass(frozen=True)
class RawMessage:
    topic: str
    msgtype: str
    log_time_ns: int  # when the recorder received it
    data: bytes | memoryview  # CDR bytes as stored


def stamp_ns_of(msg: Any) -> int:
    """Header stamp of a deserialised message in integer nanoseconds."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def format_topics(topics: Iterable[TopicSummary]) -> str:
    items = sorted(topics, key=lambda t: t.name)
    if not items:
        return "(the recording has no topics)"
    return ", ".join(f"{t.name} ({t.msgtype}, {t.count} msgs)" for t in items)


def _explain_read_error(path: Path, exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    if path.is_dir():
        files = [f.name for f in _storage_files(path)]
        if files:
            path = Path(f"{path} ({', '.join(files)})")
    low = text.lower()
    hint = ""
    if "end magic" in low or "footer" in low or "summary" in low or "invalid message record" in low:
        hint = (
            " The .mcap file is truncated (was the recorder killed?); `mcap recover IN.mcap -o OUT.mcap` "
            "(mcap CLI) rebuilds a readable file from what was written."
        )
    elif "magic" in low or "profile is not ros2" in low:
        hint = " It is not a ROS 2 mcap file."
    elif "not a database" in low or "notadb" in low:
        hint = " It is not an SQLite3 rosbag2 file."
    elif "malformed" in low or "corrupt" in low or "disk image" in low:
        hint = " The SQLite3 database is damaged or truncated (was the recorder killed?)."
    elif "database files are missing" in low:
        hint = " metadata.yaml lists storage files that are not there; was the recording copied completely?"
    return f"{path}: cannot read this rosbag2 recording: {text}.{hint}"


def _storage_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in _STORAGE_FILES and p.is_file())


class Bag:
    """An open rosbag2 recording (use ``open_bag``)."""

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import Reader

        given = Path(path)
        if not given.exists():
            raise FileNotFoundError(f"recording not found: {given}")
        self.path = given
        self.note = ""
        target = given
        if given.is_dir() and not (given / "metadata.yaml").is_file():
            files = _storage_files(given)
            if len(files) == 1:
                # A recording whose recorder died before writing metadata.yaml: the storage file
                # alone is readable (rosbags reads bare .mcap/.db3 files).
                target = files[0]
                self.note = f"{given}/metadata.yaml is missing; reading {files[0].name} directly"
            elif not files:
                raise BagError(f"{given}: not a rosbag2 recording (no metadata.yaml, no .mcap or .db3 file)")
            else:
                raise BagError(
                    f"{given}: metadata.yaml is missing and there are {len(files)} storage files "
                    f"({', '.join(f.name for f in files)}); run `ros2 bag reindex {given}` to rebuild it"
                )
        elif given.is_file() and given.suffix not in _STORAGE_FILES:
            raise BagError(f"{given}: not a rosbag2 recording (expected a folder, a .mcap or a .db3 file)")
        self._target = target
        try:
            self._reader = Reader(target)
            self._reader.open()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - rosbags, apsw and the OS raise many types; all mean "unreadable"
            raise BagError(_explain_read_error(target, exc)) from exc
        self._ts = default_typestore()
        self.storage = self._detect_storage()
        topics: dict[str, TopicSummary] = {}
        self._connections: dict[str, list[Any]] = {}
        for conn in self._reader.connections:
            self._connections.setdefault(conn.topic, []).append(conn)
        for name, conns in self._connections.items():
            types = sorted({c.msgtype for c in conns})
            topics[name] = TopicSummary(name, " | ".join(types), sum(int(c.msgcount) for c in conns))
        self.topics: dict[str, TopicSummary] = dict(sorted(topics.items()))

    def _detect_storage(self) -> str:
        if self._target.is_file():
            return _STORAGE_FILES[self._target.suffix]
        files = _storage_files(self._target)
        kinds = {_STORAGE_FILES[f.suffix] for f in files}
        return kinds.pop() if len(kinds) == 1 else "unknown"

    # --- metadata ------------------------------------------------------------------------------

    @property
    def message_count(self) -> int:
        return int(self._reader.message_count)

    @property
    def start_ns(self) -> int | None:
        return int(self._reader.start_time) if self.message_count else None

    @property
    def end_ns(self) -> int | None:
        return int(self._reader.end_time) - 1 if self.message_count else None

    @property
    def duration_s(self) -> float:
        if not self.message_count:
            return 0.0
        return (self.end_ns - self.start_ns) * 1e-9

    @property
    def size_bytes(self) -> int:
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    @property
    def ros_distro(self) -> str | None:
        try:
            return self._reader.ros_distro
        except Exception:  # noqa: BLE001 - bare storage files have no metadata
            return None

    # --- topics --------------------------------------------------------------------------------

    def topic(self, name: str, option: str = "topic") -> TopicSummary:
        """The topic ``name`` or a BagError listing the topics that exist."""
        summary = self.topics.get(name)
        if summary is None:
            close = [t for t in self.topics if t.rstrip("/").split("/")[-1] == name.rstrip("/").split("/")[-1]]
            hint = f" Did you mean {close[0]}?" if len(close) == 1 else ""
            raise BagError(
                f"{option} {name}: no such topic in {self.path}.{hint} Topics: {format_topics(self.topics.values())}"
            )
        return summary

    def image_topic(self, name: str, option: str = "topic", types: tuple[str, ...] = IMAGE_TYPES) -> TopicSummary:
        """The topic ``name``, checked to carry one of ``types`` (sensor_msgs Image / CompressedImage)."""
        summary = self.topic(name, option)
        if summary.msgtype not in types:
            images = [t for t in self.topics.values() if t.msgtype in types]
            listing = ", ".join(f"{t.name} ({t.msgtype})" for t in images) or "none"
            raise BagError(
                f"{option} {name}: the topic is {summary.msgtype}, expected {' or '.join(types)}. "
                f"Image topics in {self.path}: {listing}"
            )
        if summary.count == 0:
            raise BagError(f"{option} {name}: the topic has no messages in {self.path}")
        return summary

    # --- messages ------------------------------------------------------------------------------

    def messages(
        self, topics: Iterable[str] | None = None, start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[RawMessage]:
        """Messages of ``topics`` (all when None) in log-time order. A read failure part-way becomes a
        BagError that says how many messages were read before it."""
        names = list(self.topics) if topics is None else list(dict.fromkeys(topics))
        connections = [c for name in names for c in self._connections.get(name, [])]
        if not connections:
            return
        count = 0
        iterator = self._reader.messages(connections=connections, start=start_ns, stop=stop_ns)
        while True:
            try:
                conn, timestamp, data = next(iterator)
            except StopIteration:
                return
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - see Bag.__init__
                raise BagError(
                    _explain_read_error(self._target, exc) + f" ({count} messages were read before the failure)"
                ) from exc
            count += 1
            yield RawMessage(conn.topic, conn.msgtype, int(timestamp), data)

    def deserialize(self, message: RawMessage) -> Any:
        try:
            return self._ts.deserialize_cdr(message.data, message.msgtype)
        except Exception as exc:  # noqa: BLE001 - rosbags raises SerdeError, struct.error, IndexError...
            raise BagError(
                f"{self.path}: message on {message.topic} at {message.log_time_ns * 1e-9:.6f} s cannot be "
                f"decoded as {message.msgtype} ({type(exc).__name__}: {exc}); the recording is damaged"
            ) from exc

    def first_message(self, topic: str) -> Any | None:
        for message in self.messages([topic]):
            return self.deserialize(message)
        return None

    def close(self) -> None:
        if getattr(self, "_reader", None) is not None and self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> "Bag":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_bag(path: str | Path) -> Bag:
    return Bag(path)


# --- choosing the RGB and thermal topics ---------------------------------------------------------

_THERMAL_WORDS = ("thermal", "lwir", "infrared", "flir", "boson", "/ir", "ir/", "ir_")
_RGB_WORDS = ("rgb", "color", "colour", "visible", "vis", "camera", "image_color", "left", "front")
# Image topics that are no camera input: segmentation outputs (ours or others'), depth images.
_NOT_CAMERA_WORDS = (
    "label",
    "colorized",
    "colourised",
    "overlay",
    "ground_truth",
    "confidence",
    "segment",
    "mask",
    "depth",
)


def _looks_thermal(topic: str, first: Any) -> bool:
    name = topic.lower()
    if any(w in name for w in _THERMAL_WORDS):
        return True
    encoding = str(getattr(first, "encoding", "") or getattr(first, "format", "")).lower()
    return any(e in encoding for e in ("mono16", "16uc1", "32fc1"))


def resolve_image_topics(
    bag: Bag, rgb_topic: str | None, thermal_topic: str | None
) -> tuple[TopicSummary, TopicSummary]:
    """The RGB and thermal topics: as given (checked), or guessed from the recording's image topics
    (thermal by name or 16-bit/float encoding). An ambiguous guess is a BagError asking for the options."""
    rgb = bag.image_topic(rgb_topic, "--rgb-topic") if rgb_topic else None
    thermal = bag.image_topic(thermal_topic, "--thermal-topic") if thermal_topic else None
    if rgb is not None and thermal is not None:
        if rgb.name == thermal.name:
            raise BagError(f"--rgb-topic and --thermal-topic are both {rgb.name}")
        return rgb, thermal
    images = [t for t in bag.topics.values() if t.is_image and t.count > 0]
    # Compressed republications (<topic>/compressed next to <topic>) are the same camera twice.
    names = {t.name for t in images}
    images = [t for t in images if not (t.name.endswith("/compressed") and t.name[: -len("/compressed")] in names)]
    images = [t for t in images if not any(w in t.name.lower() for w in _NOT_CAMERA_WORDS)]
    candidates = [t for t in images if t.name not in {x.name for x in (rgb, thermal) if x is not None}]
    hint = "pass --rgb-topic and --thermal-topic"
    listing = ", ".join(f"{t.name} ({t.msgtype})" for t in images) or "none"
    if thermal is None:
        thermal_like = [t for t in candidates if _looks_thermal(t.name, bag.first_message(t.name))]
        if len(thermal_like) == 1:
            thermal = thermal_like[0]
        elif len(candidates) == 1 and rgb is not None:
            thermal = candidates[0]
        else:
            raise BagError(
                f"{bag.path}: cannot tell which image topic is the thermal camera; {hint}. Image topics: {listing}"
            )
        candidates = [t for t in candidates if t.name != thermal.name]
    if rgb is None:
        if len(candidates) == 1:
            rgb = candidates[0]
        else:
            rgb_like = [t for t in candidates if any(w in t.name.lower() for w in _RGB_WORDS)]
            if len(rgb_like) != 1:
                raise BagError(
                    f"{bag.path}: cannot tell which image topic is the RGB camera; {hint}. Image topics: {listing}"
                )
            rgb = rgb_like[0]
    return rgb, thermal


# --- building messages -----------------------------------------------------------------------------


def make_header(stamp_ns: int, frame_id: str):
    ts = default_typestore()
    time_cls = ts.types["builtin_interfaces/msg/Time"]
    header_cls = ts.types["std_msgs/msg/Header"]
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return header_cls(stamp=time_cls(sec=sec, nanosec=nanosec), frame_id=frame_id)


def image_message(stamp_ns: int, frame_id: str, array: np.ndarray, encoding: str):
    """A rosbags ``sensor_msgs/msg/Image`` holding ``array`` (layout checked against ``encoding``)."""
    from taseg_ros.ros.image_codec import encode_image

    fields = encode_image(array, encoding)
    return default_typestore().types[IMAGE](
        header=make_header(stamp_ns, frame_id),
        height=fields.height,
        width=fields.width,
        encoding=fields.encoding,
        is_bigendian=int(fields.is_bigendian),
        step=fields.step,
        data=fields.data,
    )


def compressed_message(stamp_ns: int, frame_id: str, array: np.ndarray, encoding: str, codec: str = "png"):
    """A rosbags ``sensor_msgs/msg/CompressedImage`` as image_transport's compressed plugin writes it:
    format ``"<encoding>; <codec> compressed <stored encoding>"``. ``array`` is RGB for rgb8/bgr8."""
    import cv2

    codec = codec.lower()
    if codec not in ("png", "jpeg"):
        raise ValueError(f"codec must be png or jpeg, got {codec!r}")
    stored = encoding
    image = array
    if array.ndim == 3:
        image = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
        stored = "bgr8"
    if codec == "jpeg" and image.dtype != np.uint8:
        raise ValueError("jpeg needs 8-bit images; use png for 16-bit thermal")
    ok, buffer = cv2.imencode(".png" if codec == "png" else ".jpg", image)
    if not ok:
        raise ValueError(f"cannot encode a {array.shape} {array.dtype} image as {codec}")
    return default_typestore().types[COMPRESSED_IMAGE](
        header=make_header(stamp_ns, frame_id),
        format=f"{encoding}; {codec} compressed {stored}",
        data=buffer.reshape(-1),
    )


def string_message(text: str):
    return default_typestore().types[STRING](data=text)


# --- writing --------------------------------------------------------------------------------------


class BagWriter:
    """A new rosbag2 recording. Used as a context manager it is always *closed* (index, summary and
    metadata.yaml written) on exit, also after an exception or Ctrl-C, so whatever was written
    before stays a valid recording; rosbags' own context manager would abort (leave it unfinished)."""

    def __init__(self, path: str | Path, storage: str = "mcap", compress: bool = True, distro: str = "kilted") -> None:
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"output recording exists: {self.path}; choose another path or delete it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        if compress and storage == "mcap":
            # zstd chunk compression: label and colour images shrink ~20x; Foxglove and the
            # rosbag2 mcap plugin read it natively.
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._ts = typestore(distro)
        self._connections: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self._writer.open()
        self._open = True

    def connection(self, topic: str, msgtype: str, qos: Any = ()):
        key = (topic, msgtype)
        conn = self._connections.get(key)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self._ts, offered_qos_profiles=qos)
            self._connections[key] = conn
            self.counts.setdefault(topic, 0)
        return conn

    def write_raw(self, topic: str, msgtype: str, log_time_ns: int, data: bytes | memoryview) -> None:
        with self._lock:
            if not self._open:
                raise RuntimeError(f"{self.path} is closed")
            self._writer.write(self.connection(topic, msgtype), int(log_time_ns), data)
            self.counts[topic] = self.counts.get(topic, 0) + 1

    def write(self, topic: str, msgtype: str, log_time_ns: int, msg: Any) -> None:
        self.write_raw(topic, msgtype, log_time_ns, self._ts.serialize_cdr(msg, msgtype))

    def close(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
            try:
                self._writer.close()
            except BaseException:
                try:
                    self._writer.abort()
                finally:
                    raise

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --- Ctrl-C -----------------------------------------------------------------------------------------


class StopRequest:
    """Set by the first Ctrl-C inside ``stop_on_sigint``; long loops check it between frames."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


@contextmanager
def stop_on_sigint(message: str = "stopping after the current frame (Ctrl-C again to abort)") -> Iterator[StopRequest]:
    """The first SIGINT asks the loop to stop at a safe point (outputs get finished); a second one raises
    KeyboardInterrupt as usual. Outside the main thread signals cannot be caught: a no-op there."""
    import sys

    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        if stop:
            raise KeyboardInterrupt
        stop.set()
        print(f"\n{message}", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
