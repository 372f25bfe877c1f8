"""A private ROS 2 client for the tools that talk to a running node over DDS: ``taseg bag replay`` (and
through it the demo), the ROS bench and the tests. One home for the plumbing they share: an rclpy
context of their own (so they never touch a global one or the user's signal handlers), a node, a
single-threaded executor spinning on a thread, publishers and subscriptions by message type name,
serialisation, and the "is ROS there?" probe with one message.

Messages are named by their ROS type name (``sensor_msgs/msg/Image``), as the rosbag tools name
them, so callers need no rclpy import of their own.
"""
from __future__ import annotations

import importlib
import threading
import time
from typing import Any, Callable

from taseg_ros.errors import MissingInputError

def ros_missing() -> str | None:
    """None when the ROS 2 Python packages import, else the reason, worded for the user."""
    try:
        import rclpy  # noqa: F401
        import sensor_msgs.msg  # noqa: F401
    except ImportError as exc:
        return (f"the ROS 2 Python packages are not importable ({exc.name or exc} is missing): source your ROS 2 "
                "installation (source /opt/ros/<distro>/setup.bash) or run scripts/setup.sh / "
                "`pip install taseg_ros[ros]`")
    return None


def require_ros(what: str) -> None:
    """Raise a one-line error naming ``what`` needs ROS 2 when its Python packages are missing."""
    missing = ros_missing()
    if missing:
        raise MissingInputError(f"{what} needs ROS 2: {missing}")


def message_class(type_name: str) -> type:
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def qos(kind: str = "reliable", depth: int = 10):
    """A QoS profile of ros/qos.py's table: ``reliable`` / ``best_effort`` / ``sensor_data`` (keep last
    ``depth``) or ``latched`` (transient local)."""
    from taseg_ros.ros import qos as profiles  # rclpy: only once ROS is known to be there

    return profiles.latched_qos() if kind == "latched" else profiles.profile(kind, depth)


def serialize(msg: Any) -> bytes:
    from rclpy.serialization import serialize_message

    return serialize_message(msg)


def deserialize(data: bytes, type_name: str) -> Any:
    from rclpy.serialization import deserialize_message

    return deserialize_message(data, message_class(type_name))


def wait_for(predicate: Callable[[], bool], timeout_s: float, stop: Callable[[], bool] = lambda: False) -> bool:
    """Poll ``predicate`` until it holds (True), ``stop()`` (False) or the deadline (its last value)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if stop():
            return False
        time.sleep(0.02)
    return predicate()


class ToolNode:
    """An rclpy node in a context of its own, spun by a single-threaded executor on a thread.

    Single-threaded on purpose: rclpy's MultiThreadedExecutor busy-loops on tasks its pool has not
    started yet (ros2/rclpy#1452) and would take CPU from the node being measured. ``add_node`` puts
    another node (the ROS bench's TASegNode) on the same executor before ``start``."""

    def __init__(self, name: str, namespace: str = "", domain_id: int | None = None) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, namespace=namespace or None, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._extra_nodes: list[Any] = []
        self._spinner: threading.Thread | None = None

    def add_node(self, node: Any) -> None:
        self.executor.add_node(node)
        self._extra_nodes.append(node)

    def start(self) -> None:
        self._spinner = threading.Thread(target=spin_resiliently, args=(self.executor,), name=f"{self.node.get_name()}_spin",
                                         daemon=True)
        self._spinner.start()

    def publisher(self, topic: str, type_name: str, kind: str = "reliable", depth: int = 10):
        return self.node.create_publisher(message_class(type_name), topic, qos(kind, depth))

    def subscribe(self, topic: str, type_name: str, callback: Callable[[Any], None], kind: str = "reliable",
                  depth: int = 10):
        return self.node.create_subscription(message_class(type_name), topic, callback, qos(kind, depth))

    def publisher_count(self, topic: str) -> int:
        return self.node.count_publishers(topic)

    def offered_best_effort(self, topic: str) -> bool:
        """Whether a publisher of ``topic`` offers best effort only (a reliable subscription would hear nothing)."""
        from rclpy.qos import ReliabilityPolicy

        return any(info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
                   for info in self.node.get_publishers_info_by_topic(topic))

    def now(self):
        """The node's clock now, as a builtin_interfaces/Time message (for header stamps)."""
        return self.node.get_clock().now().to_msg()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=5)
        for node in [*self._extra_nodes, self.node]:
            node.destroy_node()
        # The context's shutdown ends the spinner's loop (an executor's shutdown alone does not: the
        # join waited its full timeout) and the DDS participant with its threads and shared-memory ports;
        # destroy() then frees the context at once rather than at garbage collection.
        rclpy.try_shutdown(context=self.context)
        if self._spinner is not None:
            self._spinner.join(timeout=10)
        self.context.destroy()


def spin_resiliently(executor: Any) -> None:
    """``executor.spin()`` for a background thread while other threads create and destroy
    entities (tests and tools that drive lifecycle transitions from outside the executor).

    rclpy raises InvalidHandle in the spinning thread when a subscription or publisher is
    destroyed while that thread builds its wait set, which ends ``spin()`` for good; the next
    wait set no longer holds the destroyed entity, so this loop simply carries on.
    """
    from rclpy.exceptions import InvalidHandle
    from rclpy.executors import ExternalShutdownException, ShutdownException

    while executor.context.ok():
        try:
            executor.spin_once(timeout_sec=0.1)
        except InvalidHandle:
            time.sleep(0.01)  # never a busy loop holding the GIL if rclpy keeps raising
            continue
        except (ShutdownException, ExternalShutdownException):
            return
        except Exception:  # noqa: BLE001 - rclpy raises RCLError when the context shuts down mid-wait
            if executor.context.ok():
                raise
            return
