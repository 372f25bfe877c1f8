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
from typing import Any, Callable

from taseg_ros.bag.io.msgtypes import COMPRESSED_IMAGE, DIAGNOSTIC_ARRAY, IMAGE, STRING
from taseg_ros.bag.pairs import PairSource
from taseg_ros.bag.io.reader import BagError, open_bag
from taseg_ros.bag.io.stop import stop_on_sigint
from taseg_ros.bag.io.topics import resolve_image_topics
from taseg_ros.bag.io.writer import BagWriter
from taseg_ros.errors import InputError
from taseg_ros.formatting import fixed
from taseg_ros.errors import safe_lines
from taseg_ros.frames.render import OUTPUTS
from taseg_ros.ros.client import ToolNode, deserialize, require_ros, serialize, wait_for
from taseg_ros.ros.names import check_namespace
from taseg_ros.frames.pairing import NS_PER_S, StampPairer, stamp_to_ns
from taseg_ros.timing import summarize_ms



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


@dataclass(frozen=True)
class ReplaySettings:
    """Everything `taseg bag replay` is asked to do, checked once (before a recording is opened)."""

    source: PairSource
    rate: float = 1.0  # playback speed; 1.0 = as recorded
    node: str = "/taseg"  # fully qualified name of the node whose outputs are recorded
    publish_rgb_topic: str | None = None  # None: the recorded topic name
    publish_thermal_topic: str | None = None
    wait_s: float = 30.0  # for the node's subscriptions and publishers
    drain_s: float = 3.0  # after the last message, stop once no output came for this long
    restamp: bool = True  # shift the recorded stamps to now, as a live camera
    domain_id: int | None = None  # ROS_DOMAIN_ID of our own DDS participant; None: the environment's

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise InputError(f"--rate must be > 0, got {self.rate}")
        if not check_namespace(self.node, "--node"):
            raise InputError(f"--node {self.node!r}: give the node's fully qualified name, e.g. /taseg")
        object.__setattr__(self, "node", check_namespace(self.node, "--node"))


def replay_bag(settings: ReplaySettings, output_bag: str | Path | None = None, handle_sigint: bool = False) -> ReplayResult:
    """Publish ``settings.source``'s camera topics to a running node, record its outputs into
    ``output_bag`` (None: measure only) and measure; see the module docstring."""
    require_ros("taseg bag replay")
    source = settings.source
    sigint = stop_on_sigint("stopping the replay (Ctrl-C again to abort)") if handle_sigint else nullcontext(None)
    with open_bag(source.bag) as bag, sigint as stop_flag:
        rgb, thermal = resolve_image_topics(bag, source.rgb_topic, source.thermal_topic)
        replay = _Replay(bag, rgb, thermal, settings,
                         stop=(lambda: bool(stop_flag)) if stop_flag is not None else (lambda: False))
        return replay.run(output_bag, settings.domain_id)


class _OutputRecorder:
    """What the node publishes: stamps and receive times of its image outputs (for the measurement),
    its latest diagnostics status, and everything into the output recording. DDS callbacks run on
    the executor thread, the replay loop reads the stamps: one lock."""

    def __init__(self, node_name: str, writer: BagWriter | None) -> None:
        self.node_name = node_name
        self.writer = writer
        self.lock = threading.Lock()
        self.outputs: dict[str, list[tuple[int, int, int]]] = {name: [] for name in OUTPUTS}  # (stamp, mono, wall)
        self.last_output_mono = 0
        self.diagnostics: dict = {}

    def write(self, topic: str, msgtype: str, wall_ns: int, msg: Any) -> None:
        if self.writer is not None:
            self.writer.write_raw(topic, msgtype, wall_ns, serialize(msg))

    def image_callback(self, name: str) -> Callable[[Any], None]:
        topic = f"{self.node_name}/{name}"

        def callback(msg) -> None:
            mono, wall = time.monotonic_ns(), time.time_ns()
            with self.lock:
                self.outputs[name].append((stamp_to_ns(msg.header.stamp), mono, wall))
                self.last_output_mono = mono
            self.write(topic, IMAGE, wall, msg)

        return callback

    def on_class_info(self, msg) -> None:
        self.write(f"{self.node_name}/class_info", STRING, time.time_ns(), msg)

    def on_diagnostics(self, msg) -> None:
        mine = [s for s in msg.status if s.name.startswith(f"{self.node_name}:")]
        if mine:
            self.diagnostics.clear()
            self.diagnostics.update({kv.key: kv.value for kv in mine[-1].values})
            self.diagnostics["message"] = mine[-1].message
            self.write("/diagnostics", DIAGNOSTIC_ARRAY, time.time_ns(), msg)

    def answered(self, stamps) -> int:
        with self.lock:
            return len({s for s, _, _ in self.outputs["labels"]} & stamps)

    def quiet_since(self, end_mono: int) -> int:
        with self.lock:
            return max(self.last_output_mono, end_mono)


