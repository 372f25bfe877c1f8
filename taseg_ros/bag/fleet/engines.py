"""Engines: one task per recording, on worker processes of this machine or on the actors of a Ray cluster.

A task's work is a ``WorkerSpec``: ``setup()`` runs once per worker (it loads the model: a worker
keeps it for every recording it gets) and ``run(state, payload)`` does one recording and returns
its result, a bad recording included (a failure is a result, not an exception). The engine owns the
retries of what a worker cannot report itself: a worker process killed (SIGKILL, out of memory) or a
Ray node lost while it held a recording. That recording goes back to the front of the queue and is
run again on another worker, up to ``max_attempts`` times; the dead worker is replaced (a new one
loads the model once). Nothing a worker does touches the output folder: results come back to the
caller, which writes them (one writer, so a retried recording is written once).

local  one worker: this process (no start-up; a kill is the command's, and a rerun goes on where it
       stopped). More: ``concurrent.futures.ProcessPoolExecutor`` (spawned processes, not forked:
       torch and fork do not mix). A killed worker breaks the whole pool (Python's design): every
       recording in flight is retried on a new pool.
ray    one Ray actor per worker (``num_cpus``/``num_gpus`` per actor: logical resources Ray
       schedules by), Ray Core rather than Ray Data: the recording must stay one ordered task (its
       temporal figures), one call per actor keeps "started" exact for the progress, and the retry
       policy above (Ray Data retries a lost actor's task but not a UDF's error, and its checkpointing
       is experimental; see docs/own_recordings.md). Actors are created with ``max_restarts=0``: a
       lost one is replaced by a new actor wherever the cluster has room, and its recording is
       re-dispatched to the next ready worker.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from taseg_ros.errors import InputError, TasegError

ENGINES = ("local", "ray")
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_THREADS_PER_WORKER = 1
RAY_MISSING = "--engine ray needs Ray, an optional extra: pip install 'taseg_ros[cluster]'"


class EngineError(TasegError, RuntimeError):
    """The engine cannot go on (workers keep dying, no cluster to connect to)."""


class WorkerSpec(Protocol):
    def setup(self) -> Any: ...

    def run(self, state: Any, payload: Any) -> Any: ...


@dataclass(frozen=True)
class Task:
    key: str  # the recording's name
    payload: Any


@dataclass
class Event:
    """What the engine reports: started (a worker took the task), finished (``result``), retry (its
    worker was lost: ``reason``), lost (given up after max_attempts: ``reason``), waiting (no worker
    ready for a while)."""

    kind: str
    key: str = ""
    attempt: int = 1
    worker: dict = field(default_factory=dict)
    result: Any = None
    reason: str = ""


# --- inside a worker ----------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}  # this process's spec, state and how many times it ran setup()


def worker_info(node: str = "") -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "node": node, "loads": _WORKER.get("loads", 0)}


def set_threads(threads: int) -> None:
    """A worker process's CPU threads for torch and OpenCV. A matrix product sums in an order that
    depends on the thread count: workers with the same count give bit-identical figures."""
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


class SetupError(EngineError):
    """A worker's setup() failed (the model does not load): no recording can run."""


def _setup(spec: WorkerSpec) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle: it stops the workers
    _WORKER["loads"] = _WORKER.get("loads", 0) + 1
    _WORKER["spec"] = spec
    try:
        _WORKER["state"] = spec.setup()
    except Exception as exc:  # noqa: BLE001 - reported by the first task this worker gets (an initializer cannot)
        _WORKER["error"] = f"a worker could not load the model: {' '.join(str(exc).split()) or type(exc).__name__}"


def _run(task: Task) -> tuple[Any, dict]:
    if "error" in _WORKER:
        raise SetupError(_WORKER["error"])
    return _WORKER["spec"].run(_WORKER["state"], task.payload), worker_info()


class RayWorker:
    """The body of a Ray actor (wrapped by ``ray.remote`` when the ray engine starts, so this module
    does not import Ray)."""

    def __init__(self, spec: WorkerSpec) -> None:
        _setup(spec)

    def ready(self) -> dict:
        import ray

        if "error" in _WORKER:
            raise SetupError(_WORKER["error"])
        return worker_info(ray.get_runtime_context().get_node_id())

    def run(self, task: Task) -> tuple[Any, dict]:
        import ray

        result, info = _run(task)
        return result, {**info, "node": ray.get_runtime_context().get_node_id()}


# --- the engines ----------------------------------------------------------------------------------------


