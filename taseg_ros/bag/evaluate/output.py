"""The output recording of `taseg bag eval`: the input topics as recorded, and what the node would have
published for each pair (``<ns>/labels``, ``colorized``, ``overlay``, ``class_info``), plus the ground
truth of labelled pairs (``<ns>/ground_truth``, ``<ns>/ground_truth/colorized``), for RViz / Foxglove.

The label-free figures come beside them: ``<ns>/confidence`` (32FC1, the chosen class's probability,
as the node's ``~/confidence``: Foxglove's Image panel and RViz show it with a colour map over a
value range, and the values stay probabilities), and one ``std_msgs/Float32`` topic per figure,
``<ns>/quality/<figure>`` (e.g. ``/taseg/quality/mean_confidence``: Foxglove's Plot panel plots
``.data`` by name), plus ``<ns>/quality/class_shares`` (Float32MultiArray, one value per class id in
``class_info`` order)."""

from __future__ import annotations

import heapq
import json
from typing import Any

import numpy as np

from taseg_ros.bag.io.messages import float32_array_message, float32_message, image_message, string_message
from taseg_ros.bag.io.msgtypes import FLOAT32, FLOAT32_ARRAY, IMAGE, STRING
from taseg_ros.bag.io.reader import RawMessage
from taseg_ros.bag.io.writer import BagWriter
from taseg_ros.frames.render import IMAGE_OUTPUTS, OUTPUTS, colorize


class _OrderedWriter:
    """Writes to a BagWriter in log-time order although outputs are produced later than the inputs
    they belong to (realtime mode stamps them with their simulated publish time)."""

    def __init__(self, writer: BagWriter) -> None:
        self.writer = writer
        self._heap: list[tuple[int, int, str, str, Any, bool]] = []
        self._seq = 0

    def put(self, log_ns: int, topic: str, msgtype: str, payload: Any, raw: bool = False) -> None:
        heapq.heappush(self._heap, (int(log_ns), self._seq, topic, msgtype, payload, raw))
        self._seq += 1

    def flush(self, until_ns: int | None = None) -> None:
        while self._heap and (until_ns is None or self._heap[0][0] <= until_ns):
            log_ns, _, topic, msgtype, payload, raw = heapq.heappop(self._heap)
            if raw:
                self.writer.write_raw(topic, msgtype, log_ns, payload)
            else:
                self.writer.write(topic, msgtype, log_ns, payload)


class EvalRecording:
    """The output recording (``path`` None: nothing is written, every call is a no-op)."""

    def __init__(self, path, namespace: str, class_info) -> None:
        self.writer = BagWriter(path, storage="mcap") if path is not None else None
        self._out = _OrderedWriter(self.writer) if self.writer is not None else None
        self.class_info = class_info
        self.topics = {
            name: f"{namespace}/{name}" for name in (*IMAGE_OUTPUTS, "class_info", "ground_truth")
        }
        self.topics["ground_truth_colorized"] = f"{namespace}/ground_truth/colorized"
        self.topics["confidence"] = f"{namespace}/confidence"
        self.namespace = namespace

    def _image(self, publish_ns: int, topic: str, stamp: int, frame_id: str, array: np.ndarray, encoding: str):
        self._out.put(publish_ns, self.topics[topic], IMAGE, image_message(stamp, frame_id, array, encoding))

    def put_class_info(self, log_ns: int) -> None:
        if self._out is not None:
            text = json.dumps(self.class_info.to_mapping())
            self._out.put(log_ns, self.topics["class_info"], STRING, string_message(text))

    def copy(self, message: RawMessage) -> None:
        """An input message, as recorded."""
        if self._out is not None:
            self._out.put(message.log_time_ns, message.topic, message.msgtype, message.data, raw=True)

    def put_prediction(self, publish_ns: int, stamp: int, frame_id: str, outputs: dict) -> None:
        """The node's outputs for one pair, with the RGB frame's header, at the time it would publish them."""
        if self._out is None:
            return
        for name in IMAGE_OUTPUTS:  # the node's image outputs (confidence: put_quality)
            self._image(publish_ns, name, stamp, frame_id, outputs[name], OUTPUTS[name])

    def put_quality(self, publish_ns: int, stamp: int, frame_id: str, confidence: np.ndarray, quality) -> None:
        """The confidence image and the frame's label-free figures (``evaluation.quality.FrameQuality``);
        a figure not computed for this frame (e.g. the first frame's flicker) is not written."""
        if self._out is None:
            return
        self._image(publish_ns, "confidence", stamp, frame_id, confidence.astype(np.float32, copy=False),
                    OUTPUTS["confidence"])
        for name, value in quality.to_dict().items():
            if isinstance(value, float):
                self._out.put(publish_ns, f"{self.namespace}/quality/{name}", FLOAT32, float32_message(value))
        if quality.class_shares is not None:
            self._out.put(publish_ns, f"{self.namespace}/quality/class_shares", FLOAT32_ARRAY,
                          float32_array_message(quality.class_shares, "class"))

    def put_ground_truth(self, publish_ns: int, stamp: int, frame_id: str, raw: np.ndarray, ids: np.ndarray) -> None:
        """A label as stored (mono8, or mono16 for ids above 255) and coloured (ignored pixels black)."""
        if self._out is None:
            return
        stored = raw.astype(np.uint8) if raw.max(initial=0) <= 255 else raw.astype(np.uint16)
        encoding = "mono8" if stored.dtype == np.uint8 else "mono16"
        self._image(publish_ns, "ground_truth", stamp, frame_id, stored, encoding)
        colour = colorize(ids, self.class_info.palette)
        self._image(publish_ns, "ground_truth_colorized", stamp, frame_id, colour, "rgb8")

    def flush(self, until_ns: int | None = None) -> None:
        if self._out is not None:
            self._out.flush(until_ns)

    def close(self) -> None:
        """Write what is pending and finish the recording (also after an error or Ctrl-C)."""
        try:
            self.flush()
        finally:
            if self.writer is not None:
                self.writer.close()
