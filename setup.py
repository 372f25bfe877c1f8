"""taseg_ros: TASeg RGB-thermal semantic segmentation for ROS 2.

One setup.py serves both worlds: `colcon build` (ament_python) in a ROS 2
workspace and `pip install` into a plain virtual environment.
"""
import os
import runpy
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "taseg_ros"
# The dependency table (import name, pip requirement, rosdep key) that package.xml and the node's
# missing-dependency message also follow; read by path: nothing of the package is installed yet.
DEPENDENCIES = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), PACKAGE, "dependencies.py"))

# ROS 2 Python wheels for machines without a ROS 2 install. Not in
# install_requires: a user with ROS 2 from apt must not get a second rclpy.
ROS_WHEELS = [
    "ros-kilted-rclpy",
    "ros-kilted-sensor-msgs",
    "ros-kilted-std-msgs",
    "ros-kilted-rmw-fastrtps-cpp",
    "ros-kilted-diagnostic-msgs",
    "ros-kilted-lifecycle-msgs",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="TASeg: text-aware RGB-thermal semantic segmentation on SAM, as a ROS 2 package",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["configs/*.yaml", "configs/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/training/datasets", glob("training/datasets/*.yaml")),
        (f"share/{PACKAGE}/training/recipes", glob("training/recipes/*.yaml")),
        (f"share/{PACKAGE}/models", ["models/README.md"]),
    ],
    install_requires=DEPENDENCIES["pip_requirements"](),
    extras_require={
        "ros": ROS_WHEELS,
        # datumaro: CVAT's own format library, to check the pre-label zips (it pins OpenCV 4.x and
        # numpy < 2.5, as ROS distros from apt ship them); mcap + mcap-ros2-support: Foxglove's
        # readers, to check that output recordings open in Foxglove; ruff: the linter the tests run
        # (ruff.toml: the rules and the banned APIs that keep reading and writing in their homes).
        "test": ["pytest", "pytest-timeout", "colcon-common-extensions", "datumaro", "mcap", "mcap-ros2-support",
                 "ruff==0.17.5"],
        # Deployment runtimes (taseg export --format ..., Segmenter/node backend=...).
        "onnx": ["onnx>=1.15"],
        "onnxruntime": ["onnx>=1.15", "onnxruntime>=1.17"],
        "openvino": ["onnx>=1.15", "openvino>=2024.0"],
        "runtimes": ["onnx>=1.15", "onnxruntime>=1.17", "openvino>=2024.0"],  # the CPU ones, as scripts/setup.sh installs
        # NVIDIA GPU machines: ONNX Runtime's CUDA/TensorRT providers and TensorRT engines.
        # (onnxruntime-gpu replaces onnxruntime: install one of the two.)
        "gpu": ["onnx>=1.15", "onnxruntime-gpu>=1.17", "tensorrt-cu12>=10.0"],
        # `taseg bag eval|select --engine ray`: many recordings on a Ray cluster (imported only then).
        "cluster": ["ray>=2.9"],
    },
    tests_require=["pytest"],
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "taseg = taseg_ros.cli:main",
            "taseg_node = taseg_ros.ros.start:main",
        ],
    },
)
