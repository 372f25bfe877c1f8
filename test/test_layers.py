"""The package's layers, checked from the source: every import (function-level ones too) between the
package's parts, no cycle among them, rclpy only under ``ros/``, and no product module that reads a
development-only folder (``../shared``, the tests)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "taseg_ros"


def part_of(module: str) -> str:
    """The part a module belongs to: a sub-package (``taseg_ros.bag``) or a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in the file, at any depth."""
    found = []
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def part_graph() -> dict[str, dict[str, list[str]]]:
    """part -> imported part -> ['file:line', ...] (self-imports left out)."""
    known = {module_name(p) for p in package_files()}
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in package_files():
        src = part_of(module_name(path))
        for target, line in imports(path):
            if target not in known or not target.startswith("taseg_ros."):
                continue
            dst = part_of(target)
            if dst != src and dst != "taseg_ros":
                graph[src][dst].append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    return graph


def find_cycle(graph) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, {}):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in list(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_the_packages_parts():
    graph = part_graph()
    cycle = find_cycle(graph)
    if cycle:
        edges = [f"{a} -> {b} ({', '.join(graph[a][b][:3])})" for a, b in zip(cycle, cycle[1:])]
        pytest.fail("import cycle between the package's parts:\n  " + "\n  ".join(edges))


def test_no_import_cycle_inside_a_part():
    """Modules of one sub-package do not import each other in a circle either (bench/run <-> bench/backends was one)."""
    known = {module_name(p) for p in package_files()}
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in package_files():
        src = module_name(path)
        for target, line in imports(path):
            if target in known and target != src and part_of(target) == part_of(src) and not path.name == "__init__.py":
                if not target.endswith(src) and module_name(path) != target:
                    graph[src][target].append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    for src in list(graph):  # a package's __init__ re-exports: not an edge back
        graph[src] = {t: v for t, v in graph[src].items() if not src.startswith(t + ".")}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


# The layers, bottom to top. A part may import its own layer's base modules and any layer below.
LAYERS = [
    {"taseg_ros.errors", "taseg_ros.timing", "taseg_ros.devices", "taseg_ros.resources", "taseg_ros.config_io",
     "taseg_ros.outputs", "taseg_ros.weights", "taseg_ros.classes", "taseg_ros.formatting",
     "taseg_ros.dependencies"},
    {"taseg_ros.frames", "taseg_ros.scenes"},
    {"taseg_ros.model"},
    {"taseg_ros.datasets", "taseg_ros.runtime"},
    {"taseg_ros.inference"},
    {"taseg_ros.evaluation", "taseg_ros.train", "taseg_ros.ros"},
    {"taseg_ros.bag", "taseg_ros.bench", "taseg_ros.labelling"},
    {"taseg_ros.demo"},
    {"taseg_ros.cli"},
]


def layer(part: str) -> int:
    for index, parts in enumerate(LAYERS):
        if part in parts:
            return index
    raise AssertionError(f"{part} is in no layer of test_layers.LAYERS: add it where it belongs")


def test_imports_only_go_down():
    upward = []
    for src, targets in part_graph().items():
        for dst, where in targets.items():
            if layer(dst) > layer(src):
                upward.append(f"{src} -> {dst} ({', '.join(where[:3])})")
    assert not upward, "upward imports:\n  " + "\n  ".join(upward)


def test_the_frame_layer_imports_nothing_but_the_error_types_and_the_write_policy():
    allowed = ("taseg_ros.frames", "taseg_ros.errors", "taseg_ros.outputs")  # outputs: standard library only
    for path in (PACKAGE / "frames").glob("*.py"):
        for target, line in imports(path):
            if target.startswith("taseg_ros.") and not target.startswith(allowed):
                pytest.fail(f"{path.name}:{line} imports {target}: the frame layer is numpy + OpenCV only")
            assert target.split(".")[0] not in ("torch", "rclpy"), f"{path.name}:{line} imports {target}"


def test_rclpy_only_under_ros():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for path in package_files()
        if "ros" != path.relative_to(PACKAGE).parts[0]
        for target, line in imports(path)
        if target.split(".")[0] in ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "lifecycle_msgs", "rcl_interfaces")
    ]
    assert not offenders, "ROS client code outside taseg_ros/ros/:\n  " + "\n  ".join(offenders)


def test_no_product_module_reads_a_development_only_folder():
    offenders = []
    for path in package_files():
        text = path.read_text()
        for needle in ('"shared"', "'shared'", "../shared", "rgbt_samples", "conftest", "bag_fixtures", "dataset_fixtures"):
            if needle in text:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}: {needle}")
    assert not offenders, "product code that reads development-only folders:\n  " + "\n  ".join(offenders)


# --- the command line starts light ----------------------------------------------------------------
# What `taseg --help`, `taseg <cmd> --help` and `taseg weights` may not load: the network and image
# stacks, the recording library, the optional runtimes, Ray and plotting. Only the `run` functions of
# the command modules import them, after the arguments are parsed.
HEAVY_MODULES = ("torch", "torchvision", "segment_anything", "open_clip", "peft", "cv2", "rosbags", "onnx",
                 "onnxruntime", "openvino", "tensorrt", "ray", "matplotlib", "rclpy")

LIGHT_START_PROBE = r"""
import contextlib, io, json, sys, tempfile
from taseg_ros.cli import COMMANDS, build_parser, main

