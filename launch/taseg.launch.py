"""Launch the TASeg segmentation node, optionally with RViz showing its overlay and labels.

    ros2 launch taseg_ros taseg.launch.py checkpoint:=/path/model.safetensors \\
        rgb_topic:=/camera/color/image_raw thermal_topic:=/thermal/image_raw namespace:=front rviz:=true

Every node parameter is a launch argument of the same name, generated from the node's parameter
table (taseg_ros/ros/params.py), so none can be missing: `ros2 launch taseg_ros taseg.launch.py
--show-args` lists them with their descriptions. Parameters come from `params_file` (default: the
package's config/taseg.yaml); an argument given here overrides that parameter (an empty value keeps
the file's). A value is checked against its parameter before the node starts, and an argument this
file does not know (a typo) is refused with the closest known one. With rgb_transport/
thermal_transport:=compressed, give the base topic (without "/compressed").
"""
import difflib
import os
import tempfile

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from taseg_ros.ros.params import NodeParams, description, launch_value
from taseg_ros.ros.transport import CHOICES_HELP, node_environment

PACKAGE = "taseg_ros"
NODE_NAME = "taseg"
# Arguments of the launch itself; every other argument is a node parameter (NodeParams.names()).
LAUNCH_ARGUMENTS = {
    "namespace": ("", "namespace of the node and its topics"),
    "rgb_topic": ("rgb/image", "RGB sensor_msgs/Image topic"),
    "thermal_topic": ("thermal/image", "thermal sensor_msgs/Image topic"),
    "params_file": (None, "node parameters (YAML); default: the package's config/taseg.yaml"),
    "rviz": ("false", "start RViz with the overlay and labels"),
    "use_sim_time": ("false", "use /clock (rosbag playback)"),
    "dds_transport": ("auto", f"DDS transport of the node and RViz: {CHOICES_HELP}"),
}


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


def _unknown_arguments(context) -> list:
    """`name:=value` arguments on the `ros2 launch` line that this file does not declare: a typo is
    refused (it names the closest argument); any other is said (it may belong to a launch file
    that includes this one)."""
    known = set(LAUNCH_ARGUMENTS) | set(NodeParams.names())
    actions = []
    for item in context.argv:
        name = item.split(":=", 1)[0]
        if ":=" not in item or name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        if close:
            raise RuntimeError(f"taseg.launch.py: unknown launch argument '{name}' (did you mean '{close[0]}'?); "
                               "`ros2 launch taseg_ros taseg.launch.py --show-args` lists them")
        actions.append(LogInfo(msg=f"taseg.launch.py: launch argument '{name}' is not one of this file's; ignored here"))
    return actions


def _launch_setup(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    said = _unknown_arguments(context)
    overrides = {}
    for name in NodeParams.names():
        if arg(name) != "":
            value = launch_value(name, arg(name))  # ValueError naming the argument
            # launch_ros refuses an empty list; YAML's null reaches the node as 'null', read as [].
            overrides[name] = value if value != [] else "null"
    overrides["use_sim_time"] = launch_value("use_sim_time", arg("use_sim_time"))
    dds_env, notes = node_environment(arg("dds_transport"), os.environ)
    said += [LogInfo(msg=f"taseg.launch.py: {note}") for note in notes]
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
        additional_env=dds_env,
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
        additional_env=dds_env,
        output="screen",
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return [*said, node, rviz]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "taseg.yaml")
    arguments = [DeclareLaunchArgument(name, default_value=default if default is not None else default_params,
                                       description=text)
                 for name, (default, text) in LAUNCH_ARGUMENTS.items()]
    arguments += [DeclareLaunchArgument(name, default_value="", description=f"{description(name)} (empty: from params_file)")
                  for name in NodeParams.names()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_launch_setup)])
