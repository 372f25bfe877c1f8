"""What a ROS 2 user types, run for real: `colcon build`, `ros2 launch taseg_ros taseg.launch.py`
with namespace, topic remaps and a parameter override, then `ros2 node|param|lifecycle|topic` on
the running node, frames published over DDS, and Ctrl-C.

The `ros2`/launch tools are the upstream ones from ../shared/ros2_tools (installed by .ci/run,
see its README); without them, colcon or rclpy the module skips. It claims a ROS_DOMAIN_ID of its own
(ros.domains) so concurrent DDS tests and test runs on the machine do not meet,
and `--no-daemon` so no ros2 daemon outlives it.

Never flaky on a loaded machine: every wait is a condition polled up to a generous deadline. Each
`ros2` call discovers the graph from scratch (no daemon), and its `--spin-time` may end before the
node is seen ("Node not found"): reads are repeated until they give the expected answer, and
transitions until `ros2 lifecycle get` reports the target state.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("launch_ros", reason="the ROS 2 launch tools are not installed (../shared/ros2_tools/install.sh)")

from sensor_msgs.msg import Image  # noqa: E402

from taseg_ros.ros.domains import claim_domain  # noqa: E402

BIN = Path(sys.executable).parent
ROS2 = shutil.which("ros2", path=str(BIN))
COLCON = shutil.which("colcon", path=str(BIN))
DOMAIN_ID = claim_domain()
NAMESPACE, RGB_TOPIC, THERMAL_TOPIC = "front", "/cam/front/rgb", "/cam/front/thermal"
NODE = f"/{NAMESPACE}/taseg"
# Each call discovers the graph from scratch for 2 s (local discovery takes well under that), and is
# repeated when it did not find the node.
DISCOVERY = ["--no-daemon", "--spin-time", "2"]
WAIT = 120.0  # seconds: generous upper bound for anything that should happen "soon" on a loaded machine

pytestmark = [
    pytest.mark.timeout(900),  # the module's fixture builds with colcon (up to 300 s) inside the first test
    pytest.mark.skipif(ROS2 is None or COLCON is None, reason="ros2 CLI or colcon not installed in this environment"),
]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def workspace_env(workspace: Path) -> dict[str, str]:
    """The environment a sourced colcon install gives (install/setup.bash), on this test's domain."""
    prefix = workspace / "install" / "taseg_ros"
    site = next((prefix / "lib").glob("python3*/site-packages"))
    return {
        **os.environ,
        "ROS_DOMAIN_ID": str(DOMAIN_ID),
        "AMENT_PREFIX_PATH": os.pathsep.join(filter(None, [str(prefix), os.environ.get("AMENT_PREFIX_PATH")])),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "RCUTILS_COLORIZED_OUTPUT": "0",
    }


