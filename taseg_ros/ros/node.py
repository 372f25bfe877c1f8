"""The TASeg ROS 2 node: synchronised RGB + thermal in, labels and overlays out.

    ros2 run taseg_ros taseg_node --ros-args -p checkpoint:=/path/model.safetensors \\
        -r rgb/image:=/camera/color/image_raw -r thermal/image:=/thermal/image_raw

A lifecycle node (``rclpy.lifecycle.LifecycleNode``):
  - configure: reads the parameters and loads the checkpoint (a bad value or file fails the
    transition with a message naming it; the node stays unconfigured, fixable with `ros2 param
    set`), creates the publishers;
  - activate: subscribes to the inputs, starts the inference thread (reloading the model if a
    deactivate released it) and publishes the class list (latched ``~/label_info`` and ``~/class_info``);
  - deactivate: unsubscribes, stops the inference thread and releases the model's memory;
  - cleanup / shutdown: also removes the publishers and the diagnostics timer.
With ``autostart`` (default true) ``main()`` configures and activates the node on start, so
``ros2 run`` behaves like a plain node; set it false under a lifecycle manager. Every parameter is
declared from its row in ``ros/params.NodeParams``: ``ros2 param describe`` explains it, the live
ones apply to the next frame, the others can be set while the node is unconfigured (a model swap:
deactivate -> cleanup -> set -> configure -> activate) and are refused, with the reason, otherwise.

Inputs (relative names, remap them): ``rgb/image`` and ``thermal/image`` (sensor_msgs/Image), or
``<name>/compressed`` (sensor_msgs/CompressedImage) with ``rgb_transport`` / ``thermal_transport``.
Outputs: ``ros/publishers.OutputPublishers`` (images raw and compressed, the class list, timings);
``/diagnostics`` from ``ros/health.NodeHealth``, which this node feeds.

Threading: subscription callbacks only validate the message header fields and pair frames by
stamp (``frames.pairing.StampPairer``); a complete pair goes into a newest-wins slot
(``frames.pairing.LatestSlot``). One worker thread takes pairs from the slot, decodes, runs the model
and publishes, so a slow model drops stale pairs (counted) instead of building a queue. With one
camera silent and ``input_fallback: blank``, the live stream's frames go to the slot alone.

The per-frame work is ``inference.pipeline.FramePipeline``'s, the same as ``taseg bag eval``'s.
"""
from __future__ import annotations

import functools
import time
import traceback
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.exceptions import InvalidHandle
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image

from taseg_ros.devices import resolve_device
from taseg_ros.errors import MissingInputError
from taseg_ros.frames.pairing import LatestSlot, Pair
from taseg_ros.inference import Segmenter
from taseg_ros.inference.pipeline import FramePipeline
from taseg_ros.ros.health import CHECK_WAIT_S, NodeHealth
from taseg_ros.ros.inputs import InferenceThread, InputPath
from taseg_ros.ros.messages import diagnostic_array, parameter_descriptor
from taseg_ros.ros.params import (LIVE_PARAMETERS, PARAMETERS, RGB_TOPIC, THERMAL_TOPIC, NodeParams, no_value,
                                  resolve_checkpoint)
from taseg_ros.ros.publishers import OutputPublishers
from taseg_ros.ros.qos import profile

NODE_NAME = "taseg"
LOAD_ERRORS = (ValueError, FileNotFoundError, OSError, RuntimeError)  # a bad file or setting: said, not raised


