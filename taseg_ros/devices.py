"""Compute devices, precisions and runtimes: the one table of precision names, the runtime (backend)
names, and the one reading of ``--device auto``. Torch is imported only where a device is resolved, so the ROS parameter
checks and the command-line parsers can use the names without loading torch."""
from __future__ import annotations

from taseg_ros.errors import InputError

# The one table of precisions: name -> torch dtype attribute (``torch_dtype`` gives the dtype).
# Every command-line choice, recipe and node parameter uses these keys.
PRECISIONS: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

# Runtimes of the network forward (taseg_ros.runtime); "auto" picks one from the model file's type.
BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
BACKEND_CHOICES = ("auto", *BACKENDS)

DEVICE_CHOICES_HINT = "auto (cuda when available, else cpu), cpu, cuda or cuda:N"


def torch_dtype(precision: str):
    """A precision name -> its torch dtype (the one mapping; torch imported here, not at import time)."""
    import torch

    return getattr(torch, PRECISIONS[precision])


# CPU instructions that run a precision's matrix products natively (x86 /proc/cpuinfo flags; aarch64
# "bf16" feature). Without them PyTorch emulates bf16: vit_b ran 67 s against 7.6 s in fp32 (0.13x)
# on an AMD EPYC with AVX2 only. PyTorch has no fast CPU fp16 path here at all.
CPU_NATIVE = {"bf16": ("avx512_bf16", "amx_bf16", "bf16"), "fp16": ()}
CPU_FP16 = "PyTorch has no native fp16 on a CPU"


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from /proc/cpuinfo (x86 ``flags``, ARM ``Features``); empty where
    the kernel does not say (then no reduced precision counts as native)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def runnable_precision(precision: str, device: str, flags: frozenset[str] | None = None,
                       cuda_capability: tuple[int, int] | None = None) -> tuple[str, str]:
    """(the precision PyTorch runs for ``precision`` on ``device``, why it is another one or ""): a
    precision the device cannot run natively falls back to fp32, said in one line, rather than run
    emulated at a fraction of fp32's speed. ``flags`` (CPU) and ``cuda_capability`` (GPU) are this
    machine's unless given (tests inject them)."""
    kind = device.split(":")[0]
    if precision == "fp32" or kind not in ("cpu", "cuda"):
        return precision, ""
    if kind == "cpu":
        needed = CPU_NATIVE[precision]
        if set(needed) & (cpu_flags() if flags is None else flags):
            return precision, ""
        why = f"this CPU has no {precision} instructions ({' or '.join(needed[:2])})" if needed else CPU_FP16
        return "fp32", f"{precision} asked, fp32 runs: {why}, and emulated it runs at a fraction of fp32's speed"
    if precision == "bf16":
        if cuda_capability is None:
            import torch

            cuda_capability = torch.cuda.get_device_capability(device)
        if tuple(cuda_capability) < (8, 0):
            return "fp32", (f"bf16 asked, fp32 runs: this GPU (compute capability {cuda_capability[0]}.{cuda_capability[1]}) "
                            "has no bf16 arithmetic (8.0 and later); fp16 is its fast precision")
    return precision, ""


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
