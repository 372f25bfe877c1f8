"""The run folder of `taseg train`: what may be started, resumed or replaced there.

- A folder that holds a run is never replaced silently: without --resume it is refused (say
  --resume or --force); --force removes that run's files (only those) first.
- --resume continues with the recorded recipe. A changed recipe is refused with the list of
  differences unless --allow-recipe-change; then both recipes and the step of the change go to
  recipe_history.json and a warning says so.
- One `taseg train` at a time per folder: the run holds an advisory lock (fcntl.flock on
  .taseg_train.lock, which records its PID) for its whole life; the kernel drops it when the
  process dies however it dies, so a killed run never leaves a stale lock. A second run is
  refused with that PID.
- Temporaries a killed run left (`.<run file>.tmp*`) are removed when a run starts.
- --resume reads a state that must fit together: the state file, best/last checkpoints readable.
- Rows of train_log.csv after the resumed step (logged by the interrupted run, replayed by the
  resumed one) are dropped, so every step appears once; TensorBoard does the same with
  SummaryWriter(purge_step=...) in the loop.
"""
from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import shutil
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path

from taseg_ros.config_io import parse_json, read_json, read_text
from taseg_ros.errors import TasegError
from taseg_ros.outputs import TEMP_PREFIX, check_creatable, check_not_overlapping, write_text_atomic

STATE_FILE = "train_state.pt"
RECIPE_FILE = "recipe.json"
HISTORY_FILE = "recipe_history.json"
LOG_FILE = "train_log.csv"
# Everything a run writes into its folder; --force removes these and nothing else.
RUN_FILES = (STATE_FILE, "best.safetensors", "last.safetensors", "init.safetensors", LOG_FILE,
             "summary.json", RECIPE_FILE, HISTORY_FILE)
RUN_DIRS = ("tensorboard",)
LOCK_FILE = ".taseg_train.lock"
CHECKPOINTS = ("best.safetensors", "last.safetensors")
# Where the data and the run live, how fast data is read and how much memory the plan may use
# (a resume on another machine): not what is trained.
NOT_RECIPE = frozenset({"data.root", "data.num_workers", "train.output", "train.gpu_memory"})


class RunFolderError(TasegError, ValueError):
    """A run folder that cannot be used as asked (a run is there, or the recipe changed)."""


class RunFolderInUse(RunFolderError):
    """Another `taseg train` holds the folder's lock (its files are not ours to clean up)."""


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "model_overrides":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def recipe_differences(recorded: dict, current: dict) -> dict[str, tuple]:
    """{dotted key: (recorded value, current value)} for what changes training (JSON-normalised,
    so tuples and lists compare equal)."""
    old, new = (_flatten(parse_json(json.dumps(r))) for r in (recorded, current))
    keys = sorted((set(old) | set(new)) - NOT_RECIPE)
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}


def _existing_run_files(output: Path) -> list[str]:
    return [name for name in (*RUN_FILES, *RUN_DIRS) if (output / name).exists()]


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # torchrun: only rank 0 changes the folder


@contextmanager
def run_folder(output, recipe: dict, *, resume: bool, force: bool = False, allow_recipe_change: bool = False):
    """The run folder, checked (with --force cleared) and locked for the block: a run's whole life.
    Refusals come before anything is created; raises RunFolderError."""
    output = Path(output)
    check_run_dir(output, recipe, resume=resume, force=force)
    with removed_if_nothing_to_resume(output):
        if not _is_main_process():  # torchrun: rank 0 holds the lock and changes the folder; the others
            prepare_run_dir(output, recipe, resume=resume, force=force, allow_recipe_change=allow_recipe_change)
            yield output  # check the same (read-only) and refuse alike
            return
        output.mkdir(parents=True, exist_ok=True)
        with _locked(output / LOCK_FILE):
            remove_stale_temporaries(output)
            prepare_run_dir(output, recipe, resume=resume, force=force, allow_recipe_change=allow_recipe_change)
            yield output


