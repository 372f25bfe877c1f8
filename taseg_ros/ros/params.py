"""Parameters of the segmentation node: names, defaults, validation. ROS-free.

``config/taseg.yaml`` documents the same names and values (a test keeps them equal); the node
declares every field of ``NodeParams`` as a ROS parameter with these defaults, so each one can be
overridden with ``--ros-args -p name:=value`` or a params file. ``from_parameters`` reads the ROS
values through taseg_ros.config_io (as every other config); the limits stand beside the fields.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taseg_ros.config_io import ConfigError, check_fields, from_mapping, limits_of, parse_yaml, read_yaml, setting
from taseg_ros.devices import BACKEND_CHOICES, PRECISIONS
from taseg_ros.errors import InputError
from taseg_ros.frames.pairing import DEFAULT_QUEUE_SIZE, DEFAULT_SLOP_S, DEFAULT_TIME_RESET_S
from taseg_ros.frames.render import CONFIDENCE_ENCODINGS, DEFAULT_OVERLAY_ALPHA
from taseg_ros.frames.settings import FrameSettings
from taseg_ros.errors import safe_text
from taseg_ros.model.config import DEFAULT_MAX_INPUT_SIZE, max_input_size_problem
from taseg_ros.resources import models_dir
from taseg_ros.frames.thermal import THERMAL_MODES, ThermalNormalization, validate_homography

DEVICES_HINT = "auto (cuda when available, else cpu), cpu, cuda or cuda:N (torch, onnxruntime), tensorrt (onnxruntime's TensorRT provider), gpu or npu (openvino)"
TRANSPORTS = ("raw", "compressed")
QOS_PRESETS = ("sensor_data", "reliable", "best_effort")  # ros/qos.py's table builds each on rclpy's presets
FALLBACKS = ("none", "blank")

# Topic names relative to the node's namespace (remap them); "compressed" transport
# subscribes to "<name>/compressed" as image_transport does.
RGB_TOPIC = "rgb/image"
THERMAL_TOPIC = "thermal/image"


# YAML's spellings of "no value": rcl's parameter parser reads them as strings, so `ros2 param dump`'s
# `null` for a parameter without a value comes back as 'null'. For a list parameter they mean [].
YAML_NULLS = frozenset({"null", "Null", "NULL", "~", ""})


def no_value(value: Any) -> bool:
    """A ROS parameter value that means "nothing": not set, or YAML's null as rcl reads it."""
    return value is None or (isinstance(value, str) and value in YAML_NULLS)


def param(default: Any = dataclasses.MISSING, *, doc: str, live: bool = False, section: str = "",
          default_factory: Any = dataclasses.MISSING, **limits: Any) -> Any:
    """A node parameter: its default and limits (config_io.setting), what it does (``doc``: the
    ``ros2 param describe`` text, config/taseg.yaml's comment and the launch argument's help), whether
    a running node applies it to the next frame (``live``; the others are read at configure: they can
    be changed while the node is unconfigured, and are refused while it is configured or active), and
    the config file ``section`` it opens."""
    row = setting(default, default_factory=default_factory, **limits)
    row.metadata = {**row.metadata, "doc": doc, "live": live, "section": section}
    return row


