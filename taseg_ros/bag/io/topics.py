"""Which image topics of a recording are the RGB and the thermal camera: as given (checked), or guessed."""

from __future__ import annotations

from typing import Any

from taseg_ros.bag.io.reader import Bag, BagError, TopicSummary, format_topics


class MissingStreamError(BagError):
    """The recording lacks a camera stream altogether (no image topic, or only one): no choice of
    topics can make pairs. ``reason`` is the message without the recording's path."""

    def __init__(self, path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason

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
    _check_two_streams(bag, images, rgb, thermal)
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


def _check_two_streams(bag: Bag, images: list[TopicSummary], rgb, thermal) -> None:
    """Say plainly when a camera stream is missing, instead of asking which topic is which."""
    given = [t for t in (rgb, thermal) if t is not None]
    streams = {t.name: t for t in [*given, *images]}
    if len(streams) >= 2:
        return
    if not streams:
        others = [t for t in bag.topics.values() if t.is_image]
        what = (
            "no camera image messages (image topics: "
            + ", ".join(f"{t.name} ({t.count} msgs)" for t in others)
            + ")"
            if others
            else "no image topics (sensor_msgs/Image or CompressedImage)"
        )
        raise MissingStreamError(
            bag.path,
            f"the recording has {what}: RGB-T segmentation needs an RGB and a thermal camera stream. "
            f"Topics: {format_topics(bag.topics.values())}",
        )
    (only,) = streams.values()
    if thermal is not None:
        missing = "an RGB"
    elif rgb is not None:
        missing = "a thermal"
    else:
        missing = "an RGB" if _looks_thermal(only.name, bag.first_message(only.name)) else "a thermal"
    raise MissingStreamError(
        bag.path,
        f"the recording has one camera image topic, {only.name} ({only.msgtype}, {only.count} msgs): "
        f"{missing} camera stream is missing, so there are no RGB/thermal pairs",
    )
