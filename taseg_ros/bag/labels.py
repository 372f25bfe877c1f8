"""Ground-truth labels for recorded frames, matched to the RGB frames by stamp.

Two sources:
  - a folder of label PNGs named by stamp, as ``taseg bag extract`` names its files
    (``[prefix]<sec>_<nanosec 9 digits>.png``): a dataset folder (its ``labels/`` is used and its
    ``classes.yaml`` says which value is ignored) or the label folder itself;
  - a label topic in the recording (``sensor_msgs/Image`` mono8/mono16 class ids, or a PNG
    ``CompressedImage``) stamped like the RGB frame it labels.

A label applies to the pair whose RGB stamp is nearest, if within ``tolerance_s`` (default 1 ms:
extraction writes the exact RGB stamp). Label values are class ids of the model's class list;
the ignore value (255, or the ``ignore_index`` of classes.yaml) is not scored.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np

from taseg_ros.bag.io.msgtypes import COMPRESSED_IMAGE, IMAGE
from taseg_ros.bag.io.reader import Bag, BagError
from taseg_ros.classes import ClassInfo
from taseg_ros.datasets.config import LabelMap, load_dataset_config
from taseg_ros.datasets.io import index_by_stem, read_label
from taseg_ros.errors import MissingInputError
from taseg_ros.frames.codec import ImageDecodeError, image_to_array
from taseg_ros.errors import InputError
from taseg_ros.frames.pairing import NS_PER_S, stamp_to_ns

STAMP_IN_NAME = re.compile(r"(\d+)_(\d{9})$")
LABEL_ENCODINGS = ("mono8", "8UC1", "mono16", "16UC1")


def stamp_id(stamp_ns: int, prefix: str = "") -> str:
    """File stem carrying a stamp: ``<prefix><sec>_<nanosec:09d>`` (sorts by time within a prefix)."""
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return f"{prefix}{sec}_{nanosec:09d}"


def stamp_from_id(stem: str) -> int | None:
    match = STAMP_IN_NAME.search(stem)
    if match is None:
        return None
    return int(match.group(1)) * NS_PER_S + int(match.group(2))


def _label_map(classes: ClassInfo, classes_yaml: Path | None):
    if classes_yaml is not None and classes_yaml.is_file():
        config = load_dataset_config(classes_yaml)
        if tuple(config.classes.names) != tuple(classes.names):
            raise BagError(
                f"{classes_yaml}: the labels use classes {list(config.classes.names)} but the model predicts "
                f"{list(classes.names)}; evaluate with a checkpoint trained on these classes"
            )
        return config.label_map, config.metric
    ignore = classes.ignore_index if classes.ignore_index is not None else 255
    return LabelMap(classes.num_classes, ignore=(int(ignore),)), None


def check_tolerance(tolerance_s: float) -> None:
    """--label-tolerance: seconds between a label's stamp and its RGB frame's, as integer ns."""
    if not 0 <= tolerance_s < math.inf:
        raise InputError(f"--label-tolerance must be a finite number of seconds >= 0, got {tolerance_s}")


class LabelSource:
    """Labels keyed by stamp; ``match(rgb_stamp_ns)`` finds one, ``load(key)`` reads it as class ids
    (int64, ignored pixels = IGNORE_INDEX)."""

    description = ""

    def __init__(self, classes: ClassInfo, tolerance_s: float, classes_yaml: Path | None = None) -> None:
        check_tolerance(tolerance_s)
        self.tolerance_ns = int(round(tolerance_s * 1e9))
        self.label_map, self.metric = _label_map(classes, classes_yaml)
        self._stamps = np.zeros(0, np.int64)
        self.matched: set[int] = set()

    def _set_stamps(self, stamps) -> None:
        self._stamps = np.asarray(sorted(stamps), np.int64)

    def __len__(self) -> int:
        return int(self._stamps.size)

    def _nearest(self, stamp_ns: int) -> tuple[int, int] | None:
        """(distance ns, label stamp) of the label nearest to ``stamp_ns``; None without labels."""
        if self._stamps.size == 0:
            return None
        i = int(np.searchsorted(self._stamps, stamp_ns))
        best = None
        for j in (i - 1, i):
            if 0 <= j < self._stamps.size:
                d = abs(int(self._stamps[j]) - stamp_ns)
                if best is None or d < best[0]:
                    best = (d, int(self._stamps[j]))
        return best

    def distance_ns(self, stamp_ns: int) -> int | None:
        """How far the nearest label is from ``stamp_ns`` (no match is recorded)."""
        best = self._nearest(stamp_ns)
        return None if best is None else best[0]

    def match(self, stamp_ns: int) -> int | None:
        best = self._nearest(stamp_ns)
        if best is None or best[0] > self.tolerance_ns:
            return None
        self.matched.add(best[1])
        return best[1]

    def load(self, key: int) -> tuple[np.ndarray, np.ndarray, str]:
        """(raw label as stored, class ids int64 with IGNORE_INDEX, name for messages)."""
        raw, name = self._raw(key)
        return raw, self.label_map.apply(raw, source=name), name

    def _raw(self, key: int) -> tuple[np.ndarray, str]:
        raise NotImplementedError


class FolderLabels(LabelSource):
    def __init__(self, folder: str | Path, classes: ClassInfo, tolerance_s: float = 0.001) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise MissingInputError(f"label folder not found: {folder}")
        label_dir = folder / "labels" if (folder / "labels").is_dir() else folder
        classes_yaml = next(
            (p for p in (folder / "classes.yaml", label_dir.parent / "classes.yaml") if p.is_file()), None
        )
        super().__init__(classes, tolerance_s, classes_yaml)
        files = index_by_stem(label_dir, (".png",))
        self._files: dict[int, Path] = {}
        self.unnamed: list[str] = []
        for stem, path in files.items():
            stamp = stamp_from_id(stem)
            if stamp is None:
                self.unnamed.append(path.name)
            else:
                self._files[stamp] = path
        if not self._files:
            raise BagError(
                f"{label_dir}: no label PNG named by stamp (<sec>_<nanosec>.png, as `taseg bag extract` names "
                f"frames){'; found ' + ', '.join(sorted(self.unnamed)[:3]) if self.unnamed else ''}"
            )
        self._set_stamps(self._files)
        self.description = str(label_dir)

    def _raw(self, key: int) -> tuple[np.ndarray, str]:
        path = self._files[key]
        return read_label(path), str(path)


class TopicLabels(LabelSource):
    """Labels from a topic of the recording, read once up front (kept PNG-compressed in memory)
    because a label may be recorded after the frames it belongs to."""

    def __init__(self, bag: Bag, topic: str, classes: ClassInfo, tolerance_s: float = 0.001) -> None:
        super().__init__(classes, tolerance_s)
        summary = bag.image_topic(topic, "--label-topic")
        self.topic = summary.name
        self._png: dict[int, bytes] = {}
        for message in bag.messages([self.topic]):
            msg = bag.deserialize(message)
            stamp = stamp_to_ns(msg.header.stamp)
            label = self._decode(msg, message.msgtype, stamp)
            ok, buffer = cv2.imencode(".png", label)
            if not ok:  # pragma: no cover - PNG encodes any uint8/uint16 image
                raise BagError(f"{self.topic}: cannot buffer the label at {stamp}")
            self._png[stamp] = buffer.tobytes()
        self._set_stamps(self._png)
        self.description = f"topic {self.topic}"

    def _decode(self, msg, msgtype: str, stamp: int) -> np.ndarray:
        where = f"--label-topic {self.topic} (stamp {stamp * 1e-9:.6f} s)"
        try:
            if msgtype == COMPRESSED_IMAGE:
                label = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_UNCHANGED)
                if label is None or label.ndim != 2:
                    raise BagError(f"{where}: a compressed label must be a single-channel PNG")
                return label
            assert msgtype == IMAGE
            return image_to_array(msg, LABEL_ENCODINGS)
        except ImageDecodeError as exc:
            raise BagError(f"{where}: {exc}; labels must be class ids (mono8/mono16)") from exc

    def _raw(self, key: int) -> tuple[np.ndarray, str]:
        label = cv2.imdecode(np.frombuffer(self._png[key], np.uint8), cv2.IMREAD_UNCHANGED)
        return label, f"{self.topic} @ {key * 1e-9:.6f} s"