@dataclass
class NodeParams:
    """The node's parameters: the one table their defaults, limits, descriptions and live flags come from."""

    checkpoint: str = param(
        "", section="model",
        doc="The model file: a TASeg checkpoint (.safetensors from `taseg init` / `taseg train`) or an export of one "
        "(`taseg export --format ...`: .onnx, .xml OpenVINO IR, .engine TensorRT). A relative path is looked up as "
        "given, then in the models folder (TASEG_MODELS_DIR or models/). Required.")
    sam_checkpoint: str = param(
        "", doc="Official SAM checkpoint the model was trained on; empty: models/<name recorded in the checkpoint>.")
    backend: str = param(
        "auto", choices=BACKEND_CHOICES,
        doc="Runtime of the network forward: auto (from the file type: .safetensors torch, .onnx onnxruntime, "
        ".xml openvino, .engine tensorrt), torch, onnxruntime, openvino or tensorrt.")
    merge_lora: bool = param(
        False, doc="torch: merge the LoRA factors into the frozen weights at load (same outputs, less work per frame).")
    device: str = param("auto", doc=f"Where the network runs: {DEVICES_HINT}.")
    precision: str = param(
        "fp32", choices=tuple(PRECISIONS),
        doc="fp32, fp16 (CUDA only) or bf16 (torch autocast; OpenVINO's inference precision hint). The resolution "
        "mode (native / sam1024) and an export's input size come from the model file.")
    max_input_size: int = param(
        DEFAULT_MAX_INPUT_SIZE, ge=0,
        doc="Longest side (px) of the network's input: larger frames are resized down before the network and the "
        "labels back up to the frame (said once in the log), so one huge frame cannot exhaust memory; 0: no "
        "limit. An export's fixed input size is its own limit.")
    autostart: bool = param(
        True, doc="true: configure and activate on start (plain `ros2 run`); false: wait for a lifecycle manager.")
    rgb_transport: str = param(
        "raw", choices=TRANSPORTS, section="inputs",
        doc="raw (sensor_msgs/Image on rgb/image) or compressed (sensor_msgs/CompressedImage on rgb/image/compressed).")
    thermal_transport: str = param(
        "raw", choices=TRANSPORTS,
        doc="raw (sensor_msgs/Image on thermal/image) or compressed (CompressedImage on thermal/image/compressed).")
    slop: float = param(
        DEFAULT_SLOP_S, ge=0, unit="seconds",
        doc="Largest stamp difference (s) of an RGB and a thermal frame that form a pair; keep it well under one "
        "frame period (33 ms at 30 fps).")
    pairing_queue_size: int = param(DEFAULT_QUEUE_SIZE, ge=1, doc="Frames per stream held while waiting for a partner (bounds memory).")
    time_reset: float = param(
        DEFAULT_TIME_RESET_S, gt=0, unit="seconds",
        doc="A stamp older than the previous one by more than this (s) is a clock reset (bag loop, simulator "
        "restart): pairing restarts. Smaller backward steps are dropped as out of order.")
    input_qos: str = param(
        "reliable", choices=QOS_PRESETS,
        doc="Input QoS: reliable (from a driver publishing reliable, as REP-2003 has drivers do, no frame is lost in "
        "transport: scripts/bench_transport.py), sensor_data or best_effort (best effort: a large frame that loses one "
        "fragment is lost whole). A camera publishing best effort needs sensor_data: a reliable subscription hears "
        "nothing from it (the node says so).")
    input_depth: int = param(
        10, ge=1,
        doc="Input queue depth (DDS keeps this many frames per stream while the node takes them; the node itself "
        "keeps only the newest pair).")
    input_timeout: float = param(
        1.0, ge=0, unit="seconds", live=True, section="camera faults",
        doc="A stream with no message for this long (s) while the other one arrives is silent (a driver crash, a "
        "cable): input_fallback applies until it returns. 0: off.")
    input_fallback: str = param(
        "none", choices=FALLBACKS, live=True,
        doc="With one stream silent: none publishes nothing (diagnostics ERROR naming the silent stream); blank "
        "publishes from the live stream alone with the missing one blanked (thermal exactly as `taseg eval "
        "--blank-thermal` blanks it; RGB as a black frame of the last RGB size), diagnostics WARN with the stream, "
        "since when and the frames published degraded; pairs resume with the stream's next message.")
    frozen_warning: float = param(
        2.0, ge=0, unit="seconds", live=True,
        doc="Diagnostics turn WARN when a stream repeats the same image for this long (s): a thermal camera's "
        "flat-field correction (a second or less is normal) or a hung driver. Checked on a sample of each "
        "message's bytes (0.1-0.2 ms a frame). 0: off.")
    thermal_normalization: str = param(
        ThermalNormalization.mode, choices=THERMAL_MODES, live=True, section="thermal",
        doc="auto (8-bit: fixed 0..255; otherwise percentile), fixed (thermal_range), minmax (per frame), "
        "percentile (thermal_percentiles, per frame; robust to hot spots).")
    thermal_range: list[float] = param(
        default_factory=lambda: [ThermalNormalization.low, ThermalNormalization.high], live=True,
        doc="[low, high] raw values mapped to 0 and 1 in fixed mode (e.g. [0.0, 65535.0] for 16-bit counts, or a "
        "temperature range in the camera's unit for 32FC1).")
    thermal_percentiles: list[float] = param(
        default_factory=lambda: list(ThermalNormalization.percentiles), live=True,
        doc="[low, high] percentiles of the frame mapped to 0 and 1 in percentile mode.")
    thermal_homography: list[float] = param(
        default_factory=list, live=True,
        doc="3x3 homography, row-major, thermal pixel -> RGB pixel, registering the thermal frame onto the RGB frame "
        "(applied after normalisation, as `taseg bag extract` records it for training). [] = plain resize when "
        "the sizes differ.")
    thermal_homography_size: list[int] = param(
        default_factory=list, live=True,
        doc="[thermal width, height, RGB width, height] the thermal_homography was made for (`taseg bag calibrate` "
        "and `bag refine` write it): pairs of other sizes are refused, counted and logged, not warped by a "
        "registration of other cameras. [] = not checked.")
    overlay_alpha: float = param(
        DEFAULT_OVERLAY_ALPHA, ge=0, le=1, live=True, section="outputs",
        doc="Weight of the class colours in ~/overlay: 0 = RGB only, 1 = colours only.")
    publish_confidence: bool = param(
        False, doc="Also publish ~/confidence (the probability of the chosen class, in confidence_encoding).")
    confidence_encoding: str = param(
        "32FC1", choices=CONFIDENCE_ENCODINGS, live=True,
        doc="~/confidence as 32FC1 (the probability, 0..1) or mono8 (round(255 x probability), 0..255: the "
        "confidence image Nav2's semantic_segmentation_layer reads).")
    jpeg_quality: int = param(
        95, ge=1, le=100, live=True,
        doc="JPEG quality of ~/overlay/compressed and ~/colorized/compressed (image_transport's default); "
        "~/labels/compressed is PNG, lossless.")
    output_qos: str = param("reliable", choices=QOS_PRESETS, doc="Output QoS: reliable, sensor_data or best_effort.")
    output_depth: int = param(1, ge=1, doc="Output queue depth.")
    diagnostics_period: float = param(
        1.0, gt=0, unit="seconds", section="diagnostics",
        doc="Period (s) of the /diagnostics status (fps, latency, dropped, unmatched, errors).")
    diagnostics_window: float = param(
        10.0, gt=0, unit="seconds",
        doc="The diagnostics describe the last this-many seconds (timings, failures, stamp offsets).")
    quality_diagnostics: bool = param(
        True, live=True,
        doc="Label-free quality in the diagnostics, per frame: quality_mean_confidence (the chosen class's mean "
        "probability), quality_low_confidence_share (pixels below 0.5) and quality_flicker (share of pixels whose "
        "label changed since the previous processed frame; not motion compensated: `taseg bag eval` does that "
        "offline), each also as a _mean over diagnostics_window. About 0.4 ms per 640x480 frame; false: off.")
    no_pair_warning: float = param(
        3.0, gt=0, unit="seconds", live=True,
        doc="Diagnostics turn WARN when no RGB/thermal pair has matched for this long (s).")
    clock_offset_warning: float = param(
        2.0, gt=0, unit="seconds", live=True,
        doc="Diagnostics turn WARN when input header stamps are on average more than this many seconds behind (or "
        "ahead of) the node's clock: a bag played without --clock and use_sim_time, or a camera driver stamping "
        "with the device's own clock. Pairing still works; latency does not.")
    log_throttle: float = param(
        5.0, ge=0, unit="seconds", live=True,
        doc="Repeated warnings about bad input are logged at most once per this many seconds.")
    registration_check_period: float = param(
        10.0, ge=0, unit="seconds",
        doc="Every this many seconds the worker scores the registration on the pair it just published "
        "(frames.registration.alignment_score at 160 px: a few ms at 640x480). When the median score of the last 3 "
        "checks is not above 0, those pairs are refined as `taseg bag info` checks a recording (~0.2 s a pair): "
        "diagnostics show the score and the offset and turn WARN when it is 4 px or more (a camera knocked out of "
        "place). 0 turns the check off.")

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any], base: "NodeParams | None" = None) -> "NodeParams":
        """NodeParams (or `base` changed) from ROS parameter values: ints pass where doubles are
        expected, arrays come as array.array, an empty array as None (it has no declared type) or as
        YAML's null, which rcl reads as a string ('null', '~'). Types and limits are checked here;
        validate() adds the checks across parameters."""
        lists = {name for name, default in cls.defaults().items() if isinstance(default, list)}
        values = {name: [] if name in lists and no_value(value) else value for name, value in values.items()}
        return from_mapping(cls, values, base=base, style="parameter")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def defaults(cls) -> dict:
        return dataclasses.asdict(cls())

    def validate(self) -> None:
        """Raise ValueError naming the first bad parameter."""
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"parameter '{name}' = {getattr(self, name)!r}: {why}")

        if not self.checkpoint:
            raise bad("checkpoint", "required: the path of a TASeg checkpoint (taseg init/train writes one)")
        device = self.device.strip().lower()
        # gpu/npu (OpenVINO) and tensorrt (ONNX Runtime's TensorRT provider): the runtime checks the pairing.
        if not (device in ("auto", "cpu", "cuda", "gpu", "npu", "tensorrt") or (device.startswith("cuda:") and device[5:].isdigit())):
            raise bad("device", f"expected {DEVICES_HINT}")
        check_fields(self, style="parameter")
        problem = max_input_size_problem(self.max_input_size)
        if problem:
            raise bad("max_input_size", problem)
        if not self.time_reset > self.slop:
            raise bad("time_reset", f"must be larger than slop ({self.slop} s)")
        if len(self.thermal_range) != 2:
            raise bad("thermal_range", "expected [low, high]")
        if len(self.thermal_percentiles) != 2:
            raise bad("thermal_percentiles", "expected [low, high]")
        try:
            self.thermal_norm()
        except ValueError as exc:
            raise InputError(f"thermal normalisation parameters: {exc}") from exc
        self.check_registration()

    def check_registration(self) -> None:
        """thermal_homography and thermal_homography_size (ValueError naming the bad one)."""
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"parameter '{name}' = {getattr(self, name)!r}: {why}")

        if len(self.thermal_homography) not in (0, 9):
            raise bad("thermal_homography", "expected 9 numbers (3x3 row-major, thermal px -> RGB px) or []")
        if self.thermal_homography:
            try:
                validate_homography(self.thermal_homography)  # finite, h33 != 0, invertible
            except ValueError as exc:
                raise bad("thermal_homography", str(exc).removeprefix("thermal homography: ")) from None
        size = self.thermal_homography_size
        whole = all(isinstance(v, (int, float)) and not isinstance(v, bool) and int(v) == v > 0 for v in size)
        if size and (len(size) != 4 or not whole):
            raise bad("thermal_homography_size", "expected [thermal width, height, RGB width, height] or []")

    def refuse_change(self, changes: Mapping[str, Any], state: str, node: str) -> str | None:
        """Why `ros2 param set` of ``changes`` (ROS values) on a node in lifecycle ``state`` must be
        refused, or None. Each value is checked against its row in every state; a configured node
        refuses the parameters read at configure (saying how to change them) and checks the live
        ones across parameters, as configure does."""
        fixed = [name for name in changes if name not in LIVE_PARAMETERS]
        if fixed and state != "unconfigured":
            steps = "deactivate, then cleanup" if state == "active" else "cleanup"
            return (f"{', '.join(fixed)}: read at configure, and the node is {state}; change it while unconfigured: "
                    f"ros2 lifecycle set {node} {steps}; set it; configure; activate")
        try:
            changed = NodeParams.from_parameters(changes, base=self)
            if state != "unconfigured":
                changed.validate()
        except ValueError as exc:
            return str(exc)
        return None

    def thermal_norm(self) -> ThermalNormalization:
        low, high = self.thermal_range
        return ThermalNormalization(
            mode=self.thermal_normalization,
            low=float(low),
            high=float(high),
            percentiles=(float(self.thermal_percentiles[0]), float(self.thermal_percentiles[1])),
        )

    def frame_settings(self):
        """The per-frame pipeline's settings (``frames.settings.FrameSettings``) from these parameters."""
        size = tuple(int(v) for v in self.thermal_homography_size) or None
        return FrameSettings(self.thermal_norm(), self.homography(), self.overlay_alpha, size)

    def homography(self) -> np.ndarray | None:
        if not self.thermal_homography:
            return None
        return np.asarray(self.thermal_homography, dtype=np.float64).reshape(3, 3)