class _Queue:
    """Tasks to run, with their attempt numbers; a lost task goes back to the front."""

    def __init__(self, tasks, max_attempts: int, on_event: Callable[[Event], None]) -> None:
        self.items = deque((task, 1) for task in tasks)
        self.max_attempts, self.on_event = max_attempts, on_event

    def lost(self, task: Task, attempt: int, why: str) -> None:
        if attempt >= self.max_attempts:
            self.on_event(Event("lost", task.key, attempt, reason=f"its worker was lost {attempt} times ({why})"))
        else:
            self.on_event(Event("retry", task.key, attempt, reason=why))
            self.items.appendleft((task, attempt + 1))


class LocalEngine:
    name = "local"

    def __init__(self, workers: int = 1, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        if workers < 1:
            raise InputError(f"--workers must be >= 1, got {workers}")
        self.workers, self.max_attempts = workers, max_attempts

    def _pool(self, spec: WorkerSpec) -> ProcessPoolExecutor:
        import multiprocessing

        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_setup, initargs=(spec,))

    def run(self, spec: WorkerSpec, tasks: list[Task], on_event: Callable[[Event], None]) -> None:
        if self.workers == 1:
            self._run_here(spec, tasks, on_event)
            return
        queue = _Queue(tasks, self.max_attempts, on_event)
        generation, pool = 0, self._pool(spec)
        running: dict[Any, tuple[Task, int, int]] = {}  # future -> (task, attempt, pool generation)
        try:
            while queue.items or running:
                while queue.items and len(running) < self.workers:
                    task, attempt = queue.items.popleft()
                    running[pool.submit(_run, task)] = (task, attempt, generation)
                    on_event(Event("started", task.key, attempt, {"host": socket.gethostname()}))
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: running[f][0].key):
                    task, attempt, born = running.pop(future)
                    try:
                        result, info = future.result()
                    except BrokenProcessPool:
                        queue.lost(task, attempt, "a worker process died: killed, or out of memory?")
                        if born == generation:  # the first of its pool's failures: a new pool
                            pool.shutdown(wait=False, cancel_futures=True)
                            generation, pool = generation + 1, self._pool(spec)
                        continue
                    on_event(Event("finished", task.key, attempt, info, result))
        except BaseException:  # Ctrl-C, or the caller failed: do not wait for the recordings in flight
            _terminate(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


    @staticmethod
    def _run_here(spec: WorkerSpec, tasks: list[Task], on_event: Callable[[Event], None]) -> None:
        """One worker: this process, its CPU threads set by the spec for the run and put back after."""
        with _threads_restored():
            try:
                state = spec.setup()
            except Exception as exc:  # noqa: BLE001 - any load failure ends the run in one line
                raise SetupError(f"the model could not be loaded: {' '.join(str(exc).split()) or type(exc).__name__}") \
                    from None
            info = {**worker_info(), "loads": 1}
            for task in tasks:
                on_event(Event("started", task.key, 1, info))
                on_event(Event("finished", task.key, 1, info, spec.run(state, task.payload)))


@contextmanager
def _threads_restored():
    """The torch and OpenCV thread counts of this process, put back after the block."""
    import cv2
    import torch

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop a pool's workers now (Python 3.14 has ProcessPoolExecutor.terminate_workers; before it,
    the processes are only reachable through the pool's own table)."""
    for process in list(getattr(pool, "_processes", {}).values()):
        process.terminate()


def import_ray():
    """Ray, or one InputError line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(RAY_MISSING) from None
    return ray


class RayEngine:
    name = "ray"

    def __init__(self, workers: int = 1, address: str | None = None, gpus_per_worker: float = 0.0,
                 cpus_per_worker: float = 1.0, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 init_kwargs: dict | None = None, wait_report_s: float = 60.0) -> None:
        if workers < 1:
            raise InputError(f"--workers must be >= 1, got {workers}")
        if gpus_per_worker < 0 or cpus_per_worker <= 0:
            raise InputError("--gpus-per-worker must be >= 0 (and CPUs per worker > 0)")
        self.workers, self.address, self.max_attempts = workers, address, max_attempts
        self.gpus, self.cpus = gpus_per_worker, cpus_per_worker
        self.init_kwargs = init_kwargs or {}
        self.wait_report_s = wait_report_s

    def connect(self):
        """Ray, connected: to the running instance of this process, to --ray-address / RAY_ADDRESS,
        or to a new local instance. Returns (ray, whether this call started the connection)."""
        import logging

        ray = import_ray()
        if ray.is_initialized():
            return ray, False
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        kwargs = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
        if address is None:  # a local instance just big enough for the workers
            kwargs["num_cpus"] = max(1, int(self.workers * self.cpus))
        try:
            ray.init(address=address, **{**kwargs, **self.init_kwargs})
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EngineError(f"cannot connect to the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}") from None
        return ray, True

    def run(self, spec: WorkerSpec, tasks: list[Task], on_event: Callable[[Event], None]) -> None:
        ray, started = self.connect()
        actor_class = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0, max_task_retries=0)(RayWorker)
        pool = _ActorPool(ray, actor_class, spec, self.workers, len(tasks) * self.max_attempts + self.workers)
        try:
            self._loop(ray, pool, _Queue(tasks, self.max_attempts, on_event), on_event)
        finally:
            pool.kill_all()
            if started:
                ray.shutdown()

    def _loop(self, ray, pool: "_ActorPool", queue: _Queue, on_event) -> None:
        running: dict[Any, tuple[Any, Task, int]] = {}  # result ref -> (actor, task, attempt)
        while queue.items or running:
            while pool.idle and queue.items:
                actor = pool.idle.popleft()
                task, attempt = queue.items.popleft()
                running[actor.run.remote(task)] = (actor, task, attempt)
                on_event(Event("started", task.key, attempt, pool.info[actor]))
            done, _ = ray.wait(list(pool.starting) + list(running), num_returns=1, timeout=self.wait_report_s)
            if not done:
                if not running:
                    on_event(Event("waiting", reason="no Ray worker ready: does the cluster have the CPUs/GPUs "
                                   f"asked for ({self.cpus:g} CPU, {self.gpus:g} GPU per worker)?"))
                continue
            ref = done[0]
            if ref in pool.starting:
                pool.started(ref)
                continue
            actor, task, attempt = running.pop(ref)
            try:
                result, info = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # the spec raised: a bug, not a lost worker
                on_event(Event("lost", task.key, attempt, pool.info[actor], reason=_first_line(exc)))
                pool.idle.append(actor)
                continue
            except ray.exceptions.RayError as exc:  # the actor, its process or its node is gone
                queue.lost(task, attempt, f"{type(exc).__name__} on node {pool.info[actor].get('node', '?')[:12]}")
                pool.replace(actor)
                continue
            pool.idle.append(actor)
            on_event(Event("finished", task.key, attempt, info, result))


class _ActorPool:
    """The engine's actors: starting (their ``ready`` call pending), idle, or busy; a dead one is
    replaced by a new one (at most ``max_replacements`` in a run)."""

    def __init__(self, ray, actor_class, spec, workers: int, max_replacements: int) -> None:
        self.ray, self.actor_class, self.spec = ray, actor_class, spec
        self.starting: dict[Any, Any] = {}  # ready ref -> actor
        self.idle: deque = deque()
        self.info: dict[Any, dict] = {}
        self.all: list = []
        self.replacements, self.max_replacements = 0, max_replacements
        for _ in range(workers):
            self._start()

    def _start(self) -> None:
        actor = self.actor_class.remote(self.spec)
        self.all.append(actor)
        self.info[actor] = {}
        self.starting[actor.ready.remote()] = actor

    def started(self, ref) -> None:
        actor = self.starting.pop(ref)
        try:
            self.info[actor] = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:  # setup() failed: the model does not load
            cause = getattr(exc, "cause", None)
            raise EngineError(str(cause) if isinstance(cause, SetupError) else f"a Ray worker failed to start: "
                              f"{_first_line(exc)}") from None
        except self.ray.exceptions.RayError:
            self.replace(actor)
            return
        self.idle.append(actor)

    def replace(self, actor) -> None:
        self.replacements += 1
        if self.replacements > self.max_replacements:
            raise EngineError(f"Ray workers died {self.replacements} times; giving up (see `ray status`)")
        self.ray.kill(actor, no_restart=True)
        self._start()

    def kill_all(self) -> None:
        for actor in self.all:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone with its node
                pass
        self.all.clear()


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]


def make_engine(name: str, workers: int, *, address: str | None = None, gpus_per_worker: float = 0.0,
                threads_per_worker: int = 1):
    """The engine the options ask for (Ray imported only here, when asked for)."""
    if name == "local":
        if gpus_per_worker:
            raise InputError("--gpus-per-worker schedules Ray workers; with --engine local use --device")
        return LocalEngine(workers)
    if name == "ray":
        import_ray()
        return RayEngine(workers, address, gpus_per_worker, cpus_per_worker=threads_per_worker)
    raise InputError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")