def heavy():
    return sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))

seen = {}
build_parser()
seen["build_parser()"] = heavy()
helps = [["--help"]] + [[name, "--help"] for name in COMMANDS]
helps += [["bag", action, "--help"] for action in ("info", "extract", "select", "eval", "replay", "calibrate", "refine")]
helps += [["label", action, "--help"] for action in ("export", "import")]
for argv in helps:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(argv)
seen["taseg <cmd> --help"] = heavy()
with tempfile.TemporaryDirectory() as models, contextlib.redirect_stdout(io.StringIO()):
    main(["weights", "--models-dir", models, "--quick"])
seen["taseg weights"] = heavy()
print(json.dumps(seen))
"""


def test_the_command_line_starts_without_the_heavy_modules():
    """Building the parser, every `--help` and `taseg weights` load none of HEAVY_MODULES (in a fresh
    process: an import here would hide one there)."""
    code = f"HEAVY = {HEAVY_MODULES!r}\n{LIGHT_START_PROBE}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {step: [] for step in loaded}, f"heavy modules loaded at start-up: {loaded}"


# Where a function may import the package's own modules: the command line's run functions (the boundary
# that keeps `taseg --help` light). Everywhere else imports sit at the top of the module, as in
# segment-anything and timm.
FUNCTION_LEVEL_IMPORTS_ALLOWED = ("cli",)
# (module, function): imports that stay in a function, with the reason.
FUNCTION_LEVEL_IMPORTS_KEPT = {
    ("train/run_dir.py", "_read_checkpoint_fully"): "`taseg train` refuses a bad run folder before torch loads",
    # runtime/__init__ stays light (the command-line parsers read runtime.formats through it); a runtime
    # and torch load when a model file is opened.
    ("runtime/__init__.py", "read_export_metadata"): "the runtimes load with the model file",
    ("runtime/__init__.py", "describe_model_file"): "the runtimes load with the model file",
    ("runtime/__init__.py", "open_backend"): "the runtimes load with the model file",
    ("ros/start.py", "main"): "these imports are what may fail: taseg_node names the missing package in one line",
    ("ros/client.py", "qos"): "rclpy loads only once ROS is known to be there (the bag tools import the client)",
    # The model-only half of the ROS bench runs without rclpy (--no-node): the ROS parts load when used.
    ("ros/bench.py", "bench_model_and_steps"): "rclpy only for the message-building step",
    ("ros/bench.py", "__init__"): "the DDS run's node and probe",
    ("ros/bench.py", "run"): "the DDS run's messages",
}


def test_the_packages_own_imports_sit_at_the_top_of_their_modules():
    offenders = []
    for path in package_files():
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in FUNCTION_LEVEL_IMPORTS_ALLOWED:
            continue
        for function in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if (rel.as_posix(), function.name) in FUNCTION_LEVEL_IMPORTS_KEPT:
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("taseg_ros")):
                    offenders.append(f"{rel}:{node.lineno} in {function.name}(): from {node.module} import ...")
    assert not offenders, "function-level imports of the package's own modules (move them to the top):\n  " + \
        "\n  ".join(offenders)
