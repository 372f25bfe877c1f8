"""The TASeg ROS 2 node: synchronised RGB + thermal in, labels and overlays out.

    ros2 run taseg_ros taseg_node --ros-args -p checkpoint:=/path/model.safetensors \\
        -r rgb/image:=/camera/color/image_raw -r thermal/image:=/thermal/image_raw

A lifecycle node (``rclpy.lifecycle.LifecycleNode``):
  - configure: reads the parameters, loads the checkpoint (a missing or incompatible file fails
    the transition with a message naming the file and the reason), creates the publishers,
    publishes the class list once on the transient-local ``~/class_info`` topic.
  - activate: subscribes to the inputs and starts the inference thread (reloading the model
    if a deactivate released it).
  - deactivate: unsubscribes, stops the inference thread and releases the model's memory.
  - cleanup / shutdown: also removes the publishers and the diagnostics timer.
With ``autostart`` (default true) ``main()`` configures and activates the node on start, so
``ros2 run`` behaves like a plain node; set it false under a lifecycle manager. Every parameter is
declared from its row in ``ros/params.NodeParams`` (description, range, read-only unless live):
``ros2 param describe`` explains it, ``ros2 param set`` applies the live ones to the next frame, and
ROS itself refuses read-only and out-of-range values.

Inputs (relative names, remap them): ``rgb/image`` and ``thermal/image`` (sensor_msgs/Image), or
``rgb/image/compressed`` / ``thermal/image/compressed`` (sensor_msgs/CompressedImage) with
``rgb_transport`` / ``thermal_transport`` = compressed.

Outputs, each with the RGB header: ``~/labels`` (mono8 class ids), ``~/colorized`` (rgb8),
``~/overlay`` (rgb8), ``~/confidence`` (32FC1, with ``publish_confidence``); ``~/class_info``
(std_msgs/String, JSON ``{"classes", "palette", "prompts", "ignore_index"}``, transient local);
``/diagnostics`` (with ``quality_diagnostics``: label-free quality_* figures per frame, see
``ros.diagnostics.QualityStatistics``).

Threading: subscription callbacks only validate the message header fields and pair frames by
stamp (``frames.pairing.StampPairer``); a complete pair goes into a newest-wins slot
(``frames.pairing.LatestSlot``). One worker thread takes pairs from the slot, decodes, runs the model
and publishes, so a slow model drops stale pairs (counted) instead of building a queue.

The per-frame work is ``inference.pipeline.FramePipeline``'s, the same as ``taseg bag eval``'s.
"""
from __future__ import annotations

import array
import json
import math
import signal
import sys
import threading
import time
import traceback
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.exceptions import InvalidHandle
from rclpy.executors import Executor, ExternalShutdownException, ShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from taseg_ros.errors import MissingInputError
from taseg_ros.frames.thermal import FrameNote
from taseg_ros.inference.pipeline import SAID_ONCE, FramePipeline, FrameResult
from taseg_ros.config_io import limits_of
from taseg_ros.devices import resolve_device
from taseg_ros.evaluation.quality import QualityTracker
from taseg_ros.ros.diagnostics import ERROR, LOSSY_HINT, OK, NodeStatistics, QualityStatistics, RegistrationWatch, build_report
from taseg_ros.frames.codec import ImageDecodeError, RGB_ENCODINGS, THERMAL_ENCODINGS, check_image_fields, decode_thermal, encode_image
from taseg_ros.frames.pairing import LatestSlot, Pair, StampPairer, stamp_to_ns
from taseg_ros.frames.render import OUTPUTS
from taseg_ros.ros.params import LIVE_PARAMETERS, PARAMETERS, RGB_TOPIC, THERMAL_TOPIC, NodeParams, description, resolve_checkpoint
from taseg_ros.ros.throttle import LogThrottle
from taseg_ros.ros.qos import latched_qos

NODE_NAME = "taseg"