class Ros2:
    """The `ros2` command line as a user types it, in a sourced workspace's environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def ros2(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([ROS2, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def ros2_until(self, args: tuple[str, ...], ok, what: str, timeout: float = WAIT) -> str:
        """`ros2 ARGS` + DISCOVERY, repeated until ``ok(output)``; the output that was."""
        outputs = []

        def attempt():
            done = self.ros2(*args, *DISCOVERY)
            outputs.append(done.stdout + done.stderr)
            return outputs[-1] if ok(outputs[-1]) else None

        try:
            return wait_until(attempt, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last output of `ros2 {' '.join(args)}`: {outputs[-1:]}") from None

    def lifecycle_to(self, transition: str, state: str, node: str = NODE) -> None:
        """`ros2 lifecycle set NODE TRANSITION` until it says so, or `ros2 lifecycle get` says STATE (a set
        that found no node, or whose reply was lost, is sent again; one that did its work is not repeated)."""
        checked = []

        def reached():
            if checked and self.ros2("lifecycle", "get", node, *DISCOVERY).stdout.startswith(state + " "):
                return True
            checked.append(True)
            return "Transitioning successful" in self.ros2("lifecycle", "set", node, transition, *DISCOVERY).stdout

        wait_until(reached, WAIT, f"{node} to be {state} after `ros2 lifecycle set {transition}`")

    def start(self, args: list[str], log_path: Path) -> "Process":
        """`ros2 ARGS` in the background (its own process group, so that Ctrl-C reaches all of it)."""
        return Process([ROS2, *args], self.env, log_path)


class Process:
    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path, self.log = log_path, open(log_path, "w")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def wait_active(self) -> None:
        wait_until(lambda: "active:" in self.output() or self.process.poll() is not None, 300, "the node to activate")
        assert self.process.poll() is None, self.output()[-3000:]

    def interrupt(self, timeout: float = WAIT) -> int:
        """Ctrl-C in the terminal: SIGINT to the whole process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.interrupt(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


class Launched(Ros2, Process):
    """`ros2 launch` of the colcon-installed package with namespace, remaps and two overrides."""

    def __init__(self, workspace: Path, checkpoint: Path) -> None:
        self.workspace = workspace
        Ros2.__init__(self, workspace_env(workspace))
        Process.__init__(self, [ROS2, "launch", "taseg_ros", "taseg.launch.py", f"checkpoint:={checkpoint}",
                                f"namespace:={NAMESPACE}", f"rgb_topic:={RGB_TOPIC}", f"thermal_topic:={THERMAL_TOPIC}",
                                "overlay_alpha:=0.3", "slop:=0.05"], self.env, workspace / "launch.log")


class Camera:
    """A camera in this process (ros.client.ToolNode) publishing RGB/thermal pairs at ~5 Hz (new random
    frames, or one fixed pair again and again with a 32x24 thermal frame) and recording the outputs on
    ``record``."""

    def __init__(self, rgb_topic: str = RGB_TOPIC, thermal_topic: str = THERMAL_TOPIC, fixed: bool = False,
                 record: tuple[str, ...] = (f"{NODE}/labels",)) -> None:
        from taseg_ros.ros.client import ToolNode

        self.ros = ToolNode(f"camera_{random.randint(0, 10**6)}", domain_id=DOMAIN_ID)
        self.node = self.ros.node
        self.rgb = self.ros.publisher(rgb_topic, "sensor_msgs/msg/Image")
        self.thermal = self.ros.publisher(thermal_topic, "sensor_msgs/msg/Image")
        self.fixed = fixed
        self.received: dict[str, list] = {topic: [] for topic in record}
        for topic in record:
            self.ros.subscribe(topic, "sensor_msgs/msg/Image", self.received[topic].append)
        self.labels = self.received.get(f"{NODE}/labels", [])
        self.ros.start()
        self.stop = threading.Event()
        self.streamer = threading.Thread(target=self._stream, daemon=True)
        self.streamer.start()

    def _stream(self) -> None:
        rng = np.random.default_rng(0)
        fixed = (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (24, 32), dtype=np.uint8))
        while not self.stop.is_set():
            stamp = self.ros.now()
            rgb, thermal = fixed if self.fixed else (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
                                                     rng.integers(0, 256, (48, 64), dtype=np.uint8))
            for publisher, encoding, array in ((self.rgb, "rgb8", rgb), (self.thermal, "mono8", thermal)):
                msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding,
                            step=array.shape[1] * (3 if array.ndim == 3 else 1))
                msg.header.stamp, msg.header.frame_id = stamp, encoding
                msg.data = array.tobytes()
                publisher.publish(msg)
            self.stop.wait(0.2)

    def close(self) -> None:
        self.stop.set()
        self.streamer.join(timeout=10)
        self.ros.close()