class _Replay:
    """One replay, in named steps: start a ROS node of our own, wait until the taseg node is there and
    subscribe to its outputs, publish the recording at its rate, wait for the last outputs, measure."""

    def __init__(self, bag, rgb, thermal, settings: ReplaySettings, stop: Callable[[], bool]) -> None:
        self.bag, self.rgb, self.thermal = bag, rgb, thermal
        self.node_name = settings.node
        self.labels_topic = f"{settings.node}/labels"
        out_rgb, out_thermal = settings.publish_rgb_topic or rgb.name, settings.publish_thermal_topic or thermal.name
        self.published_topic = {rgb.name: out_rgb, thermal.name: out_thermal}
        self.rate, self.slop_s, self.restamp = settings.rate, settings.source.slop_s, settings.restamp
        self.max_pairs = settings.source.max_pairs
        self.wait_s, self.drain_s = settings.wait_s, settings.drain_s
        self.stop = stop
        self.result = ReplayResult(str(bag.path), settings.node, settings.rate, out_rgb, out_thermal)
        self.pair_done_mono: dict[int, int] = {}  # RGB stamp of an expected pair -> when it was complete
        self.end_mono = 0

    def run(self, output_bag: str | Path | None, domain_id: int | None) -> ReplayResult:
        writer = BagWriter(output_bag, storage="mcap") if output_bag is not None else None
        self.recorder = _OutputRecorder(self.node_name, writer)
        try:
            self._start_ros(domain_id)
            try:
                if not self._connect():
                    self.result.interrupted = True
                    return self.result
                self._play()
                self._drain()
                if self.stop():
                    self.result.interrupted = True
            finally:
                self._stop_ros()
        finally:
            if writer is not None:
                writer.close()
        self._measure(writer)
        return self.result

    # --- ROS -------------------------------------------------------------------------------------

    def _start_ros(self, domain_id: int | None) -> None:
        self.ros = ToolNode(f"taseg_bag_replay_{os.getpid()}", domain_id=domain_id)
        self.ros.start()
        self.publishers = {
            topic.name: self.ros.publisher(self.published_topic[topic.name], topic.msgtype)
            for topic in (self.rgb, self.thermal)
        }

    def _stop_ros(self) -> None:
        self.ros.close()

    def _no_node(self) -> BagError:
        return BagError(
            _no_node_message(
                self.node_name,
                self.labels_topic,
                self.result.rgb_topic,
                self.result.thermal_topic,
                self.rgb,
                self.thermal,
                self.wait_s,
            )
        )

    def _connect(self) -> bool:
        """Wait for the node's outputs, subscribe to them and wait until the node hears our inputs, so
        no frame is lost to discovery. False when Ctrl-C came first; a BagError when no node came."""
        deadline = time.monotonic() + self.wait_s
        if not wait_for(lambda: self.ros.publisher_count(self.labels_topic) > 0, deadline - time.monotonic(), self.stop):
            raise self._no_node()
        # Match the node's output reliability: a reliable subscription cannot hear a best-effort publisher.
        kind = "best_effort" if self.ros.offered_best_effort(self.labels_topic) else "reliable"
        recorder = self.recorder
        self.subscriptions = [
            self.ros.subscribe(f"{self.node_name}/{name}", IMAGE, recorder.image_callback(name), kind, depth=50)
            for name in OUTPUTS
        ]
        self.subscriptions.append(
            self.ros.subscribe(f"{self.node_name}/class_info", STRING, recorder.on_class_info, "latched")
        )
        self.subscriptions.append(self.ros.subscribe("/diagnostics", DIAGNOSTIC_ARRAY, recorder.on_diagnostics))
        ready = wait_for(
            lambda: all(p.get_subscription_count() > 0 for p in self.publishers.values())
            and self.subscriptions[0].get_publisher_count() > 0,
            deadline - time.monotonic(),
            self.stop,
        )
        if not ready and not self.stop():
            raise self._no_node()
        return ready

    # --- playing ---------------------------------------------------------------------------------

    def _play(self) -> None:
        """Publish the camera messages at their recorded times / rate, restamped, and pair their stamps
        as the node will."""
        pairer = StampPairer(self.slop_s)
        published = {topic: 0 for topic in self.published_topic.values()}
        shift_ns = None
        first_log = None
        start_mono = time.monotonic_ns()
        for message in self.bag.messages([self.rgb.name, self.thermal.name]):
            if self.stop():
                self.result.interrupted = True
                break
            if first_log is None:
                first_log = message.log_time_ns
                shift_ns = time.time_ns() - message.log_time_ns if self.restamp else 0
            delay = (start_mono + int((message.log_time_ns - first_log) / self.rate) - time.monotonic_ns()) * 1e-9
            if delay > 0:
                time.sleep(delay)
            msg = deserialize(bytes(message.data), message.msgtype)
            stamp = stamp_to_ns(msg.header.stamp)
            if stamp > 0 and shift_ns:
                stamp += shift_ns
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, NS_PER_S)
            topic = self.published_topic[message.topic]
            self.publishers[message.topic].publish(msg)
            now_mono = time.monotonic_ns()
            published[topic] += 1
            self.recorder.write(topic, message.msgtype, time.time_ns(), msg)
            pair = pairer.add_rgb(stamp, None) if message.topic == self.rgb.name else pairer.add_thermal(stamp, None)
            if pair is not None:
                self.pair_done_mono[pair.rgb_stamp_ns] = now_mono
                if self.max_pairs is not None and len(self.pair_done_mono) >= self.max_pairs:
                    break
        self.end_mono = time.monotonic_ns()
        self.result.playback_s = (self.end_mono - start_mono) * 1e-9
        self.result.published = published
        self.result.expected_pairs = len(self.pair_done_mono)

    def _drain(self) -> None:
        """Wait until every pair is answered, or no output came for drain_s."""
        expected = self.pair_done_mono.keys()
        while not self.stop() and self.recorder.answered(expected) < len(expected):
            if time.monotonic_ns() - self.recorder.quiet_since(self.end_mono) > self.drain_s * 1e9:
                break
            time.sleep(0.02)

    # --- measuring -------------------------------------------------------------------------------

    def _measure(self, writer: BagWriter | None) -> None:
        result, recorder, pair_done_mono = self.result, self.recorder, self.pair_done_mono
        with recorder.lock:
            labels = list(recorder.outputs["labels"])
            result.received = {f"{self.node_name}/{k}": len(v) for k, v in recorder.outputs.items() if v}
        first_answer: dict[int, tuple[int, int]] = {}
        for stamp, mono, wall in labels:
            first_answer.setdefault(stamp, (mono, wall))
        answered_stamps = first_answer.keys() & pair_done_mono.keys()
        result.answered_pairs = len(answered_stamps)
        result.unexpected_outputs = len(first_answer.keys() - pair_done_mono.keys())
        result.latency_from_pair_ms = summarize_ms(
            (first_answer[s][0] - pair_done_mono[s]) * 1e-9 for s in answered_stamps
        )
        if self.restamp and self.rate == 1.0:
            result.latency_from_stamp_ms = summarize_ms((first_answer[s][1] - s) * 1e-9 for s in answered_stamps)
        result.node_diagnostics = dict(recorder.diagnostics)
        if writer is not None:
            result.output_bag = str(writer.path)
            result.output_topics = dict(writer.counts)
        if result.unexpected_outputs:
            result.notes.append(
                f"{result.unexpected_outputs} outputs carry stamps of no pair replay expected (the node paired "
                "frames differently, e.g. another slop); check the node's `slop` parameter"
            )


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
        return fixed(d.get(key) if d else None)

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
    return safe_lines(lines)  # the recording's topic names
