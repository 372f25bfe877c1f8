"""The one tree builds as a pip wheel and as a colcon (ament_python) package."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def copy_tree(dest: Path) -> Path:
    """The tracked files, as a clean checkout has them (no .venv, caches or runs)."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_wheel_installs_only_taseg_ros_and_the_share_files(tmp_path):
    src = copy_tree(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, text=True)
    wheel = next((tmp_path / "dist").glob("taseg_ros-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.startswith("taseg_ros-")}
    assert top_level == {"taseg_ros"}  # no generic `models`, `training` or `utils` packages
    data = [n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n]
    for needed in ("share/taseg_ros/package.xml", "share/taseg_ros/launch/taseg.launch.py", "share/taseg_ros/config/taseg.yaml",
                   "share/taseg_ros/training/datasets/mfnet.yaml", "share/taseg_ros/training/recipes/mfnet.yaml",
                   "share/ament_index/resource_index/packages/taseg_ros", "share/taseg_ros/models/README.md"):
        assert needed in data, needed
    assert "taseg_ros/configs/taseg-tiny-text.json" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "taseg = taseg_ros.cli:main" in entry_points and "taseg_node = taseg_ros.ros.start:main" in entry_points


@pytest.mark.slow
def test_colcon_build_installs_a_ros2_package(tmp_path):
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent))
    if colcon is None:
        pytest.skip("colcon is not installed in this environment")
    copy_tree(tmp_path / "ws" / "src" / "taseg_ros")
    result = subprocess.run([colcon, "build", "--packages-select", "taseg_ros"], cwd=tmp_path / "ws", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    prefix = tmp_path / "ws" / "install" / "taseg_ros"
    # `ros2 run taseg_ros taseg_node` looks for executables in lib/<package>.
    assert (prefix / "lib" / "taseg_ros" / "taseg_node").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "taseg_ros").is_file()
    assert (prefix / "share" / "taseg_ros" / "launch" / "taseg.launch.py").is_file()
    assert (prefix / "share" / "taseg_ros" / "training" / "recipes" / "mfnet.yaml").is_file()
    # Installed code finds its share folder through the ament index, as under `ros2 run`.
    site = next((prefix / "lib").glob("python3*/site-packages"))
    env = {"AMENT_PREFIX_PATH": str(prefix), "PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    probe = "from taseg_ros.resources import share_dir; print(share_dir())"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == prefix / "share" / "taseg_ros"