PARAMETERS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(NodeParams)}
# Parameters a running node applies to the next frame (`ros2 param set`); the others are read at
# configure (model, device, topics, QoS, pairing) and are read-only to `ros2 param set`.
LIVE_PARAMETERS = frozenset(name for name, f in PARAMETERS.items() if f.metadata["live"])


def launch_value(name: str, text: str) -> Any:
    """A launch argument's text (`name:=text`) as the value of node parameter ``name`` (or rclpy's
    ``use_sim_time``), checked against its row: text parameters as given, the others read as YAML;
    a ValueError naming the argument and the expected form otherwise."""
    default = False if name == "use_sim_time" else NodeParams.defaults()[name]
    try:
        value = text if isinstance(default, str) else parse_yaml(text, f"launch argument {name}")
        if name == "use_sim_time":
            if not isinstance(value, bool):
                raise ValueError(f"parameter 'use_sim_time' = {text!r}: expected true or false")
            return value
        return getattr(NodeParams.from_parameters({name: value}), name)
    except ValueError as exc:
        raise ValueError(f"launch argument {name}:={text}: {exc}") from None


def description(name: str) -> str:
    """What ``ros2 param describe`` says of a parameter: its doc, its limits and when it applies."""
    f = PARAMETERS[name]
    limits = limits_of(f)
    extra = []
    if limits is not None and limits.choices:
        extra.append(f"one of: {', '.join(map(str, limits.choices))}")
    elif _has_range(limits):
        extra.append(f"range: {limits.range_text(False)}")
    extra.append("applies to the next frame" if f.metadata["live"] else "read at configure: set it while unconfigured")
    return f"{f.metadata['doc']} [{'; '.join(extra)}]"


