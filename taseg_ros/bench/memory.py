"""Peak memory of one inference call: CUDA allocator peak on the GPU, resident set on the CPU."""
from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from taseg_ros.config_io import read_text

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in read_text(_STATUS).splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes() -> int | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


# The highest high-water mark read before any reset: resets must not lose the lifetime peak.
_peak_before_resets = 0


def _current_hwm_bytes() -> int:
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def process_peak_rss_bytes() -> int:
    """The process's resident-set peak since it started (across the resets below)."""
    return max(_peak_before_resets, _current_hwm_bytes())


def _reset_peak_rss() -> bool:
    # Linux resets VmHWM when "5" is written to clear_refs (4.0+); psutil and resource can
    # only read the lifetime peak, which an earlier, larger step would hide.
    global _peak_before_resets
    _peak_before_resets = process_peak_rss_bytes()
    try:
        with open(_CLEAR_REFS, "w") as control:  # a kernel control file, not an output
            control.write("5")
    except OSError:
        return False
    return True


def measure_peak(call: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Run `call` once and report its peak memory.

    GPU: torch.cuda.max_memory_allocated during the call (tensors only, not the caching
    allocator's reserve) and the part of it above what was allocated before (activations).
    CPU: peak resident set during the call and its growth over the resident set before
    (activations plus allocator caches), when the kernel lets the peak be reset; otherwise
    the process's lifetime peak, flagged as such."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"kind": "cuda_max_memory_allocated", "peak_bytes": int(peak), "delta_bytes": int(peak - before)}
    before = rss_bytes()
    resettable = _reset_peak_rss()
    call()
    peak = _current_hwm_bytes()
    if resettable and before is not None:
        return {"kind": "rss_peak_during_call", "peak_bytes": int(peak), "delta_bytes": int(max(0, peak - before))}
    return {"kind": "rss_process_lifetime_peak", "peak_bytes": int(peak), "delta_bytes": None}


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes held by parameters and buffers (shared tensors counted once)."""
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        key = tensor.data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total
