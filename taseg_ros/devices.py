"""Compute devices, precisions and runtimes: the one table of precision names, the runtime (backend)
names, and the one reading of ``--device auto``. Torch is imported only where a device is resolved, so the ROS parameter
checks and the command-line parsers can use the names without loading torch."""
from __future__ import annotations

from taseg_ros.errors import InputError

# Precision name -> torch dtype attribute. `taseg_ros.inference.PRECISIONS` maps the same names
# to the dtypes themselves; every command-line choice, recipe and node parameter uses these keys.
PRECISIONS: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

# Runtimes of the network forward (taseg_ros.runtime); "auto" picks one from the model file's type.
BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
BACKEND_CHOICES = ("auto", *BACKENDS)

DEVICE_CHOICES_HINT = "auto (cuda when available, else cpu), cpu, cuda or cuda:N"


def torch_dtype(precision: str):
    """A precision name -> its torch dtype (the one mapping; torch imported here, not at import time)."""
    import torch

    return getattr(torch, PRECISIONS[precision])


def resolve_device(choice: str) -> str:
    """'auto' -> 'cuda' when CUDA is available, else 'cpu'; any other name is returned as given
    (torch and the Segmenter refuse names they do not know, with their own message)."""
    if choice.strip().lower() != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def available_memory(device: str) -> int | None:
    """Bytes free now on `device` (CUDA: the driver's free memory; CPU: the kernel's MemAvailable),
    None when it cannot be told. A hand-read /proc/meminfo: psutil would be a new dependency for one number."""
    import os

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:  # MemAvailable counts the page cache the kernel would give back; free pages alone do not
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def check_memory(needed: int, device: str, what: str, advice: str) -> None:
    """Refuse, before allocating, work that needs more memory than `device` has free."""
    free = available_memory(device)
    if free is not None and needed > free:
        raise InputError(f"{what} needs at least {needed / 2**30:.1f} GiB on {device}; {free / 2**30:.1f} GiB is free; {advice}")