@contextmanager
def _locked(path: Path, create: bool = True):
    """Hold an exclusive flock on `path` (created, PID written) for the block, or raise
    RunFolderInUse naming the holder's PID. The file is removed on release; a lock taken on a file
    that a releasing run unlinked meanwhile is retaken on the new file (the inode check).
    create=False: only probe an existing lock file (gone meanwhile: nothing to do)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            if create:
                raise
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise RunFolderError(f"{path}: cannot lock the run folder ({exc.strerror})") from None
            raise RunFolderInUse(f"{path.parent} is in use by another `taseg train` (PID {_lock_holder(path)}); "
                                 "wait for it to finish or choose another --output") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it: the next run locks a new file
        os.close(fd)


def _lock_holder(path: Path) -> str:
    try:
        text = read_text(path, limit=64).strip()
    except (OSError, ValueError):
        text = ""
    return text if text.isdigit() else "unknown"


def remove_stale_temporaries(output: Path) -> list[Path]:
    """Remove the temporaries of atomic writes that a killed run left: outputs.replacing's
    (``TEMP_PREFIX``*: files, and the staging folders of replacing_files) and the older
    ``.<run file>.tmp*``; only those patterns. Called with the folder's lock held, so no live run is
    writing them."""
    stale = [p for name in RUN_FILES for p in output.glob(f".{name}.tmp*") if p.is_file()]
    stale += [p for p in output.glob(f"{TEMP_PREFIX}*") if p.is_file() or p.is_dir()]
    for path in [p for p in stale if p.is_dir()]:
        shutil.rmtree(path, ignore_errors=True)
    for path in [p for p in stale if not p.is_dir()]:
        path.unlink(missing_ok=True)
    if stale:
        print(f"removed {len(stale)} temporary file(s) an interrupted run left in {output}", file=sys.stderr)
    return stale


def check_run_dir(output: Path, recipe: dict, *, resume: bool, force: bool) -> None:
    """The refusals that need no lock (and create nothing)."""
    if output.exists() and not output.is_dir():
        raise RunFolderError(f"{output} is an existing file; train.output must be a folder")
    # Say first that another run is there, not what its files look like. Not for torchrun's other ranks:
    # their own rank 0 may hold the lock already (a race that refused the run now and then).
    if _is_main_process() and (output / LOCK_FILE).is_file():
        with _locked(output / LOCK_FILE, create=False):
            pass
    check_creatable(output)
    check_not_overlapping(output, {"data.root": recipe.get("data", {}).get("root")})
    if resume and force:
        raise RunFolderError("--resume continues the run in the output folder, --force replaces it: pass one of them")
    if not resume and not force and output.is_dir():
        _refuse_existing_run(output)


def _refuse_existing_run(output: Path) -> None:
    found = _existing_run_files(output)
    if found and _is_main_process():
        raise RunFolderError(
            f"{output} holds a training run ({', '.join(found)}); pass --resume to continue it "
            "or --force to replace it (or choose another --output)"
        )


def prepare_run_dir(output, recipe: dict, *, resume: bool, force: bool = False, allow_recipe_change: bool = False) -> None:
    """With the lock held: check what a resume reads, refuse a run already there, or with --force
    clear it; raises RunFolderError."""
    output = Path(output)
    if resume:
        _check_resumed_recipe(output, recipe, allow_recipe_change)
        state = output / STATE_FILE
        if state.is_file() and not zipfile.is_zipfile(state):  # torch.save writes a zip: a cheap check before the work
            raise RunFolderError(f"{state}: cannot read the training state (corrupt, truncated or not written by "
                                 "taseg train); pass --force instead of --resume to start the run over")
        check_resumable(output)
        return
    if not force:
        _refuse_existing_run(output)  # again under the lock: a run may have started meanwhile
        return
    found = _existing_run_files(output)
    if found and _is_main_process():
        for name in found:
            path = output / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"--force: removed the previous run's files from {output}", file=sys.stderr)


@contextmanager
def removed_if_nothing_to_resume(output):
    """A run that fails before its first saved state removes the folder it created (an empty or
    half-made run folder would only be refused by the next `taseg train`)."""
    output = Path(output)
    missing = [p for p in (output, *output.parents) if not p.exists()]
    try:
        yield
    except RunFolderInUse:
        raise  # the folder is the other run's
    except BaseException:
        if missing and _is_main_process() and not (output / STATE_FILE).exists():
            shutil.rmtree(missing[-1], ignore_errors=True)
        raise


def _check_resumed_recipe(output: Path, recipe: dict, allow: bool) -> None:
    recorded_file = output / RECIPE_FILE
    if not (output / STATE_FILE).is_file() or not recorded_file.is_file():
        return  # the loop says "nothing to resume"; a state without recipe.json predates this check
    try:
        recorded = read_json(recorded_file)
        if not isinstance(recorded, dict):
            raise ValueError("expected a JSON object")
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{recorded_file}: cannot read the recorded recipe ({exc})") from None
    changes = recipe_differences(recorded, recipe)
    if not changes:
        return
    listing = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
    if not allow:
        raise RunFolderError(
            f"{output}: the recipe differs from the one the run was trained with ({listing}); resume "
            "without these changes, or pass --allow-recipe-change to continue with them"
        )
    step = _state_step(output / STATE_FILE)
    print(f"warning: {output}: continuing from step {step} with a changed recipe ({listing}); "
          f"both recipes are recorded in {HISTORY_FILE}", file=sys.stderr)
    if _is_main_process():
        record_recipe_change(output, recorded, recipe, step, changes)


def read_train_state(path) -> dict:
    """The resume state (tensors and plain values only: weights_only, never unpickling code)."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        # torch's own message advises weights_only=False, which would run code from the file
        raise RunFolderError(f"{path}: cannot read the training state (corrupt, truncated or not written by "
                             f"taseg train: {type(exc).__name__}); pass --force instead of --resume to start the run over") from None
    try:
        problem = _state_problem(state)
    except ValueError as exc:  # parse_json of its "best" record
        problem = str(exc)
    if problem:
        raise RunFolderError(f"{path}: not a taseg training state ({problem}); pass --force instead of --resume to start over")
    return state


