"""Reading rosbag2 recordings (sqlite3 and mcap) with ``rosbags``, with errors a user can act on.

    with open_bag("run1") as bag:            # a rosbag2 folder, or a bare .mcap / .db3 file
        bag.topics                            # {name: TopicSummary(name, msgtype, count)}
        rgb = bag.image_topic("/camera/color/image_raw", "--rgb-topic")   # checks it exists and is an image
        for m in bag.messages([rgb.name]):    # RawMessage(topic, msgtype, log_time_ns, data), in log-time order
            msg = bag.deserialize(m)          # rosbags message object (sensor_msgs/msg/Image, ...)

Every problem with the input becomes a ``BagError`` (a ``ValueError``, so the CLI prints it as one
line) that names the file and, where it helps, what to do: a missing topic lists the topics that
exist; a truncated recording says how to repair it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from taseg_ros.bag.io.msgtypes import IMAGE_TYPES, default_typestore
from taseg_ros.errors import MissingInputError, TasegError

_STORAGE_FILES = {".mcap": "mcap", ".db3": "sqlite3"}


class BagError(TasegError, ValueError):
    """A recording that cannot be used as asked; the message names the file/topic and the fix."""


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
            raise MissingInputError(f"recording not found: {given}")
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
