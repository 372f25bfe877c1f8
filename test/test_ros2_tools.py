"""What a ROS 2 user types, run for real: `colcon build`, `ros2 launch taseg_ros taseg.launch.py`
with namespace, topic remaps and a parameter override, then `ros2 node|param|lifecycle|topic` on
the running node, frames published over DDS, and Ctrl-C.

The `ros2`/launch tools are the upstream ones from ../shared/ros2_tools (installed by .ci/run,
see its README); without them, colcon or rclpy the module skips. It uses its own ROS_DOMAIN_ID
(201..232; test_ros_node.py uses 100..200) so concurrent DDS tests on the machine do not meet,
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
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("launch_ros", reason="the ROS 2 launch tools are not installed (../shared/ros2_tools/install.sh)")

from sensor_msgs.msg import Image  # noqa: E402

BIN = Path(sys.executable).parent
ROS2 = shutil.which("ros2", path=str(BIN))
COLCON = shutil.which("colcon", path=str(BIN))
DOMAIN_ID = random.randint(201, 232)
NAMESPACE, RGB_TOPIC, THERMAL_TOPIC = "front", "/cam/front/rgb", "/cam/front/thermal"
NODE = f"/{NAMESPACE}/taseg"
DISCOVERY = ["--no-daemon", "--spin-time", "5"]
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


class Launched:
    """`ros2 launch` of the colcon-installed package, and the environment a sourced install gives."""

    def __init__(self, workspace: Path, checkpoint: Path) -> None:
        prefix = workspace / "install" / "taseg_ros"
        site = next((prefix / "lib").glob("python3*/site-packages"))
        self.env = {
            **os.environ,
            "ROS_DOMAIN_ID": str(DOMAIN_ID),
            "AMENT_PREFIX_PATH": os.pathsep.join(filter(None, [str(prefix), os.environ.get("AMENT_PREFIX_PATH")])),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
            "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
            "PYTHONUNBUFFERED": "1",
            "RCUTILS_COLORIZED_OUTPUT": "0",
        }
        self.log_path = workspace / "launch.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [ROS2, "launch", "taseg_ros", "taseg.launch.py", f"checkpoint:={checkpoint}", f"namespace:={NAMESPACE}",
             f"rgb_topic:={RGB_TOPIC}", f"thermal_topic:={THERMAL_TOPIC}", "overlay_alpha:=0.3", "slop:=0.05"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,  # its own group: Ctrl-C
        )

    def ros2(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([ROS2, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def ros2_until(self, args: tuple[str, ...], ok, what: str, timeout: float = WAIT) -> str:
        """`ros2 ARGS --no-daemon --spin-time 5`, repeated until ``ok(output)``; the output that was."""
        outputs = []

        def attempt():
            done = self.ros2(*args, *DISCOVERY)
            outputs.append(done.stdout + done.stderr)
            return outputs[-1] if ok(outputs[-1]) else None

        try:
            return wait_until(attempt, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last output of `ros2 {' '.join(args)}`: {outputs[-1:]}") from None

    def lifecycle_to(self, transition: str, state: str) -> None:
        """`ros2 lifecycle set NODE TRANSITION` until `ros2 lifecycle get` says STATE (a set that found no node,
        or whose reply was lost, is sent again; one that did its work is not repeated)."""
        def reached():
            if self.ros2("lifecycle", "get", NODE, *DISCOVERY).stdout.startswith(state + " "):
                return True
            self.ros2("lifecycle", "set", NODE, transition, *DISCOVERY)
            return False

        wait_until(reached, WAIT, f"{NODE} to be {state} after `ros2 lifecycle set {transition}`")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

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


class Camera:
    """An rclpy node in this process publishing RGB/thermal pairs on the remapped topics at ~5 Hz
    and recording the node's ~/labels."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.node = rclpy.create_node("camera", context=self.context)
        self.rgb = self.node.create_publisher(Image, RGB_TOPIC, 10)
        self.thermal = self.node.create_publisher(Image, THERMAL_TOPIC, 10)
        self.labels = []
        self.node.create_subscription(Image, f"{NODE}/labels", self.labels.append, 10)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.executor.spin, daemon=True),
                        threading.Thread(target=self._stream, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _stream(self) -> None:
        rng = np.random.default_rng(0)
        while not self.stop.is_set():
            stamp = self.node.get_clock().now().to_msg()
            for publisher, encoding, array in (
                (self.rgb, "rgb8", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)),
                (self.thermal, "mono8", rng.integers(0, 256, (48, 64), dtype=np.uint8)),
            ):
                msg = Image(height=48, width=64, encoding=encoding, step=array.shape[1] * (3 if array.ndim == 3 else 1))
                msg.header.stamp, msg.header.frame_id = stamp, encoding
                msg.data = array.tobytes()
                publisher.publish(msg)
            self.stop.wait(0.2)

    def close(self) -> None:
        self.stop.set()
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.context.destroy()  # the DDS participant goes now, not at garbage collection


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
        wait_until(lambda: "active:" in launch.output() or launch.process.poll() is not None, 300, "the node to activate")
        assert launch.process.poll() is None, launch.output()[-3000:]
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
    assert "Setting parameter failed" in text and "read-only" in text, text
    got = launched.ros2_until(("param", "get", NODE, "device"), answered, "`ros2 param get device`")
    assert got.strip() == "String value is: auto"


def test_param_describe_explains_and_ros_refuses_out_of_range_values(launched):
    described = launched.ros2_until(("param", "describe", NODE, "overlay_alpha", "slop"),
                                    lambda out: "Parameter name: slop" in out, "`ros2 param describe`")
    alpha, slop = described.split("Parameter name: slop")
    assert "Weight of the class colours in ~/overlay" in alpha and "applies to the next frame" in alpha, described
    assert "Min value: 0.0" in alpha and "Max value: 1.0" in alpha, described
    assert "Largest stamp difference" in slop and "Read only: true" in slop, described
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


def test_ctrl_c_stops_the_launch_cleanly(launched):
    assert launched.interrupt() == 0, launched.output()[-3000:]
    assert "process has finished cleanly" in launched.output(), launched.output()[-3000:]
    assert "Traceback" not in launched.output()  # a second SIGINT during the node's clean-up printed one
