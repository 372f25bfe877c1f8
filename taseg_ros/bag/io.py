"""Temporary re-exports for bag/evaluate.py while it is being rewritten; the homes are
msgtypes, reader, topics, messages, writer and stop. Removed once evaluate.py imports them."""

from taseg_ros.bag.messages import compressed_message, image_message, make_header, string_message  # noqa: F401
from taseg_ros.bag.msgtypes import (  # noqa: F401
    COMPRESSED_IMAGE, IMAGE, IMAGE_TYPES, STRING, default_typestore, typestore,
)
from taseg_ros.bag.reader import Bag, BagError, RawMessage, TopicSummary, format_topics, open_bag  # noqa: F401
from taseg_ros.bag.stop import StopRequest, stop_on_sigint  # noqa: F401
from taseg_ros.bag.topics import resolve_image_topics  # noqa: F401
from taseg_ros.bag.writer import STORAGES, BagWriter  # noqa: F401