def _logged_transition(method):
    """rclpy turns an exception in a transition callback into ERROR without a word; log it."""
    @functools.wraps(method)
    def wrapper(self, state):
        try:
            return method(self, state)
        except Exception as exc:  # noqa: BLE001 - reported, then the lifecycle's error path runs
            self.get_logger().error(f"{method.__name__} raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            raise

    return wrapper


class TASegNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, default in NodeParams.defaults().items():
            self.declare_parameter(name, default if default != [] else None, parameter_descriptor(name))
            if default == [] and no_value(self.get_parameter(name).value):
                # An empty list has no ROS type, and a parameter without one is dumped as `null`, which
                # rcl reads back as the string 'null': give it the type, so `ros2 param dump` writes [].
                self.set_parameters([Parameter(name, Parameter.Type.DOUBLE_ARRAY, [])])
        self.params = NodeParams()
        self.health = NodeHealth(self.get_logger())
        self.configure_error: str | None = None  # why the last configure failed, for callers and tests
        self.segmenter = None
        self._pipeline: FramePipeline | None = None
        self._slot: LatestSlot[Pair] = LatestSlot()
        self._inputs: InputPath | None = None
        self._worker: InferenceThread | None = None
        self._active = self._configured = False
        self._outputs: OutputPublishers | None = None
        self._diag_pub = self._diag_timer = None
        self._subscriptions_in: list[Any] = []
        self._last_rgb: tuple[Any, tuple[int, int]] | None = None  # the last RGB header and size: a blank RGB frame's
        # Registered after the declarations above: rclpy runs these callbacks for declarations too.
        self.add_on_set_parameters_callback(self._check_parameter_change)
        self.add_post_set_parameters_callback(self._apply_parameter_change)

    # --- parameters --------------------------------------------------------------------------

    def read_params(self) -> NodeParams:
        params = NodeParams.from_parameters({name: self.get_parameter(name).value for name in NodeParams.names()})
        params.validate()
        return params

    def _check_parameter_change(self, parameters: list[Any]) -> SetParametersResult:
        """`ros2 param set` / `param load`, by NodeParams.refuse_change's rules (ROS itself refuses
        out-of-range numbers, from the descriptors)."""
        state = "active" if self._active else "inactive" if self._configured else "unconfigured"
        why = self.params.refuse_change({p.name: p.value for p in parameters if p.name in PARAMETERS}, state,
                                        self.get_fully_qualified_name())  # use_sim_time etc. pass through
        return SetParametersResult(successful=why is None, reason=why or "")

    def _apply_parameter_change(self, parameters: list[Any]) -> None:
        ours = [p for p in parameters if p.name in LIVE_PARAMETERS]
        if not ours or not self._configured:
            return  # unconfigured: read, and checked across parameters, at the next configure
        params = NodeParams.from_parameters({p.name: p.value for p in ours}, base=self.params)
        if self._pipeline is not None:
            self._pipeline.update(params.frame_settings())
        self.health.set_params(params)
        self._inputs.params = params
        self.params = params  # one assignment: the inference thread sees the old or the new set, never a mix
        self.get_logger().info("applied " + ", ".join(f"{p.name}={p.value!r}" for p in ours))

    # --- lifecycle transitions ------------------------------------------------------------------

    @_logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.configure_error = None
        try:
            self.params = self.read_params()
            self._load_model()
        except LOAD_ERRORS as exc:  # the node stays unconfigured: fix the parameter and configure again
            self.configure_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        p = self.params
        # Counters and statistics live from configure to cleanup: a new configuration starts from zero.
        self.health.configure(p, len(self.segmenter.class_info.names))
        self._slot = LatestSlot()
        self._inputs = InputPath(p, self.health, self._slot)
        self._outputs = OutputPublishers(self, p)
        # A plain publisher, not a lifecycle one: an inactive node still says so on /diagnostics.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(p.diagnostics_period, self._publish_diagnostics)
        self._configured = True
        return super().on_configure(state)

    @_logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.segmenter is None:
            try:
                self._load_model()
            except LOAD_ERRORS as exc:
                self.get_logger().error(f"activate failed: {exc}")
                return TransitionCallbackReturn.FAILURE
        self._worker = InferenceThread(self._slot, functools.partial(self._process, pipeline=self._pipeline),
                                       lambda exc, pair: self.health.internal_error(exc, pair.rgb_stamp_ns),
                                       stopping=lambda: not self.context.ok())
        self._worker.start()
        topics = {stream: self.resolve_topic_name(self._input_topic(stream)[1]) for stream in ("rgb", "thermal")}
        self.health.activate(topics)  # the names after remapping, for the log and the diagnostics
        self._create_subscriptions()
        self._active = True
        done = super().on_activate(state)  # enables the lifecycle publishers
        self._outputs.publish_class_list(self.segmenter.class_info, self._header())
        self.get_logger().info(
            f"active: {self.segmenter.cfg.name} ({self.segmenter.cfg.resolution} resolution), "
            f"{self.segmenter.describe()}; inputs {topics['rgb']} + {topics['thermal']}, "
            f"slop {self.params.slop * 1e3:.0f} ms")
        return done

    @_logged_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release_model()
        return super().on_deactivate(state)

    @_logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release_resources()
        return super().on_cleanup(state)

    @_logged_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release_resources()
        return super().on_shutdown(state)

    @_logged_transition
    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in state '{state.label}'; releasing everything")
        self.release_resources()
        return TransitionCallbackReturn.SUCCESS

    # --- setup / teardown ------------------------------------------------------------------------

    def _load_model(self) -> None:
        path = resolve_checkpoint(self.params.checkpoint)
        if not path.is_file():
            raise MissingInputError(f"checkpoint not found: {path} (parameter 'checkpoint')")
        p = self.params
        self.segmenter = Segmenter.from_checkpoint(
            path, sam_checkpoint=p.sam_checkpoint or None, device=resolve_device(p.device), precision=p.precision,
            backend=p.backend, merge_lora=p.merge_lora, max_input_size=p.max_input_size)
        # A new pipeline per load: the once-only notes (resized thermal) are said again after a reconfigure.
        self._pipeline = FramePipeline(self.segmenter, p.frame_settings())
        self.get_logger().info(f"loaded {path}")

    def _release_model(self) -> None:
        if self.segmenter is not None:
            self.segmenter.release()
            self.segmenter = None

    def _input_topic(self, stream: str) -> tuple[type, str]:
        """(message type, topic name relative to the node) of an input stream."""
        compressed = (self.params.rgb_transport if stream == "rgb" else self.params.thermal_transport) == "compressed"
        base = RGB_TOPIC if stream == "rgb" else THERMAL_TOPIC
        return (CompressedImage, f"{base}/compressed") if compressed else (Image, base)

    def _create_subscriptions(self) -> None:
        qos = profile(self.params.input_qos, self.params.input_depth)
        for stream in ("rgb", "thermal"):
            args = (*self._input_topic(stream), functools.partial(self._on_input, stream), qos)  # cheap: check, pair
            # DDS reports samples it saw but could not deliver (a best-effort frame that lost a fragment):
            # counted per stream, so the diagnostics can say frames are being lost.
            events = SubscriptionEventCallbacks(
                message_lost=lambda info, s=stream: self.health.lost(s, int(info.total_count_change), info.total_count),
                incompatible_qos=lambda info, s=stream: self.health.incompatible(s, info.last_policy_kind.name))
            try:
                self._subscriptions_in.append(self.create_subscription(*args, event_callbacks=events))
            except UnsupportedEventTypeError:  # an rmw without the event: no loss figures
                self._subscriptions_in.append(self.create_subscription(*args))

    def _stop_processing(self) -> None:
        self._active = False
        for sub in self._subscriptions_in:
            self.destroy_subscription(sub)
        self._subscriptions_in = []
        if self._worker is not None and not self._worker.stop(timeout=60.0):
            self.get_logger().error("the inference thread did not stop within 60 s")
        self._worker = None
        if not self.health.finish_checks():
            self.get_logger().error(f"the registration check did not end within {CHECK_WAIT_S:g} s")
        if self._inputs is not None:
            self._inputs.pairer.reset()

    def release_resources(self) -> None:
        """Stop processing; release the model, publishers and timer (cleanup, shutdown, error, exit)."""
        self._configured = False
        self._stop_processing()
        self._release_model()
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
        if self._outputs is not None:
            self._outputs.destroy()
        self._outputs, self._diag_pub, self._diag_timer = None, None, None

    def destroy_node(self) -> None:
        """Release what the node holds, then the node, its lifecycle state machine included: rclpy's
        LifecycleNode.destroy_node leaves that one (kilted), and as it holds the node's handle the DDS
        participant lived on until the garbage collector freed it, at a moment and in a thread nobody
        chose (ros2/rclpy#1710 is the same for a plain node's graph entry)."""
        self.release_resources()
        super().destroy_node()
        self._state_machine.destroy_when_not_in_use()

    def _header(self) -> Any:
        header = Image().header
        header.stamp = self.get_clock().now().to_msg()
        return header

    def _on_input(self, stream: str, msg: Any) -> None:
        inputs = self._inputs
        if self._active and inputs is not None:
            inputs.accept(stream, msg, self.get_clock().now().nanoseconds)

    # --- inference thread -------------------------------------------------------------------------

    def _process(self, pair: Pair, pipeline: FramePipeline) -> None:
        started = time.perf_counter()
        if pair.rgb is None and self._last_rgb is None:
            return  # a thermal frame alone, but no RGB frame yet to take the output's geometry from
        header, rgb_hw = (pair.rgb.header, None) if pair.rgb is not None else self._blank_rgb_geometry(pair)
        result = pipeline.process_messages(pair.rgb, pair.thermal, self._outputs.wanted(), rgb_hw=rgb_hw)
        for note in result.notes:
            self.health.note(note)
        if not result.ok:
            self.health.note(result.error, failed=True)
            return
        if pair.rgb is not None:
            self._last_rgb = (header, result.rgb.shape[:2])
        published = time.perf_counter()
        self._outputs.publish(header, result, self.params)
        done = time.perf_counter()
        latency = (self.get_clock().now() - Time.from_msg(header.stamp)).nanoseconds * 1e-9
        self._outputs.publish_timing(done - started, latency)
        blanked = "thermal" if pair.thermal is None else "rgb" if pair.rgb is None else None
        self.health.frame_done(result, pair.thermal, latency, done - published, blanked)

    def _blank_rgb_geometry(self, pair: Pair) -> tuple[Any, tuple[int, int]]:
        """The header (the last RGB frame's frame_id, the thermal stamp) and size of a blank RGB frame."""
        last_header, hw = self._last_rgb
        header = Image().header
        header.frame_id, header.stamp = last_header.frame_id, pair.thermal.header.stamp
        return header, hw

    # --- diagnostics ------------------------------------------------------------------------------

    def diagnostic_report(self):
        return self.health.report(active=self._active, pairing=self._inputs.pairer.stats.as_dict() if self._inputs else {},
                                  dropped=self._slot.dropped, publishers=self._input_publishers(), model=self.segmenter)

    def _input_publishers(self) -> dict[str, int] | None:
        subscriptions = list(self._subscriptions_in)
        if len(subscriptions) != 2:
            return None
        try:
            return {stream: sub.get_publisher_count() for stream, sub in zip(("rgb", "thermal"), subscriptions)}
        except InvalidHandle:  # destroyed by a transition in another thread
            return None

    def _publish_diagnostics(self) -> None:
        report, pub = self.diagnostic_report(), self._diag_pub
        if pub is not None:  # the diagnostic_updater's status name: "<node>: <task>"
            pub.publish(diagnostic_array(report, f"{self.get_fully_qualified_name()}: segmentation", self._header(),
                                         self.segmenter.backend.device_label if self.segmenter is not None else ""))
