"""Shared test fixtures: the real RGB-T samples (when present) and a tiny checkpoint."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = (REPO_ROOT / ".." / "shared" / "data" / "rgbt_samples").resolve()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~30 s on 2 CPU cores")


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """../shared/data/rgbt_samples, or skip when this checkout has no shared folder beside it."""
    if not SAMPLES.is_dir():
        pytest.skip(f"real RGB-T samples not found at {SAMPLES}")
    return SAMPLES


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny TASeg for MFNet's 9 classes (random frozen weights, embedded)."""
    from taseg_ros.model.checkpoint import init_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny_mfnet.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init_checkpoint("tiny", "mfnet", path, seed=0)
    return path


def pytest_collection_modifyitems(config, items):
    """Run the in-process DDS node tests first.

    Measured: after heavy torch use on pytest's main thread (test_model.py), the node's
    worker-thread inference in this same process became 20-80x slower (a node in its own
    process, as deployed, is unaffected: see the demo and `taseg bench`). Running these tests
    before the torch-heavy modules keeps them measuring the node, not the test process."""
    items.sort(key=lambda item: 0 if item.nodeid.startswith("test/test_ros_node.py") else 1)
