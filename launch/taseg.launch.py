"""Launch the TASeg segmentation node, optionally with RViz showing its overlay and labels.

    ros2 launch taseg_ros taseg.launch.py checkpoint:=/path/model.safetensors \\
        rgb_topic:=/camera/color/image_raw thermal_topic:=/thermal/image_raw namespace:=front rviz:=true

Parameters come from `params_file` (default: the package's config/taseg.yaml); the model
arguments below override single parameters of that file when given (an empty value keeps the
file's). With rgb_transport/thermal_transport:=compressed, give the base topic (without
"/compressed"): the node subscribes to <topic>/compressed.
"""
import os
import tempfile

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from taseg_ros.ros.params import NodeParams, description

PACKAGE = "taseg_ros"
NODE_NAME = "taseg"

# Launch arguments that override the node parameter of the same name (config/taseg.yaml). Their
# descriptions and types come from the node's parameter table (taseg_ros/ros/params.py), the one
# source config/taseg.yaml and `ros2 param describe` are made from.
PARAMETER_ARGUMENTS = ("checkpoint", "sam_checkpoint", "backend", "device", "precision", "rgb_transport",
                       "thermal_transport", "thermal_normalization", "slop", "overlay_alpha", "publish_confidence")


def _rviz_config_for(namespace: str) -> str:
    """The package's RViz config with its topics moved into the node's namespace."""
    source = os.path.join(get_package_share_directory(PACKAGE), "config", "taseg.rviz")
    prefix = "/" + namespace.strip("/") if namespace.strip("/") else ""
    with open(source, encoding="utf-8") as f:
        text = f.read().replace(f"/{NODE_NAME}/", f"{prefix}/{NODE_NAME}/")
    handle, path = tempfile.mkstemp(prefix="taseg_", suffix=".rviz")
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _launch_setup(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {}
    defaults = NodeParams.defaults()
    for name in PARAMETER_ARGUMENTS:
        value = arg(name)
        if value == "":
            continue
        kind = type(defaults[name])  # values are read as YAML ("0.5" a double, "true" a bool) except strings
        overrides[name] = value if kind is str else kind(yaml.safe_load(value))
    overrides["use_sim_time"] = yaml.safe_load(arg("use_sim_time")) is True

    namespace = arg("namespace")
    node = Node(
        package=PACKAGE,
        executable="taseg_node",
        name=NODE_NAME,
        namespace=namespace,
        output="screen",
        emulate_tty=True,
        # Ctrl-C: the node releases its model and exits cleanly, but a Python process with torch takes
        # seconds to finish on a loaded machine (measured 3-4 s at load 15 on 2 cores); launch's default
        # of 5 s before SIGTERM turned that into a killed node.
        sigterm_timeout="30",
        parameters=[arg("params_file"), overrides],
        remappings=[("rgb/image", arg("rgb_topic")), ("thermal/image", arg("thermal_topic")),
                    ("rgb/image/compressed", arg("rgb_topic") + "/compressed"),
                    ("thermal/image/compressed", arg("thermal_topic") + "/compressed")],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="taseg_rviz",
        arguments=["-d", _rviz_config_for(namespace)],
        output="screen",
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return [node, rviz]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "taseg.yaml")
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("rgb_topic", default_value="rgb/image", description="RGB sensor_msgs/Image topic"),
        DeclareLaunchArgument("thermal_topic", default_value="thermal/image", description="thermal sensor_msgs/Image topic"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameters (YAML)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with the overlay and labels"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (rosbag playback)"),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value="", description=f"{description(name)} (empty: from params_file)")
        for name in PARAMETER_ARGUMENTS
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_launch_setup)])
