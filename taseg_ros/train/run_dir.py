"""The run folder of `taseg train`: what may be started, resumed or replaced there.

- A folder that holds a run is never replaced silently: without --resume it is refused (say
  --resume or --force); --force removes that run's files (only those) first.
- --resume continues with the recorded recipe. A changed recipe is refused with the list of
  differences unless --allow-recipe-change; then both recipes and the step of the change go to
  recipe_history.json and a warning says so.
- Rows of train_log.csv after the resumed step (logged by the interrupted run, replayed by the
  resumed one) are dropped, so every step appears once; TensorBoard does the same with
  SummaryWriter(purge_step=...) in the loop.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path

from taseg_ros.errors import TasegError
from taseg_ros.outputs import check_creatable, check_not_overlapping, write_text_atomic

STATE_FILE = "train_state.pt"
RECIPE_FILE = "recipe.json"
HISTORY_FILE = "recipe_history.json"
LOG_FILE = "train_log.csv"
# Everything a run writes into its folder; --force removes these and nothing else.
RUN_FILES = (STATE_FILE, "best.safetensors", "last.safetensors", "init.safetensors", LOG_FILE,
             "summary.json", RECIPE_FILE, HISTORY_FILE)
RUN_DIRS = ("tensorboard",)
# Where the data and the run live, how fast data is read and how much memory the plan may use
# (a resume on another machine): not what is trained.
NOT_RECIPE = frozenset({"data.root", "data.num_workers", "train.output", "train.gpu_memory"})


class RunFolderError(TasegError, ValueError):
    """A run folder that cannot be used as asked (a run is there, or the recipe changed)."""


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
    old, new = (_flatten(json.loads(json.dumps(r))) for r in (recorded, current))
    keys = sorted((set(old) | set(new)) - NOT_RECIPE)
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}


def _existing_run_files(output: Path) -> list[str]:
    return [name for name in (*RUN_FILES, *RUN_DIRS) if (output / name).exists()]


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # torchrun: only rank 0 changes the folder


def prepare_run_dir(output, recipe: dict, *, resume: bool, force: bool = False, allow_recipe_change: bool = False) -> None:
    """Check (and with --force clear) the run folder before any work; raises RunFolderError."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise RunFolderError(f"{output} is an existing file; train.output must be a folder")
    check_creatable(output)
    check_not_overlapping(output, {"data.root": recipe.get("data", {}).get("root")})
    if resume and force:
        raise RunFolderError("--resume continues the run in the output folder, --force replaces it: pass one of them")
    if resume:
        _check_resumed_recipe(output, recipe, allow_recipe_change)
        state = output / STATE_FILE
        if state.is_file() and not zipfile.is_zipfile(state):  # torch.save writes a zip: a cheap check before the work
            raise RunFolderError(f"{state}: cannot read the training state (corrupt, truncated or not written by "
                                 "taseg train); pass --force instead of --resume to start the run over")
        return
    found = _existing_run_files(output) if output.is_dir() else []
    if found and not force:
        raise RunFolderError(
            f"{output} holds a training run ({', '.join(found)}); pass --resume to continue it "
            "or --force to replace it (or choose another --output)"
        )
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
    except BaseException:
        if missing and _is_main_process() and not (output / STATE_FILE).exists():
            shutil.rmtree(missing[-1], ignore_errors=True)
        raise


def _check_resumed_recipe(output: Path, recipe: dict, allow: bool) -> None:
    recorded_file = output / RECIPE_FILE
    if not (output / STATE_FILE).is_file() or not recorded_file.is_file():
        return  # the loop says "nothing to resume"; a state without recipe.json predates this check
    try:
        recorded = json.loads(recorded_file.read_text())
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
    if not isinstance(state, dict) or "step" not in state:
        raise RunFolderError(f"{path}: not a taseg training state; pass --force instead of --resume to start over")
    return state


def _state_step(path: Path) -> int:
    return int(read_train_state(path)["step"])


def record_recipe_change(output: Path, recorded: dict, recipe: dict, step: int, changes: dict) -> None:
    """Append the new recipe (from `step` on) to recipe_history.json, starting the history with
    the recorded one (from step 0) the first time."""
    path = output / HISTORY_FILE
    history = json.loads(path.read_text()) if path.is_file() else [{"from_step": 0, "recipe": recorded}]
    history.append({
        "from_step": step,
        "recipe": json.loads(json.dumps(recipe)),
        "changes": {k: {"from": old, "to": new} for k, (old, new) in changes.items()},
    })
    write_text_atomic(path, json.dumps(history, indent=2) + "\n")


def drop_replayed_log_rows(path, resumed_step: int) -> int:
    """Remove rows of train_log.csv after `resumed_step` (the resumed run logs those steps
    again); returns how many were dropped. Written atomically (tmp + rename)."""
    path = Path(path)
    if not path.is_file():
        return 0
    rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
    header, body = rows[:1], rows[1:]
    kept = [row for row in body if row and row[0].isdigit() and int(row[0]) <= resumed_step]
    if len(kept) == len(body):
        return 0
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(header + kept)
    write_text_atomic(path, buffer.getvalue())
    return len(body) - len(kept)