def parameter_descriptor(name: str) -> ParameterDescriptor:
    """The ROS descriptor of a node parameter from its row in ros/params.NodeParams: the description
    `ros2 param describe` shows, the numeric range ROS itself enforces on `ros2 param set`, and
    read-only for the parameters read at configure.

    Dynamic typing: a params file with `slop: 1` or `thermal_range: [0, 65535]` must not kill the node
    at start-up; values are checked (with a clear message) on configure. ROS ranges are inclusive: a
    strict limit (> 0) becomes the next representable number."""
    limits = limits_of(PARAMETERS[name])
    descriptor = ParameterDescriptor(name=name, description=description(name), dynamic_typing=True,
                                     read_only=name not in LIVE_PARAMETERS)
    if limits is None or all(v is None for v in (limits.ge, limits.gt, limits.le, limits.lt)):
        return descriptor
    low = limits.ge if limits.ge is not None else (math.nextafter(limits.gt, math.inf) if limits.gt is not None else -math.inf)
    high = limits.le if limits.le is not None else (math.nextafter(limits.lt, -math.inf) if limits.lt is not None else math.inf)
    if isinstance(NodeParams.defaults()[name], int):
        descriptor.integer_range = [IntegerRange(from_value=int(math.ceil(max(low, -2**63))),
                                                 to_value=int(min(high, 2**63 - 1)), step=1)]
    else:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    return descriptor


def qos_profile(preset: str, depth: int) -> QoSProfile:
    reliability = ReliabilityPolicy.BEST_EFFORT if preset == "sensor_data" else ReliabilityPolicy.RELIABLE
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=DurabilityPolicy.VOLATILE
    )


