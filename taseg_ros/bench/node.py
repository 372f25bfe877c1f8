"""The node in the benchmark: the real node over DDS against the same runtime alone, and the
worker thread every timed call runs on. Used by ``bench.run`` (the checkpoint's model) and
``bench.backends`` (each runtime's file)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from taseg_ros.inference import Segmenter
from taseg_ros.ros.bench import bench_node


class Worker:
    """One long-lived thread that makes every timed call, as the node's inference thread does,
    so the model figures and the node comparison stand on one footing."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taseg-bench")

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _back_to_back_fps(seg: Segmenter, frames: tuple[np.ndarray, np.ndarray], count: int) -> float:
    """predict() calls back to back after one warm-up call, as the node's inference thread makes them."""
    rgb, thermal = frames
    seg.predict(rgb, thermal)
    start = time.perf_counter()
    for _ in range(count):
        seg.predict(rgb, thermal)
    return count / (time.perf_counter() - start)


def node_vs_alone(
    path: Path, frames, count: int, worker: Worker, *, backend: str = "auto", device: str = "cpu", precision: str = "fp32"
) -> dict[str, Any]:
    """The real node over DDS (taseg_ros.ros.bench.bench_node: one pair in flight, all three image
    outputs subscribed) running the model file `path`, against the same runtime alone (a Segmenter
    on the same file, predict() back to back) timed right before and right after it."""
    alone = Segmenter.from_checkpoint(path, backend=backend, device=device, precision=precision)
    before = worker(_back_to_back_fps, alone, frames, count)
    try:
        node = bench_node(path, frames[0].shape[0], frames[0].shape[1], count, device, precision, backend=backend)
    except Exception as exc:  # noqa: BLE001 - a DDS failure must not discard the model figures
        alone.release()
        return {"failed": f"{type(exc).__name__}: {exc}"}
    after = worker(_back_to_back_fps, alone, frames, count)
    alone.release()
    reference = 2 * count / (count / before + count / after)  # all frames over all time
    node.update(frames=count, model_fps=reference, model_fps_before=before, model_fps_after=after,
                ratio=node["fps"] / reference, runtime=alone.describe())
    return node
