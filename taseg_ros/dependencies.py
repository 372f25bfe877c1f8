"""The package's third-party dependencies, one table: what ``import`` names, the pip requirement
(``setup.py`` installs these), and the rosdep key ``package.xml`` declares (None: rosdistro has no
key, so pip installs it). No imports of its own: setup.py reads it before anything is installed,
and the node's entry point reads it when an import fails (``missing_message``). test_packaging
keeps setup.py, package.xml and the README's install lines equal to it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dependency:
    module: str  # the import name
    pip: str  # the requirement in setup.py's install_requires
    rosdep: str | None  # the key in package.xml (rosdistro's rosdep/python.yaml), None: pip only


REQUIRED = (
    Dependency("torch", "torch>=2.1", "python3-pytorch-pip"),  # the key installs torch and torchvision from pip
    Dependency("torchvision", "torchvision", "python3-pytorch-pip"),
    Dependency("segment_anything", "segment-anything>=1.0", None),
    Dependency("open_clip", "open_clip_torch>=2.20", None),
    Dependency("peft", "peft>=0.10", None),
    Dependency("numpy", "numpy", "python3-numpy"),
    Dependency("cv2", "opencv-python-headless", "python3-opencv"),
    Dependency("safetensors", "safetensors", None),
    Dependency("yaml", "pyyaml", "python3-yaml"),
    Dependency("tqdm", "tqdm", "python3-tqdm"),
    Dependency("tensorboard", "tensorboard", "python3-tensorboard-pip"),
    Dependency("matplotlib", "matplotlib", "python3-matplotlib"),
    Dependency("rosbags", "rosbags>=0.10", "python3-rosbags-pip"),
    Dependency("rosbags.image", "rosbags-image", None),
)
# The ROS 2 Python packages: from a sourced ROS 2 installation (or the ros-kilted-* wheels, the
# `ros` extra of setup.py); vision_msgs is optional (the node then publishes no LabelInfo).
ROS_MODULES = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "diagnostic_msgs", "lifecycle_msgs",
               "builtin_interfaces", "vision_msgs")


def pip_requirements() -> list[str]:
    return [d.pip for d in REQUIRED]


def rosdep_keys() -> list[str]:
    return sorted({d.rosdep for d in REQUIRED if d.rosdep})


def pip_only() -> list[str]:
    """What pip installs after rosdep: the requirements rosdistro has no key for."""
    return [d.pip for d in REQUIRED if d.rosdep is None]


def missing_message(module: str | None) -> str | None:
    """One line naming the missing package and how to install it, for a ModuleNotFoundError's
    ``name``; None when it is not one of ours (then it is a bug, and keeps its traceback)."""
    if not module:
        return None
    top = module.split(".")[0]
    if top in ROS_MODULES:
        return (f"the ROS 2 Python package '{top}' is not importable: source your ROS 2 installation "
                "(source /opt/ros/$ROS_DISTRO/setup.bash) or install the ROS 2 wheels (pip install 'taseg_ros[ros]')")
    for dep in sorted(REQUIRED, key=lambda d: -len(d.module)):  # rosbags.image before rosbags
        if module == dep.module or module.startswith(dep.module + "."):
            how = (f"rosdep install --from-paths src --ignore-src -y --as-root pip:false (key {dep.rosdep}) or "
                   if dep.rosdep else "")
            return (f"the Python package '{dep.pip}' is not installed (import {dep.module} failed): install it into "
                    f"the Python environment the node runs with: {how}python3 -m pip install '{dep.pip}' "
                    "(README: the ROS 2 workspace)")
    return None