@pytest.fixture(scope="module")
def launched(tmp_path_factory, tiny_checkpoint):
    from test_packaging import copy_tree  # the tracked files, as a clean checkout has them

    workspace = tmp_path_factory.mktemp("colcon_ws")
    copy_tree(workspace / "src" / "taseg_ros")
    built = subprocess.run([COLCON, "build", "--packages-select", "taseg_ros"], cwd=workspace,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    launch = Launched(workspace, tiny_checkpoint)
    try:
        launch.wait_active()
        yield launch
    finally:
        launch.close()


@pytest.fixture(scope="module")
def camera(launched):
    cam = Camera()
    yield cam
    cam.close()


def test_launch_puts_the_node_in_the_namespace_with_remaps_and_overrides(launched):
    launched.ros2_until(("node", "list"), lambda out: NODE in out.split(), f"{NODE} in `ros2 node list`")
    # discovery of the node's entities may lag its name: repeat until its subscriptions are listed
    info = launched.ros2_until(("node", "info", NODE), lambda out: RGB_TOPIC in out and THERMAL_TOPIC in out
                               and f"{NODE}/labels" in out, f"`ros2 node info {NODE}` with its topics")
    subscribers = info.split("Subscribers:")[1].split("Publishers:")[0]
    assert f"{RGB_TOPIC}: sensor_msgs/msg/Image" in subscribers and f"{THERMAL_TOPIC}: sensor_msgs/msg/Image" in subscribers
    assert f"{NODE}/labels: sensor_msgs/msg/Image" in info
    for name, expected in (("overlay_alpha", "Double value is: 0.3"), ("slop", "Double value is: 0.05")):
        got = launched.ros2_until(("param", "get", NODE, name), answered, f"`ros2 param get {NODE} {name}`")
        assert got.strip() == expected, got


def topic_hz_rates(launched, topic: str, wanted: int, timeout: float) -> tuple[list[float], list[str]]:
    """The rates one `ros2 topic hz` run prints (read by a thread: a silent process never blocks the test)."""
    # `topic hz` subscribes from its own node (no daemon option)
    hz = subprocess.Popen([ROS2, "topic", "hz", topic, "--window", "5", "--spin-time", "5"], env=launched.env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(hz.stdout), daemon=True)
    reader.start()

    def rates() -> list[float]:
        return [float(v) for line in list(lines) for v in re.findall(r"average rate: ([\d.]+)", line)]

    try:
        wait_until(lambda: len(rates()) >= wanted or hz.poll() is not None, timeout, f"`ros2 topic hz {topic}`")
    except AssertionError:
        pass  # the caller decides, from what was printed
    finally:
        if hz.poll() is None:
            os.killpg(hz.pid, signal.SIGINT)
        hz.wait(timeout=WAIT)
        reader.join(timeout=10)
    return rates(), lines


def test_published_pairs_are_answered_at_the_camera_rate(launched, camera):
    wait_until(lambda: len(camera.labels) >= 2, WAIT, "labels for the published pairs")
    labels = camera.labels[-1]
    assert (labels.height, labels.width, labels.encoding) == (48, 64, "mono8")
    deadline = time.monotonic() + 2 * WAIT
    rates, lines = [], []
    while len(rates) < 2 and time.monotonic() < deadline:  # a run that did not discover the topic is repeated
        rates, lines = topic_hz_rates(launched, f"{NODE}/labels", 2, WAIT)
    assert rates, "`ros2 topic hz` printed no rate: " + "".join(lines)[-2000:]
    assert 0.5 < rates[-1] < 10.0  # the camera publishes ~5 pairs/s; each is answered once (a loaded CI machine may drop some)


def answered(out: str) -> bool:
    """A `ros2 param` run that reached the node (setting a value again is harmless: the calls are idempotent)."""
    return "Node not found" not in out and ("Set parameter" in out or "Setting parameter" in out or "value is:" in out)


def test_param_set_applies_live_parameters_and_refuses_configure_time_ones(launched):
    done = launched.ros2_until(("param", "set", NODE, "overlay_alpha", "0.6"), answered, "`ros2 param set overlay_alpha`")
    assert done.strip() == "Set parameter successful", done
    got = launched.ros2_until(("param", "get", NODE, "overlay_alpha"), answered, "`ros2 param get overlay_alpha`")
    assert got.strip() == "Double value is: 0.6"
    text = launched.ros2_until(("param", "set", NODE, "device", "cuda"), answered, "`ros2 param set device`")
    assert "Setting parameter failed" in text and "device: read at configure, and the node is active" in text, text
    got = launched.ros2_until(("param", "get", NODE, "device"), answered, "`ros2 param get device`")
    assert got.strip() == "String value is: auto"


def test_param_describe_explains_and_ros_refuses_out_of_range_values(launched):
    described = launched.ros2_until(("param", "describe", NODE, "overlay_alpha", "slop"),
                                    lambda out: "Parameter name: slop" in out, "`ros2 param describe`")
    alpha, slop = described.split("Parameter name: slop")
    assert "Weight of the class colours in ~/overlay" in alpha and "applies to the next frame" in alpha, described
    assert "Min value: 0.0" in alpha and "Max value: 1.0" in alpha, described
    assert "Largest stamp difference" in slop and "read at configure: set it while unconfigured" in slop, described
    text = launched.ros2_until(("param", "set", NODE, "overlay_alpha", "1.5"), answered, "`ros2 param set overlay_alpha 1.5`")
    assert "Setting parameter failed" in text and "range" in text, text
    got = launched.ros2_until(("param", "get", NODE, "overlay_alpha"), answered, "`ros2 param get overlay_alpha`")
    assert got.strip() != "Double value is: 1.5"


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_lifecycle_deactivate_stops_answers_and_activate_resumes_them(launched, camera):
    launched.lifecycle_to("deactivate", "inactive")
    inactive_since = camera.node.get_clock().now().nanoseconds
    # Frames stamped after the node reported inactive must never be answered; answers to earlier
    # frames may still arrive, at any delay (so no "answers in flight have arrived by now" sleep).
    time.sleep(2.0)  # ~10 pairs published to the inactive node
    late = [stamp_ns(m) for m in list(camera.labels) if stamp_ns(m) >= inactive_since]
    assert not late, f"{len(late)} pair(s) published while inactive were answered"
    count = len(camera.labels)
    launched.lifecycle_to("activate", "active")
    wait_until(lambda: len(camera.labels) > count + 2, WAIT, "answers after activate")


# --- issue 25: every parameter a launch argument, dump -> reload, a fixable configure, a model swap --


def test_every_node_parameter_is_a_launch_argument_and_a_typo_is_refused(launched):
    from taseg_ros.ros.params import NodeParams

    shown = launched.ros2("launch", "taseg_ros", "taseg.launch.py", "--show-args")
    assert shown.returncode == 0, shown.stderr
    missing = [name for name in NodeParams.names() if f"'{name}':" not in shown.stdout]
    assert not missing, f"parameters that are not launch arguments: {missing}"
    for args, refusal in (
        (("input_qso:=reliable",), "unknown launch argument 'input_qso' (did you mean 'input_qos'?)"),
        (("slop:=abc",), "launch argument slop:=abc: parameter 'slop' = 'abc': expected a value like 0.02"),
    ):
        done = launched.ros2("launch", "taseg_ros", "taseg.launch.py", "checkpoint:=/nowhere.safetensors", *args)
        assert done.returncode != 0 and refusal in done.stdout + done.stderr, done.stdout + done.stderr
        assert "process started" not in done.stdout  # refused before any node ran


def dumped(ros2: Ros2, node: str) -> str:
    return ros2.ros2_until(("param", "dump", node), lambda out: "ros__parameters" in out, f"`ros2 param dump {node}`")


def latest(camera: Camera, topic: str, after_ns: int = 0):
    """The newest message on `topic` stamped after `after_ns`, once there is one."""
    def found():
        msgs = [m for m in list(camera.received[topic]) if stamp_ns(m) > after_ns]
        return msgs[-1] if msgs else None

    return wait_until(found, WAIT, f"an output on {topic}")


def test_param_dump_reloads_unchanged_through_ros2_run_and_the_launch_file(launched, thermal_checkpoint, tmp_path):
    """Two nodes tuned live, dumped, stopped and started again from their dumps: one by `ros2 run
    --params-file` with a thermal_homography set, one by the launch file's params_file with it empty.
    Same parameters (the dumps are equal) and the same outputs for the same fixed pair."""
    ros2 = Ros2(launched.env)
    homography = "[1.5, 0.0, 4.0, 0.0, 1.5, 6.0, 0.0, 0.0, 1.0]"  # the 32x24 thermal frame onto part of the 64x48 RGB
    remaps = ["-r", "rgb/image:=/reload_cam/rgb", "-r", "thermal/image:=/reload_cam/thermal"]
    nodes = {"/reload_a/taseg": ["run", "taseg_ros", "taseg_node", "--ros-args", "-r", "__ns:=/reload_a", *remaps],
             "/reload_b/taseg": ["launch", "taseg_ros", "taseg.launch.py", "namespace:=reload_b",
                                 "rgb_topic:=/reload_cam/rgb", "thermal_topic:=/reload_cam/thermal"]}
    first_args = {"/reload_a/taseg": ["-p", f"checkpoint:={thermal_checkpoint}", "-p", f"thermal_homography:={homography}"],
                  "/reload_b/taseg": [f"checkpoint:={thermal_checkpoint}", "thermal_normalization:=minmax"]}
    overlays = [f"{node}/overlay" for node in nodes]
    camera = Camera("/reload_cam/rgb", "/reload_cam/thermal", fixed=True, record=tuple(overlays))
    running = {node: ros2.start(args + first_args[node], tmp_path / f"{node.split('/')[1]}_1.log")
               for node, args in nodes.items()}
    try:
        for node in nodes:
            running[node].wait_active()
        for node, (name, value) in zip(nodes, (("overlay_alpha", "0.8"), ("jpeg_quality", "70"))):  # tuned live
            assert "Set parameter successful" in ros2.ros2_until(("param", "set", node, name, value), answered,
                                                                 f"`ros2 param set {node} {name}`")
        dumps = {node: dumped(ros2, node) for node in nodes}
        assert "thermal_homography:\n    - 1.5\n" in dumps["/reload_a/taseg"]
        assert "thermal_homography: []\n" in dumps["/reload_b/taseg"] and "null" not in dumps["/reload_b/taseg"]
        before = {topic: latest(camera, topic, camera.node.get_clock().now().nanoseconds) for topic in overlays}
        for node in nodes:
            assert running.pop(node).interrupt() == 0
        files = {}
        for node, text in dumps.items():
            files[node] = tmp_path / f"{node.split('/')[1]}.yaml"
            files[node].write_text(text)
        restart_ns = camera.node.get_clock().now().nanoseconds
        running = {"/reload_a/taseg": ros2.start(nodes["/reload_a/taseg"] + ["--params-file", str(files["/reload_a/taseg"])],
                                                 tmp_path / "reload_a_2.log"),
                   "/reload_b/taseg": ros2.start(nodes["/reload_b/taseg"] + [f"params_file:={files['/reload_b/taseg']}"],
                                                 tmp_path / "reload_b_2.log")}
        for node in nodes:
            running[node].wait_active()
            assert dumped(ros2, node) == dumps[node], node
        for topic in overlays:
            after = latest(camera, topic, restart_ns)
            assert bytes(after.data) == bytes(before[topic].data), topic
        assert bytes(before[overlays[0]].data) != bytes(before[overlays[1]].data)  # the parameters made a difference
    finally:
        for process in running.values():
            process.close()
        camera.close()


def test_a_failed_configure_is_fixed_and_the_model_swapped_with_ros2_lifecycle_and_param(launched, tiny_checkpoint,
                                                                                         tmp_path):
    """autostart false and a mistyped checkpoint: configure fails and the node stays unconfigured;
    `ros2 param set` fixes it. Then a model swap (deactivate, cleanup, set, configure, activate) to a
    model with another class list, which a late-joining LabelInfo subscriber sees."""
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not installed (../shared/ros2_tools)")
    from taseg_ros.model.checkpoint import init_checkpoint

    other = tmp_path / "pst900.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained: says so
        init_checkpoint("tiny", "pst900", other)  # 5 classes against MFNet's 9
    ros2, node = Ros2(launched.env), "/swap/taseg"
    process = ros2.start(["run", "taseg_ros", "taseg_node", "--ros-args", "-r", "__ns:=/swap", "-p", "autostart:=false",
                          "-p", f"checkpoint:={tmp_path / 'typo.safetensors'}"], tmp_path / "swap.log")

    def class_names() -> list[str]:
        out = ros2.ros2_until(("topic", "echo", f"{node}/label_info", "vision_msgs/msg/LabelInfo", "--once",
                               "--qos-reliability", "reliable", "--qos-durability", "transient_local", "--timeout", "20"),
                              lambda text: "class_map:" in text, "LabelInfo for a late subscriber")
        return re.findall(r"class_name: (\S+)", out)

    try:
        failed = ros2.ros2_until(("lifecycle", "set", node, "configure"), lambda out: "Transitioning" in out, "configure")
        assert "Transitioning failed" in failed  # back in unconfigured (rcl's failure path): the configure below proves it
        assert f"configure failed: checkpoint not found: {tmp_path / 'typo.safetensors'}" in process.output()
        fixed = ros2.ros2_until(("param", "set", node, "checkpoint", str(tiny_checkpoint)), answered, "`param set`")
        assert fixed.strip() == "Set parameter successful"
        ros2.lifecycle_to("configure", "inactive", node)
        ros2.lifecycle_to("activate", "active", node)
        first = class_names()
        assert len(first) == 9 and first[0] == "unlabeled"

        refused = ros2.ros2_until(("param", "set", node, "checkpoint", str(other)), answered, "`param set` while active")
        assert "Setting parameter failed: checkpoint: read at configure, and the node is active" in refused
        for transition, state in (("deactivate", "inactive"), ("cleanup", "unconfigured")):
            ros2.lifecycle_to(transition, state, node)
        swapped = ros2.ros2_until(("param", "set", node, "checkpoint", str(other)), answered, "`param set` unconfigured")
        assert swapped.strip() == "Set parameter successful"
        for transition, state in (("configure", "inactive"), ("activate", "active")):
            ros2.lifecycle_to(transition, state, node)
        second = class_names()
        assert len(second) == 5 and second != first[:5]
    finally:
        process.close()


def test_ros2_run_from_the_install_names_a_missing_dependency_in_one_line(launched, tmp_path):
    """The colcon install's executable runs the workspace venv's Python (ROS 2's venv + colcon
    convention); without torch it says which package is missing and how to install it, in one line."""
    script = launched.workspace / "install" / "taseg_ros" / "lib" / "taseg_ros" / "taseg_node"
    interpreter = Path(script.read_text().splitlines()[0].removeprefix("#!").strip())
    assert interpreter.parent == BIN, interpreter
    shadow = tmp_path / "no_torch"
    shadow.mkdir()
    (shadow / "torch.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    env = {**launched.env, "PYTHONPATH": os.pathsep.join([str(shadow), launched.env["PYTHONPATH"]])}
    done = subprocess.run([ROS2, "run", "taseg_ros", "taseg_node"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines()
             if line.strip() and not line.startswith("[ros2run]")]  # ros2run's own line: "Process exited with failure 1"
    assert len(lines) == 1 and "Traceback" not in done.stderr, lines
    assert lines[0].startswith("taseg_node: cannot start: the Python package 'torch>=2.1' is not installed"), lines
    assert "rosdep install --from-paths src --ignore-src -y --as-root pip:false" in lines[0]


def test_ctrl_c_stops_the_launch_cleanly(launched):
    assert launched.interrupt() == 0, launched.output()[-3000:]
    assert "process has finished cleanly" in launched.output(), launched.output()[-3000:]
    assert "Traceback" not in launched.output()  # a second SIGINT during the node's clean-up printed one