def _has_range(limits) -> bool:
    return limits is not None and any(v is not None for v in (limits.ge, limits.gt, limits.le, limits.lt))


def render_config_yaml() -> str:
    """config/taseg.yaml as it must read: every parameter with its default and its description,
    generated from NodeParams (test_ros_logic checks the shipped file against it)."""
    import textwrap

    import yaml

    lines = [line for line in _CONFIG_HEADER.splitlines()]
    lines += ["/**:", "  ros__parameters:"]
    for name, f in PARAMETERS.items():
        if f.metadata["section"]:
            if lines[-1] != "  ros__parameters:":
                lines.append("")
            lines.append(f"    # --- {f.metadata['section']} " + "-" * (88 - 11 - len(f.metadata["section"])))
        text = f.metadata["doc"] + ("" if f.metadata["live"] else " (Read at configure.)")
        lines += ["    # " + line for line in textwrap.wrap(text, 92)]
        value = yaml.safe_dump(getattr(NodeParams(), name), default_flow_style=True).strip().removesuffix("\n...").strip()
        lines.append(f"    {name}: {value}")
    return "\n".join(lines) + "\n"


_CONFIG_HEADER = """\
# Parameters of the TASeg segmentation node (taseg_node). Every value here is also the node's
# built-in default; override any of them with `--ros-args -p name:=value`, a copy of this file
# (`--params-file` / the launch file's `params_file` argument) or launch arguments.
# `ros2 param describe /taseg NAME` gives the same descriptions with their limits. Generated from
# taseg_ros/ros/params.py (python -m taseg_ros.ros.params > config/taseg.yaml); a test keeps them equal.
# Parameters marked "Read at configure" can be set while the node is unconfigured (deactivate and
# clean it up first: `ros2 lifecycle set /taseg cleanup`) and are refused while it is configured or
# active; the others apply to the next frame.
#
# Inputs (relative names, remap them): rgb/image and thermal/image (sensor_msgs/Image), or
# rgb/image/compressed and thermal/image/compressed with the *_transport parameters.
# Outputs: ~/labels (mono8), ~/colorized (rgb8), ~/overlay (rgb8), ~/confidence (32FC1 or mono8,
# optional), each also as <topic>/compressed (JPEG; labels PNG); ~/label_info (vision_msgs/LabelInfo)
# and ~/class_info (std_msgs/String JSON), both transient local; ~/debug/processing_time_ms and
# ~/debug/pipeline_latency_ms (std_msgs/Float64); /diagnostics."""


