"""What a ROS 2 user types, run for real: `colcon build`, `ros2 launch taseg_ros taseg.launch.py`
with namespace, topic remaps and a parameter override, then `ros2 node|param|lifecycle|topic` on
the running node, frames published over DDS, and Ctrl-C.

The `ros2`/launch tools are the upstream ones from ../shared/ros2_tools (installed by .ci/run,
see its README); without them, colcon or rclpy the module skips. It uses its own ROS_DOMAIN_ID
(201..232; test_ros_node.py uses 100..200) so concurrent DDS tests on the machine do not meet,
and `--no-daemon` so no ros2 daemon outlives it. All waits are bounded.
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
DISCOVERY = ["--no-daemon", "--spin-time", "3"]

pytestmark = [
    pytest.mark.timeout(300),
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

    def ros2(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([ROS2, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def interrupt(self, timeout: float = 30) -> int:
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
        wait_until(lambda: "active:" in launch.output() or launch.process.poll() is not None, 90, "the node to activate")
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
    nodes = wait_until(lambda: NODE in launched.ros2("node", "list", *DISCOVERY).stdout.split(), 30, f"{NODE} in `ros2 node list`")
    assert nodes
    info = launched.ros2("node", "info", NODE, *DISCOVERY).stdout
    subscribers = info.split("Subscribers:")[1].split("Publishers:")[0]
    assert f"{RGB_TOPIC}: sensor_msgs/msg/Image" in subscribers and f"{THERMAL_TOPIC}: sensor_msgs/msg/Image" in subscribers
    assert f"{NODE}/labels: sensor_msgs/msg/Image" in info
    assert launched.ros2("param", "get", NODE, "overlay_alpha", *DISCOVERY).stdout.strip() == "Double value is: 0.3"
    assert launched.ros2("param", "get", NODE, "slop", *DISCOVERY).stdout.strip() == "Double value is: 0.05"


def test_published_pairs_are_answered_at_the_camera_rate(launched, camera):
    wait_until(lambda: len(camera.labels) >= 2, 60, "labels for the published pairs")
    labels = camera.labels[-1]
    assert (labels.height, labels.width, labels.encoding) == (48, 64, "mono8")
    # `topic hz` subscribes from its own node (no daemon option)
    hz = subprocess.Popen([ROS2, "topic", "hz", f"{NODE}/labels", "--window", "5", "--spin-time", "3"], env=launched.env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        rates, lines = [], []
        deadline = time.monotonic() + 60
        while len(rates) < 2 and time.monotonic() < deadline:
            line = hz.stdout.readline()
            if not line:
                break
            lines.append(line)
            rates += [float(v) for v in re.findall(r"average rate: ([\d.]+)", line)]
    finally:
        if hz.poll() is None:
            os.killpg(hz.pid, signal.SIGINT)
        hz.wait(timeout=20)
    assert rates, "`ros2 topic hz` printed no rate: " + "".join(lines)[-2000:]
    assert 0.5 < rates[-1] < 10.0  # the camera publishes ~5 pairs/s; each is answered once (a loaded CI machine may drop some)


def test_param_set_applies_live_parameters_and_refuses_configure_time_ones(launched):
    done = launched.ros2("param", "set", NODE, "overlay_alpha", "0.6", *DISCOVERY)
    assert done.stdout.strip() == "Set parameter successful", done.stdout + done.stderr
    assert launched.ros2("param", "get", NODE, "overlay_alpha", *DISCOVERY).stdout.strip() == "Double value is: 0.6"
    refused = launched.ros2("param", "set", NODE, "device", "cuda", *DISCOVERY)
    text = refused.stdout + refused.stderr
    assert "Setting parameter failed" in text and "read-only" in text, text
    assert launched.ros2("param", "get", NODE, "device", *DISCOVERY).stdout.strip() == "String value is: auto"


def test_param_describe_explains_and_ros_refuses_out_of_range_values(launched):
    described = launched.ros2("param", "describe", NODE, "overlay_alpha", "slop", *DISCOVERY).stdout
    alpha, slop = described.split("Parameter name: slop")
    assert "Weight of the class colours in ~/overlay" in alpha and "applies to the next frame" in alpha, described
    assert "Min value: 0.0" in alpha and "Max value: 1.0" in alpha, described
    assert "Largest stamp difference" in slop and "Read only: true" in slop, described
    refused = launched.ros2("param", "set", NODE, "overlay_alpha", "1.5", *DISCOVERY)
    text = refused.stdout + refused.stderr
    assert "Setting parameter failed" in text and "range" in text, text
    assert launched.ros2("param", "get", NODE, "overlay_alpha", *DISCOVERY).stdout.strip() != "Double value is: 1.5"


def test_lifecycle_deactivate_stops_answers_and_activate_resumes_them(launched, camera):
    done = launched.ros2("lifecycle", "set", NODE, "deactivate", *DISCOVERY)
    assert "Transitioning successful" in done.stdout, done.stdout + done.stderr
    assert launched.ros2("lifecycle", "get", NODE, *DISCOVERY).stdout.startswith("inactive")
    time.sleep(1.0)  # answers in flight arrive
    count = len(camera.labels)
    time.sleep(2.0)
    assert len(camera.labels) == count  # inactive: pairs are not answered
    done = launched.ros2("lifecycle", "set", NODE, "activate", *DISCOVERY)
    assert "Transitioning successful" in done.stdout, done.stdout + done.stderr
    assert launched.ros2("lifecycle", "get", NODE, *DISCOVERY).stdout.startswith("active")
    wait_until(lambda: len(camera.labels) > count + 2, 30, "answers after activate")


def test_ctrl_c_stops_the_launch_cleanly(launched):
    assert launched.interrupt() == 0, launched.output()[-3000:]
    assert "process has finished cleanly" in launched.output(), launched.output()[-3000:]
    assert "Traceback" not in launched.output()  # a second SIGINT during the node's clean-up printed one
