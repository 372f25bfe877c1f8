"""The DDS transport the launch file gives the node, so that no camera frame is lost on the way in.
ROS-free (environment variables only).

Measured with ``scripts/bench_transport.py`` (README, "No frames lost in transport"): with Fast DDS's
default transports, a camera driver on the same machine hands the node its frames through shared
memory, out of the driver's own 512 KiB segment. A 1280x720 rgb8 frame (2.7 MB) is written there in
fragments that wait for the reader to free space; with the node busy on the model, most frames
never arrived, best effort or reliable. Over UDP loopback into a 4 MiB receive buffer, with
reliable, keep-last-10 inputs, none was lost. The driver cannot be configured from here; the node
can: ``auto`` gives it UDPv4 with 4 MiB socket buffers, unless the environment already configures
Fast DDS (then that is kept), or the middleware is not Fast DDS.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from taseg_ros.config_io import ConfigError, read_text

SOCKETS_SIZE = 4 * 1024 * 1024
FASTDDS_NODE_TRANSPORT = f"UDPv4?sockets_size={SOCKETS_SIZE}"
CHOICES_HELP = ("auto (UDPv4 with 4 MiB socket buffers for this launch's processes, unless the environment configures "
                "Fast DDS itself), keep (the environment's), or a FASTDDS_BUILTIN_TRANSPORTS value such as LARGE_DATA "
                "(best when every process of the machine uses it)")
_FASTDDS_RMWS = ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")
_OWN_SETTINGS = ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
_RMEM_MAX = Path("/proc/sys/net/core/rmem_max")


def node_environment(choice: str, environ: Mapping[str, str], rmem_max: int | None = None) -> tuple[dict[str, str], list[str]]:
    """(environment variables for the node, lines the launch should say) for the launch argument
    ``dds_transport``; ``rmem_max``: the kernel's receive buffer limit (read from /proc when None)."""
    if choice == "keep":
        return {}, []
    if choice != "auto":
        return {"FASTDDS_BUILTIN_TRANSPORTS": choice}, []
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    if rmw not in _FASTDDS_RMWS:
        return {}, [f"dds_transport auto: {rmw} is not Fast DDS; the node uses the environment's transport settings"]
    own = [name for name in _OWN_SETTINGS if environ.get(name)]
    if own:
        return {}, [f"dds_transport auto: the environment sets {own[0]}; kept for the node"]
    notes = []
    limit = rmem_max if rmem_max is not None else _read_rmem_max()
    if limit is not None and limit < SOCKETS_SIZE:
        notes.append(f"net.core.rmem_max is {limit} bytes, so the node's {SOCKETS_SIZE} byte receive buffer is cut to "
                     f"that and large frames may be lost: sudo sysctl -w net.core.rmem_max={SOCKETS_SIZE} "
                     "(README: no frames lost in transport)")
    return {"FASTDDS_BUILTIN_TRANSPORTS": FASTDDS_NODE_TRANSPORT}, notes


def _read_rmem_max() -> int | None:
    try:
        return int(read_text(_RMEM_MAX).strip())
    except (OSError, ValueError, ConfigError):  # not Linux, or no /proc: nothing to say
        return None