def resolve_checkpoint(path: str) -> Path:
    """A checkpoint path as given, or relative to the models folder (``TASEG_MODELS_DIR``)."""
    candidate = Path(path).expanduser()
    if candidate.is_file() or candidate.is_absolute():
        return candidate
    in_models = models_dir() / candidate
    return in_models if in_models.is_file() else candidate


# --- parameters files ------------------------------------------------------------------------------
# `taseg bag calibrate` / `bag refine` write the registration as a ROS 2 parameters file for the node
# (name "taseg" in any namespace, as launch/taseg.launch.py names it); `--thermal-homography FILE`
# of the bag tools reads the same file (or config/taseg.yaml, or any params file with the key).
PARAMS_NODE_KEY = "/**/taseg"


def homography_params_text(homography: np.ndarray, comments: list[str], size: tuple[int, ...] | None = None) -> str:
    """A ROS 2 parameters file setting ``thermal_homography`` (9 numbers, row-major) and, when given,
    ``thermal_homography_size`` (thermal W, H, RGB W, H it was made for), led by ``comments`` (each
    line prefixed with '# ')."""
    # repr: every value a double with a decimal point or exponent ("2.0", not "2"); rcl's parser
    # types an array by its elements and rejects [1.88, 22, ...] mixing doubles and integers.
    numbers = ", ".join(repr(float(v)) for v in np.asarray(homography, np.float64).ravel())
    # safe_text: a comment names the recording's topics; a line break in one would start a YAML line
    head = "".join(f"# {safe_text(line, limit=None)}\n" if line else "#\n" for line in comments)
    sizes = "" if size is None else f"    thermal_homography_size: [{', '.join(str(int(v)) for v in size)}]\n"
    return f"{head}{PARAMS_NODE_KEY}:\n  ros__parameters:\n    thermal_homography: [{numbers}]\n{sizes}"