def _state_problem(state) -> str:
    """What is wrong with the shape of a loaded training state ("" when nothing)."""
    if not isinstance(state, dict) or "step" not in state:
        return "no step"
    if not isinstance(state["step"], int) or state["step"] < 0:
        return f"step {state['step']!r}"
    if not isinstance(state.get("model"), dict) or not isinstance(state.get("optimizer"), dict):
        return "no model or optimizer state"
    best = parse_json(state.get("best") or "", "best")
    if not (isinstance(best, dict) and isinstance(best.get("step"), int) and isinstance(best.get("miou"), (int, float))):
        return f"best: {best!r}"
    if best["step"] > state["step"]:
        return f"best step {best['step']} after the state's step {state['step']}"
    return ""


def check_resumable(output: Path) -> None:
    """Everything a resume reads or keeps is readable and consistent: the state, and the best and
    last checkpoints (a damaged best.safetensors would otherwise survive the resumed run, which
    only rewrites it when validation improves). A bit flip inside tensor data is out of reach:
    safetensors has no checksum."""
    state_path = output / STATE_FILE
    if not state_path.is_file():
        return  # the loop says "nothing to resume"
    best = parse_json(read_train_state(state_path)["best"], "best")
    for name in CHECKPOINTS:
        path = output / name
        if not path.is_file():
            if name == "best.safetensors" and best["step"] >= 0:
                raise RunFolderError(f"{path} is missing (the state records a best model at step {best['step']}); "
                                     "pass --force instead of --resume to start the run over")
            continue
        try:
            _read_checkpoint_fully(path)
        except ValueError as exc:  # InputError and safetensors' own errors
            raise RunFolderError(f"{path}: cannot be read ({' '.join(str(exc).split())}); pass --force instead "
                                 "of --resume to start the run over") from None


def _read_checkpoint_fully(path: Path) -> None:
    """Metadata parsed and every tensor read (a truncated file fails here, not after hours)."""
    # Here, not at the top: `taseg train` checks its run folder before torch loads, so a refusal
    # (a locked or changed run) comes at once.
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from taseg_ros.model.checkpoint import describe_checkpoint

    describe_checkpoint(path)
    try:
        load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(f"tensors unreadable: {exc}") from None


def _state_step(path: Path) -> int:
    return int(read_train_state(path)["step"])


def record_recipe_change(output: Path, recorded: dict, recipe: dict, step: int, changes: dict) -> None:
    """Append the new recipe (from `step` on) to recipe_history.json, starting the history with
    the recorded one (from step 0) the first time."""
    path = output / HISTORY_FILE
    history = _read_history(path) if path.is_file() else [{"from_step": 0, "recipe": recorded}]
    history.append({
        "from_step": step,
        "recipe": parse_json(json.dumps(recipe)),  # JSON-normalised: tuples as lists
        "changes": {k: {"from": old, "to": new} for k, (old, new) in changes.items()},
    })
    write_text_atomic(path, json.dumps(history, indent=2) + "\n")


def _read_history(path: Path) -> list:
    try:
        history = read_json(path)
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: cannot read the recipe history ({' '.join(str(exc).split())}); "
                             "repair or remove it") from None
    if not isinstance(history, list) or not all(isinstance(h, dict) and "from_step" in h for h in history):
        raise RunFolderError(f"{path}: not a recipe history (a list of {{from_step, recipe, changes}}); repair or remove it")
    return history


def drop_replayed_log_rows(path, resumed_step: int) -> int:
    """Remove rows of train_log.csv after `resumed_step` (the resumed run logs those steps
    again); returns how many were dropped. Written atomically (tmp + rename)."""
    path = Path(path)
    if not path.is_file():
        return 0
    rows = list(csv.reader(io.StringIO(read_text(path), newline="")))
    header, body = rows[:1], rows[1:]
    kept = [row for row in body if row and row[0].isdigit() and int(row[0]) <= resumed_step]
    if len(kept) == len(body):
        return 0
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(header + kept)
    write_text_atomic(path, buffer.getvalue())
    return len(body) - len(kept)
