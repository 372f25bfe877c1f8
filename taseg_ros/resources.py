"""Where the package's shared files live: training/, config/, launch/, models/.

The same files are found in three layouts: a source checkout (editable pip
install or running from the tree), a colcon install (ament index), and a plain
pip install (data_files under <prefix>/share/taseg_ros).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from taseg_ros.errors import MissingInputError

PACKAGE = "taseg_ros"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """The folder holding training/, config/, launch/ and models/README.md."""
    if (_SOURCE_ROOT / "package.xml").is_file() and (_SOURCE_ROOT / "training").is_dir():
        return _SOURCE_ROOT
    try:  # colcon install: ament index (only present with ROS 2)
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # noqa: BLE001 - ament index missing or package not indexed
        pass
    candidate = Path(sys.prefix) / "share" / PACKAGE
    if candidate.is_dir():
        return candidate
    raise MissingInputError(
        f"cannot find the {PACKAGE} share folder (looked in {_SOURCE_ROOT}, the ament index "
        f"and {candidate}); reinstall the package"
    )


def models_dir() -> Path:
    """Where users put SAM/CLIP weights and trained checkpoints.

    `TASEG_MODELS_DIR` overrides; otherwise `models/` of a source checkout, else
    `~/.cache/taseg_ros/models` for installed copies (share/ is often read-only).
    """
    env = os.environ.get("TASEG_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    if (_SOURCE_ROOT / "package.xml").is_file():
        return _SOURCE_ROOT / "models"
    return Path.home() / ".cache" / PACKAGE / "models"


def is_plain_file_name(name: str) -> bool:
    """A bare file name (no folder part, no `..`): what a config or a checkpoint's metadata may
    name under models/. A path there would make the package open whatever a file points at."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def training_dir() -> Path:
    return share_dir() / "training"
