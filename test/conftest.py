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

