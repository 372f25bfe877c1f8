"""`taseg bag replay`: play a recording into a running ``taseg_node`` over DDS and measure it.

    taseg_node --ros-args -p checkpoint:=model.safetensors \\
        -r rgb/image:=/camera/color/image_raw -r thermal/image:=/thermal/image_raw &
    taseg bag replay run1 --rate 1.0

The RGB and thermal messages are published (rclpy, reliable QoS, which also serves best-effort
subscribers) at their recorded times scaled by ``rate``, on the recorded topic names unless
``publish_*_topic`` says otherwise. Header stamps are shifted so the recording starts now, keeping
the stamp differences between the cameras exactly (``restamp=False`` publishes the recorded stamps).

Before publishing, replay waits (up to ``wait_s``) until something subscribes to both inputs and the
node's ``<node>/labels`` publisher is matched, so no frame is lost to discovery. Everything the node
publishes (``labels``, ``colorized``, ``overlay``, ``confidence``, ``class_info``, its
``/diagnostics`` status) and everything replay publishes goes into the output recording (mcap) with
receive / publish wall-clock log times.

Measured: the pairs the node should make (the node's ``StampPairer`` run on the published stamps in
publish order), the label outputs received for them, the share of those pairs without an output
(dropped by the node: newest-pair-wins, or lost on the way), and the end-to-end latency from the
moment a pair was complete (its later frame published) to its label output arriving here; at
``rate`` 1 with restamping also output time minus RGB stamp, as the node's diagnostics define it.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from taseg_ros.bag.io import (
    COMPRESSED_IMAGE,
    IMAGE,
    BagError,
    BagWriter,
    open_bag,
    resolve_image_topics,
    stop_on_sigint,
)
from taseg_ros.bag.pairs import summarize
from taseg_ros.ros.pairing import StampPairer

OUTPUTS = ("labels", "colorized", "overlay", "confidence")


@dataclass
class ReplayResult:
    bag: str
    node: str
    rate: float
    rgb_topic: str
    thermal_topic: str
    published: dict = field(default_factory=dict)  # topic -> count
    expected_pairs: int = 0
    received: dict = field(default_factory=dict)  # output topic -> count
    answered_pairs: int = 0  # expected pairs with a labels output
    unexpected_outputs: int = 0  # label outputs whose stamp is no expected pair
    latency_from_pair_ms: dict = field(default_factory=dict)
    latency_from_stamp_ms: dict = field(default_factory=dict)
    playback_s: float = 0.0
    node_diagnostics: dict = field(default_factory=dict)
    output_bag: str | None = None
    output_topics: dict = field(default_factory=dict)
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return self.expected_pairs - self.answered_pairs

    @property
    def dropped_share(self) -> float | None:
        return self.dropped / self.expected_pairs if self.expected_pairs else None

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["dropped"] = self.dropped
        data["dropped_share"] = self.dropped_share
        return data


def _ros_imports():
    try:
        import rclpy  # noqa: F401
        from sensor_msgs.msg import CompressedImage, Image  # noqa: F401
    except ImportError as exc:
        raise BagError(
            f"bag replay needs ROS 2 Python packages ({exc.name} is missing): source your ROS 2 installation "
            "(source /opt/ros/<distro>/setup.bash) or `pip install taseg_ros[ros]`"
        ) from exc


def _wait(predicate, deadline: float, stop) -> bool:
    while time.monotonic() < deadline:
        if predicate():
            return True
        if stop():
            return False
        time.sleep(0.02)
    return predicate()


def replay_bag(
    bag_path: str | Path,
    *,
    rgb_topic: str | None = None,
    thermal_topic: str | None = None,
    slop_s: float = 0.02,
    rate: float = 1.0,
    node: str = "/taseg",
    publish_rgb_topic: str | None = None,
    publish_thermal_topic: str | None = None,
    output_bag: str | Path | None = None,
    wait_s: float = 30.0,
    drain_s: float = 3.0,
    restamp: bool = True,
    max_pairs: int | None = None,
    domain_id: int | None = None,
    handle_sigint: bool = False,
) -> ReplayResult:
    _ros_imports()
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message, serialize_message
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import String

    if not rate > 0:
        raise ValueError(f"--rate must be > 0, got {rate}")
    node_name = "/" + node.strip("/")
    classes = {IMAGE: Image, COMPRESSED_IMAGE: CompressedImage}
    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )

    sigint = stop_on_sigint("stopping the replay (Ctrl-C again to abort)") if handle_sigint else nullcontext(None)
    with open_bag(bag_path) as bag, sigint as stop_flag:
        stop = (lambda: bool(stop_flag)) if stop_flag is not None else (lambda: False)
        rgb, thermal = resolve_image_topics(bag, rgb_topic, thermal_topic)
        out_rgb = publish_rgb_topic or rgb.name
        out_thermal = publish_thermal_topic or thermal.name
        result = ReplayResult(str(bag.path), node_name, rate, out_rgb, out_thermal)

        context = rclpy.Context()
        rclpy.init(context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        ros = rclpy.create_node(f"taseg_bag_replay_{os.getpid()}", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(ros)
        spinner = threading.Thread(target=executor.spin, name="taseg_bag_replay_spin", daemon=True)
        writer = BagWriter(output_bag, storage="mcap") if output_bag is not None else None
        lock = threading.Lock()
        outputs: dict[str, list[tuple[int, int, int]]] = {name: [] for name in OUTPUTS}  # (stamp, mono ns, wall ns)
        last_output_mono = [0]
        diagnostics: dict = {}
        try:
            spinner.start()
            publishers = {
                rgb.name: ros.create_publisher(classes[rgb.msgtype], out_rgb, reliable),
                thermal.name: ros.create_publisher(classes[thermal.msgtype], out_thermal, reliable),
            }
            published_topic = {rgb.name: out_rgb, thermal.name: out_thermal}

            def recorder(name: str, topic: str, msgtype: str):
                def callback(msg):
                    mono, wall = time.monotonic_ns(), time.time_ns()
                    stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
                    with lock:
                        outputs[name].append((stamp, mono, wall))
                        last_output_mono[0] = mono
                    if writer is not None:
                        writer.write_raw(topic, msgtype, wall, serialize_message(msg))

                return callback

            def on_class_info(msg):
                if writer is not None:
                    writer.write_raw(
                        f"{node_name}/class_info", "std_msgs/msg/String", time.time_ns(), serialize_message(msg)
                    )

            def on_diagnostics(msg):
                mine = [s for s in msg.status if s.name.startswith(f"{node_name}:")]
                if mine:
                    diagnostics.clear()
                    diagnostics.update({kv.key: kv.value for kv in mine[-1].values})
                    diagnostics["message"] = mine[-1].message
                    if writer is not None:
                        writer.write_raw(
                            "/diagnostics",
                            "diagnostic_msgs/msg/DiagnosticArray",
                            time.time_ns(),
                            serialize_message(msg),
                        )

            labels_topic = f"{node_name}/labels"
            deadline = time.monotonic() + wait_s
            if not _wait(lambda: ros.count_publishers(labels_topic) > 0, deadline, stop):
                raise BagError(_no_node_message(node_name, labels_topic, out_rgb, out_thermal, rgb, thermal, wait_s))
            # Match the node's output reliability: a reliable subscription cannot hear a best-effort publisher.
            offered = ros.get_publishers_info_by_topic(labels_topic)
            best_effort = any(info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for info in offered)
            output_qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=50,
                reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
            )
            subscriptions = [
                ros.create_subscription(
                    Image, f"{node_name}/{name}", recorder(name, f"{node_name}/{name}", IMAGE), output_qos
                )
                for name in OUTPUTS
            ]
            subscriptions.append(ros.create_subscription(String, f"{node_name}/class_info", on_class_info, latched))
            subscriptions.append(ros.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10))
            ready = _wait(
                lambda: all(p.get_subscription_count() > 0 for p in publishers.values())
                and subscriptions[0].get_publisher_count() > 0,
                deadline,
                stop,
            )
            if not ready:
                if stop():
                    result.interrupted = True
                    return result
                raise BagError(_no_node_message(node_name, labels_topic, out_rgb, out_thermal, rgb, thermal, wait_s))

            pairer = StampPairer(slop_s)
            pair_done_mono: dict[int, int] = {}
            published = {out_rgb: 0, out_thermal: 0}
            shift_ns = None
            first_log = None
            start_mono = time.monotonic_ns()
            for message in bag.messages([rgb.name, thermal.name]):
                if stop():
                    result.interrupted = True
                    break
                if first_log is None:
                    first_log = message.log_time_ns
                    shift_ns = time.time_ns() - message.log_time_ns if restamp else 0
                target = start_mono + int((message.log_time_ns - first_log) / rate)
                delay = (target - time.monotonic_ns()) * 1e-9
                if delay > 0:
                    time.sleep(delay)
                msg = deserialize_message(bytes(message.data), classes[message.msgtype])
                stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
                if stamp > 0 and shift_ns:
                    stamp += shift_ns
                    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                topic = published_topic[message.topic]
                publishers[message.topic].publish(msg)
                now_mono = time.monotonic_ns()
                published[topic] += 1
                if writer is not None:
                    writer.write_raw(topic, message.msgtype, time.time_ns(), serialize_message(msg))
                pair = pairer.add_rgb(stamp, None) if message.topic == rgb.name else pairer.add_thermal(stamp, None)
                if pair is not None:
                    pair_done_mono[pair.rgb_stamp_ns] = now_mono
                    if max_pairs is not None and len(pair_done_mono) >= max_pairs:
                        break
            end_mono = time.monotonic_ns()
            result.playback_s = (end_mono - start_mono) * 1e-9
            result.published = published
            result.expected_pairs = len(pair_done_mono)

            def answered() -> int:
                with lock:
                    return len({s for s, _, _ in outputs["labels"]} & pair_done_mono.keys())

            # Drain: until every pair is answered, or no output came for drain_s.
            while not stop() and answered() < len(pair_done_mono):
                with lock:
                    quiet_since = max(last_output_mono[0], end_mono)
                if time.monotonic_ns() - quiet_since > drain_s * 1e9:
                    break
                time.sleep(0.02)
            if stop():
                result.interrupted = True
        finally:
            executor.shutdown(timeout_sec=5)
            spinner.join(timeout=10)
            ros.destroy_node()
            rclpy.try_shutdown(context=context)
            if writer is not None:
                writer.close()

    with lock:
        labels = list(outputs["labels"])
        result.received = {f"{node_name}/{k}": len(v) for k, v in outputs.items() if v}
    first_answer: dict[int, tuple[int, int]] = {}
    for stamp, mono, wall in labels:
        first_answer.setdefault(stamp, (mono, wall))
    answered_stamps = first_answer.keys() & pair_done_mono.keys()
    result.answered_pairs = len(answered_stamps)
    result.unexpected_outputs = len(first_answer.keys() - pair_done_mono.keys())
    result.latency_from_pair_ms = summarize((first_answer[s][0] - pair_done_mono[s]) * 1e-9 for s in answered_stamps)
    if restamp and rate == 1.0:
        result.latency_from_stamp_ms = summarize((first_answer[s][1] - s) * 1e-9 for s in answered_stamps)
    result.node_diagnostics = dict(diagnostics)
    if writer is not None:
        result.output_bag = str(writer.path)
        result.output_topics = dict(writer.counts)
    if result.unexpected_outputs:
        result.notes.append(
            f"{result.unexpected_outputs} outputs carry stamps of no pair replay expected (the node paired frames "
            "differently, e.g. another slop); check the node's `slop` parameter"
        )
    return result


def _no_node_message(node_name, labels_topic, out_rgb, out_thermal, rgb, thermal, wait_s) -> str:
    def remap(name: str, topic: str, summary) -> str:
        suffix = "/compressed" if summary.msgtype == COMPRESSED_IMAGE else ""
        return f"-r {name}{suffix}:={topic}"

    transport = []
    if rgb.msgtype == COMPRESSED_IMAGE:
        transport.append("-p rgb_transport:=compressed")
    if thermal.msgtype == COMPRESSED_IMAGE:
        transport.append("-p thermal_transport:=compressed")
    ns, _, name = node_name.rpartition("/")
    start = (
        f"taseg_node --ros-args -p checkpoint:=MODEL.safetensors {' '.join(transport)} "
        f"{remap('rgb/image', out_rgb, rgb)} {remap('thermal/image', out_thermal, thermal)}"
        + (f" -r __ns:={ns}" if ns else "")
        + (f" -r __node:={name}" if name != "taseg" else "")
    )
    return (
        f"no running node answered within {wait_s:g} s: need a publisher on {labels_topic} and subscribers on "
        f"{out_rgb} and {out_thermal}. Start the node first, e.g.: {' '.join(start.split())}"
    )


def format_replay(result: ReplayResult) -> str:
    def ms(d: dict, key: str) -> str:
        v = d.get(key) if d else None
        return "-" if v is None else f"{v:.1f}"

    lines = [
        f"replayed {result.bag} at {result.rate:g}x in {result.playback_s:.1f} s to {result.node}"
        + (" -- INTERRUPTED" if result.interrupted else ""),
        "  published: " + ", ".join(f"{t} {n}" for t, n in result.published.items()),
        f"  pairs expected {result.expected_pairs}, answered {result.answered_pairs}, dropped {result.dropped}"
        + (f" ({100 * result.dropped_share:.1f}%)" if result.dropped_share is not None else ""),
        f"  latency pair complete -> labels received: median {ms(result.latency_from_pair_ms, 'median')} ms, "
        f"p90 {ms(result.latency_from_pair_ms, 'p90')} ms, max {ms(result.latency_from_pair_ms, 'max')} ms",
    ]
    if result.latency_from_stamp_ms:
        lines.append(f"  latency RGB stamp -> labels received: median {ms(result.latency_from_stamp_ms, 'median')} ms")
    if result.received:
        lines.append("  received: " + ", ".join(f"{t} {n}" for t, n in result.received.items()))
    for note in result.notes:
        lines.append(f"  note: {note}")
    if result.output_bag:
        lines.append(f"  output recording: {result.output_bag}")
    return "\n".join(lines)