def homography_from_params_file(path: str | Path) -> np.ndarray:
    """The ``thermal_homography`` of a ROS 2 parameters file (``registration_from_params_file``)."""
    return registration_from_params_file(path)[0]


def registration_from_params_file(path: str | Path) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """(``thermal_homography``, ``thermal_homography_size`` or None) of a ROS 2 parameters file (any
    node entry holding them; they must agree), checked as the node checks them; InputError naming
    the file and what is wrong."""
    path = Path(path)
    try:
        data = read_yaml(path)
    except (OSError, UnicodeDecodeError, ConfigError) as exc:
        raise InputError(f"{path}: cannot read a parameters file ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    found = []
    for node, entry in (data or {}).items() if isinstance(data, dict) else ():
        params = entry.get("ros__parameters") if isinstance(entry, dict) else None
        if isinstance(params, dict) and params.get("thermal_homography") not in (None, []):
            found.append((node, params["thermal_homography"], params.get("thermal_homography_size") or []))
    if not found:
        raise InputError(f"{path}: no '<node>: ros__parameters: thermal_homography: [9 numbers]' in it "
                         "(`taseg bag calibrate` writes one)")
    if any((list(h), list(s)) != (list(found[0][1]), list(found[0][2])) for _, h, s in found[1:]):
        raise InputError(f"{path}: {', '.join(n for n, *_ in found)} set different thermal_homography values")
    node, homography, size = found[0]
    try:
        params = NodeParams(thermal_homography=list(homography), thermal_homography_size=list(size))
        params.check_registration()
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: {node}: {str(exc).removeprefix('thermal homography: ')}") from None
    return params.homography(), params.frame_settings().homography_size

if __name__ == "__main__":
    print(render_config_yaml(), end="")
