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



@pytest.fixture(scope="session")
def thermal_checkpoint(tmp_path_factory, tiny_checkpoint) -> Path:
    """The tiny checkpoint with every trainable tensor perturbed, as after training: its labels depend
    on the thermal input (a fresh model's last DFFM conv and LoRA B are zero, so thermal changes nothing)."""
    import torch

    from taseg_ros.model.checkpoint import load_checkpoint, save_checkpoint

    model = load_checkpoint(tiny_checkpoint)
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
        model.mask_decoder.head.bias.zero_()  # else one class's bias wins every pixel of the random features
    path = tmp_path_factory.mktemp("thermal_ckpt") / "tiny_thermal.safetensors"
    save_checkpoint(model, path)
    return path
