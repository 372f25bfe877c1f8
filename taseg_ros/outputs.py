"""Output paths of every command that writes: one overwrite policy and one set of checks.

Policy (stated in each command's --help through `cli.options.add_force_option`):
- an existing output file, or an existing non-empty output folder, is refused unless --force;
  with --force a file is replaced and a folder is written into (files of the same name replaced);
- an output must not be, contain or lie inside one of the command's inputs (even with --force:
  `--output-bag REC --force` must never delete the recording it reads);
- a file path that is an existing folder, a folder path that is an existing file, or a path
  under an existing file is refused before any work starts, with the path named;
- a run that fails or is interrupted removes what it created (new folders, new files), so no
  empty output folder or half-written result is left behind.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Union

from taseg_ros.errors import OutputPathError

PathLike = Union[str, os.PathLike]
Inputs = Union[Mapping[str, PathLike], Iterable[PathLike], None]

FORCE_HELP = "replace an existing output file, or write into a non-empty output folder (replacing files of the same name)"


def write_text_atomic(path: PathLike, text: str) -> None:
    """Replace a small text file in one step (temporary sibling + rename): a reader or a killed run
    sees the old file or the new one, never half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _absolute(path: PathLike) -> Path:
    """Absolute, symlinks resolved where they exist (so `a/../b` and links compare equal)."""
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _labelled(inputs: Inputs) -> list[tuple[str, Path]]:
    if inputs is None:
        return []
    items = inputs.items() if isinstance(inputs, Mapping) else ((None, p) for p in inputs)
    return [(label or str(path), Path(path)) for label, path in items if path not in (None, "")]


def check_not_overlapping(output: PathLike, inputs: Inputs) -> None:
    """Refuse an output that is, contains or lies inside one of `inputs` (paths, or a mapping
    option name -> path); writing or cleaning it would destroy what the command reads."""
    out = _absolute(output)
    for label, path in _labelled(inputs):
        source = _absolute(path)
        named = f" ({label})" if label != str(path) else ""
        if out == source:
            raise OutputPathError(f"{output}: the output is also an input{named}; choose another output path")
        if source.is_relative_to(out):
            raise OutputPathError(f"{output}: the output would contain the input {path}{named}; choose another output path")
        if out.is_relative_to(source) and source.is_dir():  # under a file: check_creatable says so
            raise OutputPathError(f"{output}: the output lies inside the input {path}{named}; choose another output path")


def _first_existing_ancestor(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path(path.absolute().anchor)


def check_creatable(path: PathLike) -> None:
    """The folders above `path` exist or can be made: none of them is a file, and the nearest
    existing one is writable."""
    path = Path(path)
    ancestor = _first_existing_ancestor(path)
    if not ancestor.is_dir():
        raise OutputPathError(f"cannot create {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot create {path}: no permission to write in {ancestor}")


def check_output_file(path: PathLike, *, force: bool = False, inputs: Inputs = None) -> Path:
    """Validate an output file path (see the module docstring); returns it as a Path."""
    path = Path(path)
    check_not_overlapping(path, inputs)
    if path.is_dir():
        raise OutputPathError(f"{path} is an existing folder; give a file path (e.g. {path / 'model.safetensors'})")
    if path.exists() and not force:
        raise OutputPathError(f"{path} exists; pass --force to replace it")
    check_creatable(path)
    return path


def check_output_dir(path: PathLike, *, force: bool = False, inputs: Inputs = None) -> Path:
    """Validate an output folder path (see the module docstring); returns it as a Path."""
    path = Path(path)
    check_not_overlapping(path, inputs)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{path} is an existing file; give a folder path")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise OutputPathError(f"{path} exists and is not empty; pass --force to write into it")
    check_creatable(path)
    return path


class _Created:
    """What a run adds under an output path, so that a failure can take exactly that back."""

    def __init__(self, path: Path) -> None:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        # The topmost folder this run will create (None: the path's parent exists).
        self.new_root = missing[-1] if missing else None
        self.path = path
        self.before = set(self._walk(path)) if path.is_dir() else None

    @staticmethod
    def _walk(root: Path) -> Iterator[Path]:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                yield Path(folder) / name

    def undo_dir(self) -> None:
        if self.before is None:  # the output folder is new: all of it is this run's
            shutil.rmtree(self.new_root or self.path, ignore_errors=True)
            return
        added = sorted(set(self._walk(self.path)) - self.before, key=lambda p: len(p.parts), reverse=True)
        for p in added:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def undo_file(self, existed: bool) -> None:
        if not existed:
            self.path.unlink(missing_ok=True)
        if self.new_root is not None and self.new_root != self.path:
            shutil.rmtree(self.new_root, ignore_errors=True)


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a read-only file system; the checks above cannot see everything
        raise OutputPathError(f"cannot create {path}: {exc.strerror or exc}") from None


@contextmanager
def output_dir(path: PathLike, *, force: bool = False, inputs: Inputs = None) -> Iterator[Path]:
    """Validate, create, and yield an output folder; on any failure (Ctrl-C included) remove
    what this run added to it, the folder itself when it was new."""
    path = check_output_dir(path, force=force, inputs=inputs)
    created = _Created(path)
    _make_folder(path)
    try:
        yield path
    except BaseException:
        created.undo_dir()
        raise


@contextmanager
def output_file(path: PathLike, *, force: bool = False, inputs: Inputs = None) -> Iterator[Path]:
    """Validate and yield an output file path (its folder created); on any failure remove the
    file if it is new and the folders this run created for it."""
    path = check_output_file(path, force=force, inputs=inputs)
    existed = path.exists()
    created = _Created(path)
    _make_folder(path.parent)
    try:
        yield path
    except BaseException:
        created.undo_file(existed)
        raise
