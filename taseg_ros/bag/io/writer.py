"""Writing a new rosbag2 recording (mcap or sqlite3) that is always finished, even on Ctrl-C or errors.

    with BagWriter("out_bag", storage="mcap") as out:
        out.write("/taseg/labels", IMAGE, log_time_ns, image_message(stamp_ns, "cam", labels, "mono8"))
"""

from __future__ import annotations

import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from taseg_ros.bag.io.msgtypes import typestore
from taseg_ros.errors import InputError, OutputPathError
from taseg_ros.outputs import StagedFolder, check_creatable, check_not_overlapping, system_refusals

STORAGES = ("mcap", "sqlite3")


class BagWriter:
    """A new rosbag2 recording. Used as a context manager it is always *closed* (index, summary and
    metadata.yaml written) on exit, also after an exception or Ctrl-C, so whatever was written
    before stays a valid recording; rosbags' own context manager would abort (leave it unfinished).
    It is written under a temporary name beside `path` and renamed onto it when closed
    (outputs.StagedFolder): a killed run leaves no half-written recording at `path`."""

    def __init__(self, path: str | Path, storage: str = "mcap", compress: bool = True, distro: str = "kilted") -> None:
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        if storage not in STORAGES:
            raise InputError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"output recording exists: {self.path}; choose another path or delete it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._staged = StagedFolder(self.path)
        self._writer = Writer(self._staged.inner, version=9, storage_plugin=plugin)
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
            with system_refusals(self.path):  # a full disk: one line naming the recording
                self._writer.write(self.connection(topic, msgtype), int(log_time_ns), data)
            self.counts[topic] = self.counts.get(topic, 0) + 1

    def write(self, topic: str, msgtype: str, log_time_ns: int, msg: Any) -> None:
        self.write_raw(topic, msgtype, log_time_ns, self._ts.serialize_cdr(msg, msgtype))

    def close(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
            with system_refusals(self.path):  # a full disk: one line naming the recording
                try:
                    self._writer.close()
                except BaseException:  # noqa: BLE001 - abort the half-written recording, then re-raise
                    try:
                        self._writer.abort()
                    finally:
                        self._staged.discard()
                        raise
                self._staged.commit()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --- output recordings under the overwrite policy -------------------------------------------------


def _is_recording(path: Path) -> bool:
    """A rosbag2 recording: its storage files, and metadata.yaml unless a killed writer never got to
    write it (a recording an older version left half-written is replaced with --force too)."""
    if not path.is_dir() or path.is_symlink():
        return False
    files = list(path.iterdir())
    storage = [p for p in files if p.suffix in (".mcap", ".db3") and p.is_file()]
    return bool(storage) and all(p.name == "metadata.yaml" or p in storage for p in files)


def check_output_recording(path, *, force: bool = False, inputs=None) -> Path:
    """An output recording path under ``taseg_ros.outputs``' policy (never an input, not under a
    file), plus the rule for recordings: an existing one is refused without ``force``, and with it
    only a rosbag2 recording is replaced, never another folder. Checks only; see ``output_recording``."""
    path = Path(path)
    check_not_overlapping(path, inputs)
    if path.exists():
        if not path.is_dir():
            raise OutputPathError(f"{path} is an existing file; an output recording is a folder: give a new path")
        if not force:
            raise OutputPathError(f"output recording exists: {path}; pass --force to replace it or choose --output-bag")
        if not _is_recording(path):
            raise OutputPathError(f"{path} exists and is not a rosbag2 recording; not replacing it")
    check_creatable(path)
    return path


@contextmanager
def output_recording(path, *, force: bool = False, inputs=None) -> Iterator[Path | None]:
    """Check ``path`` (``check_output_recording``), remove the recording it replaces, and yield it
    for a ``BagWriter``; a run that fails removes the recording it started. ``None`` passes through."""
    if path is None:
        yield None
        return
    path = check_output_recording(path, force=force, inputs=inputs)
    if path.exists():
        shutil.rmtree(path)
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