def _logged_transition(method):
    """rclpy turns an exception in a transition callback into ERROR without a word; log it."""
    import functools

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
        self.params = NodeParams()
        self.stats = NodeStatistics()
        self.quality_stats = QualityStatistics()
        self._quality: QualityTracker | None = None  # made with the model (its class count)
        self.configure_error: str | None = None  # why the last configure failed, for callers and tests
        self.segmenter = None
        self._slot: LatestSlot[Pair] = LatestSlot()
        self._pairer: StampPairer | None = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._active = False
        self._configured = False
        self._outputs: dict[str, Any] = {}
        self._class_info_pub = None
        self._diag_pub = None
        self._diag_timer = None
        self._subscriptions_in: list[Any] = []
        self._pipeline: FramePipeline | None = None
        self._throttle = LogThrottle()
        self._activated_at = time.monotonic()
        self._last_pair_at: float | None = None
        self._last_input_at: dict[str, float | None] = {"rgb": None, "thermal": None}
        self._registration = RegistrationWatch()
        self._registration_checked_at = -float("inf")
        # Registered after the declarations above: rclpy runs these callbacks for declarations too.
        self.add_on_set_parameters_callback(self._check_parameter_change)
        self.add_post_set_parameters_callback(self._apply_parameter_change)

    # --- parameters --------------------------------------------------------------------------

    def read_params(self) -> NodeParams:
        params = NodeParams.from_parameters({name: self.get_parameter(name).value for name in NodeParams.names()})
        params.validate()
        return params

    def _check_parameter_change(self, parameters: list[Any]) -> SetParametersResult:
        """`ros2 param set` on a configured node: live parameters are validated like at configure (ROS
        itself refuses the read-only ones and out-of-range numbers, from their descriptors)."""
        ours = [p for p in parameters if p.name in LIVE_PARAMETERS]  # use_sim_time etc. pass through
        if not ours or not self._configured:
            return SetParametersResult(successful=True)  # read, and checked, at the next configure
        try:
            self._changed_params(ours).validate()
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameter_change(self, parameters: list[Any]) -> None:
        ours = [p for p in parameters if p.name in LIVE_PARAMETERS]
        if not ours or not self._configured:
            return
        params = self._changed_params(ours)
        if self._pipeline is not None:
            self._pipeline.update(params.frame_settings())
        self.params = params  # one assignment: the inference thread sees the old or the new set, never a mix
        if any(p.name == "thermal_homography" for p in ours):
            self._registration = RegistrationWatch()  # a new registration starts a new record
        self.get_logger().info("applied " + ", ".join(f"{p.name}={p.value!r}" for p in ours))

    def _changed_params(self, parameters: list[Any]) -> NodeParams:
        return NodeParams.from_parameters({p.name: p.value for p in parameters}, base=self.params)

    # --- lifecycle transitions ------------------------------------------------------------------

    @_logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.configure_error = None
        try:
            self.params = self.read_params()
            self._load_model()
        except (ValueError, FileNotFoundError, OSError, RuntimeError) as exc:
            self.configure_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        p = self.params
        # Counters and statistics live from configure to cleanup: a new configuration starts from zero.
        self.stats = NodeStatistics(recent_s=p.diagnostics_window)
        self.quality_stats = QualityStatistics(recent_s=p.diagnostics_window)
        self._slot = LatestSlot()
        self._throttle = LogThrottle()
        self._pairer = StampPairer(p.slop, p.pairing_queue_size, p.time_reset)
        self._pairer.on_reject = self._on_rejected_stamp
        self._create_publishers()
        self._publish_class_info()
        self._configured = True
        return super().on_configure(state)

    @_logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.segmenter is None:
            try:
                self._load_model()
            except (ValueError, FileNotFoundError, OSError, RuntimeError) as exc:
                self.get_logger().error(f"activate failed: {exc}")
                return TransitionCallbackReturn.FAILURE
        self._slot.clear()
        self._slot.reopen()
        self._stop.clear()
        if self._quality is not None:
            self._quality.reset()  # the first pair after activation has no previous frame
        self._worker = threading.Thread(target=self._work, args=(self._pipeline,), name="taseg_inference", daemon=True)
        self._worker.start()
        self._create_subscriptions()
        self._activated_at = time.monotonic()
        self._last_pair_at = None
        self._last_input_at = {"rgb": None, "thermal": None}
        self._registration = RegistrationWatch()  # scores of the old session say nothing now
        self._active = True
        self.get_logger().info(
            f"active: {self.segmenter.cfg.name} ({self.segmenter.cfg.resolution} resolution), "
            f"{self.segmenter.describe()}; inputs "
            f"{self._input_topic('rgb')} + {self._input_topic('thermal')}, slop {self.params.slop * 1e3:.0f} ms"
        )
        return super().on_activate(state)

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
        from taseg_ros.inference import Segmenter  # torch loads here, not at import

        path = resolve_checkpoint(self.params.checkpoint)
        if not path.is_file():
            raise MissingInputError(f"checkpoint not found: {path} (parameter 'checkpoint')")
        self.segmenter = Segmenter.from_checkpoint(
            path,
            sam_checkpoint=self.params.sam_checkpoint or None,
            device=resolve_device(self.params.device),
            precision=self.params.precision,
            backend=self.params.backend,
            merge_lora=self.params.merge_lora,
            max_input_size=self.params.max_input_size,
        )
        # A new pipeline per load: the once-only notes (resized thermal) are said again after a reconfigure.
        self._pipeline = FramePipeline(self.segmenter, self.params.frame_settings())
        # Raw flicker only: motion compensation (optical flow) is bag eval's, too costly per frame here.
        self._quality = QualityTracker(len(self.segmenter.class_info.names), motion=False, detailed=False)
        self.get_logger().info(f"loaded {path}")

    def _release_model(self) -> None:
        if self.segmenter is not None:
            self.segmenter.release()
            self.segmenter = None

    def _input_topic(self, stream: str) -> str:
        base = RGB_TOPIC if stream == "rgb" else THERMAL_TOPIC
        transport = self.params.rgb_transport if stream == "rgb" else self.params.thermal_transport
        return f"{base}/compressed" if transport == "compressed" else base

    def _create_publishers(self) -> None:
        qos = qos_profile(self.params.output_qos, self.params.output_depth)
        names = [name for name in OUTPUTS if name != "confidence" or self.params.publish_confidence]
        self._outputs = {name: self.create_publisher(Image, f"~/{name}", qos) for name in names}
        self._class_info_pub = self.create_publisher(String, "~/class_info", latched_qos())
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.params.diagnostics_period, self._publish_diagnostics)

    def _create_subscriptions(self) -> None:
        qos = qos_profile(self.params.input_qos, self.params.input_depth)
        for stream, callback in (("rgb", self._on_rgb), ("thermal", self._on_thermal)):
            transport = self.params.rgb_transport if stream == "rgb" else self.params.thermal_transport
            msg_type = CompressedImage if transport == "compressed" else Image
            # DDS reports samples it saw but could not deliver (a best-effort frame that lost a fragment):
            # counted per stream, so the diagnostics can say large frames are being lost.
            events = SubscriptionEventCallbacks(message_lost=lambda info, s=stream: self._on_lost(s, info))
            try:
                sub = self.create_subscription(msg_type, self._input_topic(stream), callback, qos, event_callbacks=events)
            except UnsupportedEventTypeError:  # an rmw without the event: no loss figures
                sub = self.create_subscription(msg_type, self._input_topic(stream), callback, qos)
            self._subscriptions_in.append(sub)

    def _on_lost(self, stream: str, info: Any) -> None:
        self.stats.record_lost(stream, int(info.total_count_change))
        self._warn(("lost", stream), f"{self._input_topic(stream)}: {info.total_count} message(s) lost in transport so "
                   "far" + (LOSSY_HINT if self.params.input_qos != "reliable" else ""))

    def _stop_processing(self) -> None:
        self._active = False
        for sub in self._subscriptions_in:
            self.destroy_subscription(sub)
        self._subscriptions_in = []
        self._stop.set()
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=60.0)
            if self._worker.is_alive():
                self.get_logger().error("the inference thread did not stop within 60 s")
            self._worker = None
        self._slot.clear()
        if self._pairer is not None:
            self._pairer.reset()

    def release_resources(self) -> None:
        """Stop processing; release the model, publishers and timer (cleanup, shutdown, error, exit)."""
        self._configured = False
        self._stop_processing()
        self._release_model()
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        for pub in list(self._outputs.values()) + [self._class_info_pub, self._diag_pub]:
            if pub is not None:
                self.destroy_publisher(pub)
        self._outputs, self._class_info_pub, self._diag_pub = {}, None, None

    def _publish_class_info(self) -> None:
        info = self.segmenter.class_info.to_mapping()
        self._class_info_pub.publish(String(data=json.dumps(info)))

    # --- subscription callbacks (cheap: validate, pair, hand over) --------------------------------

    def _on_rgb(self, msg: Any) -> None:
        self._on_input("rgb", msg, RGB_ENCODINGS)

    def _on_thermal(self, msg: Any) -> None:
        self._on_input("thermal", msg, THERMAL_ENCODINGS)

    def _on_input(self, stream: str, msg: Any, encodings: tuple[str, ...]) -> None:
        pairer = self._pairer
        if not self._active or pairer is None:
            return
        self._last_input_at[stream] = time.monotonic()
        try:
            check_image_fields(msg, encodings)
        except ImageDecodeError as exc:
            n = self.stats.record_failure(f"bad_{stream}", exc.reason, str(exc), pair=False)
            self._warn((f"bad_{stream}:{exc.reason}", stream),
                       f"{self._input_topic(stream)}: {exc}; frame ignored ({n} x {exc.reason} since configure)")
            return
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp > 0:  # zero stamps are rejected by the pairer, and counted there
            self.stats.record_stamp_age(stream, (self.get_clock().now().nanoseconds - stamp) * 1e-9)
        pair = pairer.add_rgb(stamp, msg) if stream == "rgb" else pairer.add_thermal(stamp, msg)
        if pair is not None:
            self._last_pair_at = time.monotonic()
            self._slot.put(pair)

    def _on_rejected_stamp(self, stream: str, reason: str, stamp_ns: int) -> None:
        topic = self._input_topic(stream)
        if reason == "zero_stamp":
            self._warn((reason, stream), f"{topic}: header stamp is zero; frame ignored (pairing needs the driver's stamps)")
        elif reason == "out_of_order":
            self._warn((reason, stream), f"{topic}: stamp {stamp_ns * 1e-9:.6f} s is not newer than the previous frame's; frame ignored")
        elif reason == "time_reset":
            self.get_logger().warning(f"{topic}: stamps jumped back to {stamp_ns * 1e-9:.3f} s; pairing restarted")

    def _warn(self, key: tuple[str, str], text: str) -> None:
        """A warning, throttled per (kind of problem, stream): one kind never hides another."""
        if self._throttle.allow(key, self.params.log_throttle):
            self.get_logger().warning(text)

    # --- inference thread -------------------------------------------------------------------------

    def _work(self, pipeline: FramePipeline) -> None:
        while not self._stop.is_set():
            pair = self._slot.take(timeout=0.25)
            if pair is None:
                continue
            try:
                self._process(pair, pipeline)
            except Exception as exc:  # noqa: BLE001 - the thread must survive anything one pair does
                if not self.context.ok():
                    return  # Ctrl-C shut the context down under a pair in flight: nothing left to publish to
                self.stats.record_failure("internal", type(exc).__name__, f"unexpected {type(exc).__name__}: {exc}")
                if self._throttle.allow(("internal", ""), self.params.log_throttle):
                    self.get_logger().error(
                        f"unexpected error on a pair (rgb stamp {pair.rgb_stamp_ns * 1e-9:.6f} s): {exc}\n"
                        + traceback.format_exc()
                    )

    def _process(self, pair: Pair, pipeline: FramePipeline) -> None:
        result = pipeline.process_messages(pair.rgb, pair.thermal, self._wanted_outputs())
        for note in result.notes:
            self._report(note)
        if not result.ok:
            self._report(result.error, failed=True)
            return
        published = time.perf_counter()
        self._publish_outputs(pair.rgb.header, result)
        publish_s = time.perf_counter() - published
        latency = (self.get_clock().now() - Time.from_msg(pair.rgb.header.stamp)).nanoseconds * 1e-9
        t = result.timings
        self._record_quality(result)  # before the count: diagnostics saying `processed` N include frame N's figures
        self.stats.record_output(latency, t["inference"], t["decode"] + t["thermal"], t["render"] + publish_s, steps_s=t)
        self._check_registration(pair, result.rgb)

    def _record_quality(self, result: FrameResult) -> None:
        """The frame's label-free figures for the diagnostics (after publishing: no added latency)."""
        tracker = self._quality
        if tracker is None:
            return
        if not self.params.quality_diagnostics:
            tracker.reset()  # switched back on later: no flicker against a stale frame
            return
        start = time.perf_counter()
        quality = tracker.update(result.labels, result.confidence)
        self.quality_stats.record(quality, time.perf_counter() - start)

    def _check_registration(self, pair: Pair, rgb: np.ndarray) -> None:
        """Every registration_check_period s, after publishing: score this pair's registration (the
        node's thermal_homography, or its plain resize) for the diagnostics (RegistrationWatch)."""
        period = self.params.registration_check_period
        now = time.monotonic()
        if period <= 0 or now - self._registration_checked_at < period:
            return
        self._registration_checked_at = now
        try:
            self._registration.check(rgb, decode_thermal(pair.thermal), self.params.homography())
        except ValueError:  # an undecodable frame was counted by the pipeline already
            return

    def _report(self, note: FrameNote, failed: bool = False) -> None:
        """Count a frame's problem (``failed``: the pair was skipped, counted per reason for the
        diagnostics) and log it, throttled per kind, reason and stream (said-once notes unthrottled)."""
        if note.kind == "thermal_aligned":  # the pipeline says it once per configure
            hint = "" if self.params.thermal_homography else "; set thermal_homography for a registered overlay"
            self.get_logger().warning(note.text + hint)
            return
        if note.kind in SAID_ONCE:
            self.get_logger().info(note.text)
            return
        suffix = ""
        if failed:
            n = self.stats.record_failure(note.kind, note.detail, note.text)
            suffix = f" ({n} x {note.detail or note.kind} since configure)"
        else:
            self.stats.count_error(note.kind)
        topic = self._input_topic(note.stream) if note.stream in ("rgb", "thermal") else "model"
        if note.kind == "model":
            if self._throttle.allow((note.kind, note.stream), self.params.log_throttle):
                self.get_logger().error(note.text + suffix)
            return
        self._warn((f"{note.kind}:{note.detail}", note.stream), f"{topic}: {note.text}{suffix}")

    def _wanted_outputs(self) -> set[str]:
        """The rendered outputs somebody subscribes to (the labels are always computed)."""
        return {name for name, pub in self._outputs.items() if name != "labels" and pub.get_subscription_count() > 0}

    def _publish_outputs(self, header: Any, result: FrameResult) -> None:
        for name, pub in self._outputs.items():
            image = result.output(name)
            if image is not None and pub.get_subscription_count() > 0:
                pub.publish(_image_msg(header, image, OUTPUTS[name]))

    # --- diagnostics ------------------------------------------------------------------------------

    def diagnostic_report(self):
        now = time.monotonic()
        pairing = self._pairer.stats.as_dict() if self._pairer is not None else {}
        reference = self._last_pair_at if self._last_pair_at is not None else self._activated_at
        since_input = {k: (None if v is None else now - v) for k, v in self._last_input_at.items()}
        extra = {}
        if self.segmenter is not None:
            extra = {
                "model": self.segmenter.cfg.name,
                "resolution_mode": self.segmenter.cfg.resolution,
                "device": self.segmenter.backend.device_label,
                "precision": self.segmenter.precision,
                "runtime": self.segmenter.describe(),
            }
        if self.params.quality_diagnostics:
            extra.update(self.quality_stats.values())
        return self._registration.apply(build_report(
            active=self._active,
            stats=self.stats,
            pairing=pairing,
            dropped=self._slot.dropped,
            seconds_since_pair=now - reference if self._active else None,
            seconds_since_input=since_input,
            no_pair_warn_s=self.params.no_pair_warning,
            clock_offset_warn_s=self.params.clock_offset_warning,
            extra=extra,
            now=now,
            lossy_inputs=self.params.input_qos != "reliable",
            publishers=self._input_publishers(),
        ))

    def _input_publishers(self) -> dict[str, int] | None:
        subscriptions = list(self._subscriptions_in)
        if len(subscriptions) != 2:
            return None
        try:
            return {stream: sub.get_publisher_count() for stream, sub in zip(("rgb", "thermal"), subscriptions)}
        except InvalidHandle:  # destroyed by a transition in another thread
            return None

    def _publish_diagnostics(self) -> None:
        report = self.diagnostic_report()
        if report.level == ERROR and self._active:
            if self._throttle.allow(("diagnostics", ""), self.params.log_throttle):
                self.get_logger().error(report.message)
        elif report.level != OK and self._active:
            self._warn(("diagnostics", ""), report.message)
        status = DiagnosticStatus(
            level=bytes([report.level]),
            name=f"{self.get_fully_qualified_name()}: segmentation",
            message=report.message,
            hardware_id=self.segmenter.backend.device_label if self.segmenter is not None else "",
            values=[KeyValue(key=k, value=v) for k, v in report.values.items()],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        if self._diag_pub is not None:
            self._diag_pub.publish(msg)


def _image_msg(header: Any, image: np.ndarray, encoding: str) -> Image:
    fields = encode_image(image, encoding)
    msg = Image()
    msg.header = header
    msg.height, msg.width, msg.encoding = fields.height, fields.width, fields.encoding
    msg.is_bigendian, msg.step = int(fields.is_bigendian), fields.step
    data = array.array("B")
    data.frombytes(fields.data)  # one copy; assigning bytes would make rclpy check every element
    msg.data = data
    return msg


def spin_resiliently(executor: Executor) -> None:
    """``executor.spin()`` for a background thread while other threads create and destroy
    entities (tests and tools that drive lifecycle transitions from outside the executor).

    rclpy raises InvalidHandle in the spinning thread when a subscription or publisher is
    destroyed while that thread builds its wait set, which ends ``spin()`` for good; the next
    wait set no longer holds the destroyed entity, so this loop simply carries on.
    """
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


def main(args: list[str] | None = None) -> int:
    """Console script / ``ros2 run taseg_ros taseg_node``."""
    rclpy.init(args=args)
    node = TASegNode()
    # Single-threaded on purpose: the callbacks are cheap (inference has its own thread), and
    # transitions that destroy subscriptions must not race another executor thread building a
    # wait set (rclpy's MultiThreadedExecutor dies with InvalidHandle when they do).
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal(f"cannot start: {node.configure_error or 'configure failed'}")
                return 1
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("cannot start: activate failed")
                return 1
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C under `ros2 launch` reaches the node twice (the terminal's process group, then
        # launch's own SIGINT): the second must not break the clean-up with a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        node.release_resources()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
