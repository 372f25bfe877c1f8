"""The node's outputs as ROS topics: the images of ``frames.render.OUTPUTS`` raw and compressed, the
class list (``vision_msgs/LabelInfo`` and the JSON ``class_info``), and the per-frame timings.

Lifecycle publishers (``create_lifecycle_publisher``, as ros2/demos' lifecycle_py and yolo_ros use
them): made at configure, they publish only while the node is active, and go at cleanup. An image
nobody subscribes to (raw or compressed) is neither rendered nor encoded: ``wanted()`` tells the
pipeline which outputs to render, ``publish()`` builds only the subscribed messages.
"""
from __future__ import annotations

import json
from typing import Any

from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64, String

from taseg_ros.frames.render import OUTPUTS, confidence_image
from taseg_ros.inference.pipeline import FrameResult
from taseg_ros.ros.messages import compressed_message, image_message, label_info_message, vision_msgs_missing
from taseg_ros.ros.params import NodeParams
from taseg_ros.ros.qos import latched_qos, profile

# image_transport's names and formats: <output>/compressed, JPEG for the colour images, PNG
# (lossless) where every class id must survive.
COMPRESSED = {"labels": "png", "colorized": "jpeg", "overlay": "jpeg"}
# Autoware's per-node debug topics (std_msgs/Float64 here: tier4_debug_msgs is not a ROS 2 core package).
PROCESSING_TIME, PIPELINE_LATENCY = "debug/processing_time_ms", "debug/pipeline_latency_ms"
# The class list is complete: every pixel gets its most probable class, none is left out for low
# confidence, so LabelInfo's threshold is 0 (the confidence image tells how sure each pixel is).
LABEL_THRESHOLD = 0.0


class OutputPublishers:
    _said_no_vision_msgs = False  # once per process

    def __init__(self, node: Any, params: NodeParams) -> None:
        self.node = node
        qos = profile(params.output_qos, params.output_depth)
        names = [name for name in OUTPUTS if name != "confidence" or params.publish_confidence]
        self.raw = {name: node.create_lifecycle_publisher(Image, f"~/{name}", qos) for name in names}
        self.compressed = {name: node.create_lifecycle_publisher(CompressedImage, f"~/{name}/compressed", qos)
                           for name in COMPRESSED}
        self.timing = {name: node.create_lifecycle_publisher(Float64, f"~/{name}", qos)
                       for name in (PROCESSING_TIME, PIPELINE_LATENCY)}
        self.class_info = node.create_lifecycle_publisher(String, "~/class_info", latched_qos())
        self.label_info = None
        missing = vision_msgs_missing()
        if missing is None:
            from vision_msgs.msg import LabelInfo  # optional: a pip-only install may lack vision_msgs

            self.label_info = node.create_lifecycle_publisher(LabelInfo, "~/label_info", latched_qos())
        elif not OutputPublishers._said_no_vision_msgs:
            OutputPublishers._said_no_vision_msgs = True
            node.get_logger().warning(missing)

    def all(self) -> list[Any]:
        return [*self.raw.values(), *self.compressed.values(), *self.timing.values(), self.class_info,
                *([self.label_info] if self.label_info is not None else [])]

    def wanted(self) -> set[str]:
        """The rendered outputs (frames.render.RENDERED_OUTPUTS) somebody subscribes to, raw or compressed."""
        subscribed = {name for name, pub in (*self.raw.items(), *self.compressed.items()) if pub.get_subscription_count()}
        return subscribed - {"labels"}  # the labels are always computed

    def publish(self, header: Any, result: FrameResult, params: NodeParams) -> None:
        raw = [name for name, pub in self.raw.items() if pub.get_subscription_count()]
        compressed = [name for name, pub in self.compressed.items() if pub.get_subscription_count()]
        for name, msg in output_messages(header, result, params, raw, compressed):
            (self.compressed if name.endswith("/compressed") else self.raw)[name.removesuffix("/compressed")].publish(msg)

    def publish_timing(self, processing_s: float, latency_s: float) -> None:
        for name, seconds in ((PROCESSING_TIME, processing_s), (PIPELINE_LATENCY, latency_s)):
            if self.timing[name].get_subscription_count():
                self.timing[name].publish(Float64(data=seconds * 1e3))

    def publish_class_list(self, class_info: Any, header: Any) -> None:
        """The class list, on both latched topics (a late subscriber still gets it)."""
        self.class_info.publish(String(data=json.dumps(class_info.to_mapping())))
        if self.label_info is not None:
            self.label_info.publish(label_info_message(header, list(class_info.names), LABEL_THRESHOLD))

    def destroy(self) -> None:
        for pub in self.all():
            self.node.destroy_lifecycle_publisher(pub)


def output_messages(header: Any, result: FrameResult, params: NodeParams, raw: list[str],
                    compressed: list[str]) -> list[tuple[str, Any]]:
    """(topic name relative to the node, message) of the ``raw`` and ``compressed`` outputs of a frame
    (the ROS bench times the same work)."""
    out = []
    for name in raw:
        image, encoding = result.output(name), OUTPUTS[name]
        if name == "confidence":
            image, encoding = confidence_image(image, params.confidence_encoding), params.confidence_encoding
        out.append((name, image_message(header, image, encoding)))
    for name in compressed:
        msg = compressed_message(header, result.output(name), OUTPUTS[name], COMPRESSED[name], params.jpeg_quality)
        out.append((f"{name}/compressed", msg))
    return out
