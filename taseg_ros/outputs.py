"""Output paths of every command that writes: one overwrite policy and one set of checks.

Policy (stated in each command's --help through `cli.options.add_force_option`):
- an existing output file, or an existing non-empty output folder, is refused unless --force;
  with --force a file is replaced and a folder is written into (files of the same name replaced);
- an output must not be, contain or lie inside one of the command's inputs (even with --force:
  `--output-bag REC --force` must never delete the recording it reads);
- a file path that is an existing folder, a folder path that is an existing file, or a path
  under an existing file is refused before any work starts, with the path named;
- a run that fails or is interrupted removes what it created (new folders, new files), so no
  empty output folder or half-written result is left behind;
- an output folder is locked while a run writes into it (`output_dir`): a second run into the same
  folder is refused, with the folder named, instead of both reporting success over mixed files;
- every file is written beside its destination under a temporary name and renamed over it
  (`replacing`, `write_bytes_atomic`, `write_text_atomic`, `save_figure`), and so is a folder that
  a library writes whole (`StagedFolder`: a recording): a reader or a killed run sees the old file
  or the new one, never half of it, and a symlink at the destination is replaced, never written
  through; what a killed run leaves is a TEMP_PREFIX name that a later run removes;
- while an output is open (`output_dir`/`output_file`), a write whose folder resolves (through a
  link) into one of the command's inputs is refused;
- a write the system refuses (disk full, file too large, name too long, read-only, no permission)
  becomes one OutputPathError naming the file; what the run wrote is removed as above.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Union

from taseg_ros.errors import OutputPathError, TasegError

PathLike = Union[str, os.PathLike]
Inputs = Union[Mapping[str, PathLike], Iterable[PathLike], None]

# Every temporary file or folder of `replacing`/`replacing_files` is named TEMP_PREFIX + pid + random
# (+ suffix): a run killed with SIGKILL leaves them, and a later run may remove them by this name.
TEMP_PREFIX = ".taseg-"

FORCE_HELP = "replace an existing output file, or write into a non-empty output folder (replacing files of the same name)"


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
        if os.path.exists(parent):  # False, not an error, for a name over the system's limit
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
    check_name_length(path)
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
    check_name_length(path)
    check_not_overlapping(path, inputs)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{path} is an existing file; give a folder path")
    if path.is_dir():
        with _folder_lock(path):  # another run writing there: say so before any work
            pass
    if path.is_dir() and any(path.iterdir()) and not force:
        raise OutputPathError(f"{path} exists and is not empty; pass --force to write into it")
    check_creatable(path)
    return path


# Output folders this process holds locked (resolved path -> nesting depth): a command may open an
# output folder inside another of its own (bag select writes the dataset folder as bag extract does).
_LOCKED: dict[Path, int] = {}


@contextmanager
def _folder_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on the folder `path` for the block (released when the process ends,
    however it ends), or raise OutputPathError when another process holds it. A file system without
    flock (some network mounts) is written unlocked, as before."""
    key = _absolute(path)
    if key in _LOCKED:
        _LOCKED[key] += 1
        try:
            yield
        finally:
            _LOCKED[key] -= 1
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise OutputPathError(f"{path} is being written by another taseg run; wait for it to finish or "
                                  "choose another output folder") from None
        fd = None  # no flock here: go on without
    _LOCKED[key] = 1
    try:
        yield
    finally:
        del _LOCKED[key]
        if fd is not None:
            os.close(fd)  # releases the lock


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
    with _folder_lock(path):  # refused here, nothing of the other run's is undone
        try:
            with _protecting(inputs):
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
        with _protecting(inputs):
            yield path
    except BaseException:
        created.undo_file(existed)
        raise


# --- writing files ----------------------------------------------------------------------------
# The inputs of the outputs open now (output_dir/output_file add them): `replacing` refuses a
# destination whose folder resolves into one of them. Process-wide, not per thread or context: a
# writer thread of the command must be held to the same inputs.
_PROTECTED: list[tuple[str, Path]] = []


@contextmanager
def _protecting(inputs: Inputs) -> Iterator[None]:
    """Within the block, `replacing` refuses writes that resolve into one of `inputs`."""
    added = [(label, _absolute(p)) for label, p in _labelled(inputs)]
    _PROTECTED.extend(added)
    try:
        yield
    finally:
        for item in added:
            _PROTECTED.remove(item)


# errno -> what the user reads; these are the system refusing a write, not bugs.
WRITE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (the file system's or the process's file size limit)",
    errno.ENAMETOOLONG: "file name too long for the file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def write_error(exc: BaseException, path: PathLike) -> OutputPathError | None:
    """The one line for an OSError the system raised writing `path` (None: not a write refusal)."""
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:
        return OutputPathError(f"cannot write {path}: {WRITE_ERRORS[exc.errno]}")
    return None


def _space_problem(folder: Path) -> OSError | None:
    """Ask the system whether `folder` can take more bytes. Libraries that write through their own
    C code (torch.save, safetensors, OpenVINO, sqlite) wrap ENOSPC/EFBIG in their own exception
    types and messages; writing 1 MiB to a probe file there gets the system's own errno."""
    probe = folder / f"{TEMP_PREFIX}probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return exc
    try:
        block = memoryview(bytes(1 << 20))
        while block:  # a write may stop short of a limit; the next one then gets the errno
            block = block[os.write(fd, block):]
        os.fsync(fd)
        return None
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def check_name_length(path: PathLike) -> None:
    """Refuse a file or folder name longer than the file system allows, before any work."""
    path = Path(path)
    folder = _first_existing_ancestor(path)
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise OutputPathError(f"{path}: the name {part[:40]}... has {len(os.fsencode(part))} bytes; "
                                  f"the file system allows {limit}")


def check_write_target(path: PathLike) -> None:
    """Refuse writing `path` when its folder resolves (through a link) into a protected input."""
    folder = _absolute(Path(path).parent)
    for label, source in list(_PROTECTED):
        if folder == source or folder.is_relative_to(source):
            raise OutputPathError(f"{path}: its folder leads through a link into the input {source} ({label}); "
                                  "refused (remove the link or choose another output)")


@contextmanager
def replacing(path: PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer (any library) to write; when the block
    succeeds it is renamed over `path` (a link there is replaced, not followed), when it fails it
    is removed. A refusal by the system becomes one OutputPathError naming `path`."""
    path = Path(path)
    check_name_length(path)
    check_write_target(path)
    # A short name (a long destination name must not overflow the limit), created exclusively
    # with the mode a plain open() would give (the user's umask decides).
    tmp = path.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{suffix or '.tmp'}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        mode = os.stat(tmp).st_mode & 0o777
    except OSError as exc:
        raise write_error(exc, path) or exc from None
    try:
        with system_refusals(path):
            yield tmp
            os.chmod(tmp, mode)  # some writers (safetensors) recreate the file private
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def replacing_files(paths: Iterable[PathLike]) -> Iterator[Path]:
    """`replacing` for files written together (a model and its weights file): yield a temporary
    folder beside them where the writer writes each under its final name; when the block
    succeeds, each file it wrote is renamed over its destination, when it fails the folder goes.
    A file the writer did not write is left alone, whatever it is."""
    paths = [Path(p) for p in paths]
    for path in paths:
        check_name_length(path)
        check_write_target(path)
    stage = paths[0].parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        stage.mkdir()
    except OSError as exc:
        raise write_error(exc, paths[0]) or exc from None
    try:
        with system_refusals(paths[0], paths):
            yield stage
            for path in paths:
                if (stage / path.name).exists():
                    os.replace(stage / path.name, path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextmanager
def replacing_dir(path: PathLike) -> Iterator[Path]:
    """`replacing` for a whole folder: yield an empty temporary folder beside `path` for the writer
    to fill; when the block succeeds it is renamed to `path` (an existing folder there is first moved
    aside under a temporary name, then removed), when it fails it is removed. A reader (or a rerun
    after a kill) sees the complete old folder, the complete new one, or (killed between the two
    renames) none: never half of one. Temporary names start with TEMP_PREFIX."""
    path = Path(path)
    check_name_length(path)
    check_write_target(path)
    stage = path.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stage.mkdir()
    except OSError as exc:
        raise write_error(exc, path) or exc from None
    old = None
    try:
        with system_refusals(path):
            yield stage
            if path.is_dir() and not path.is_symlink():
                old = path.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.old"
                os.replace(path, old)
            elif path.exists() or path.is_symlink():
                path.unlink()
            os.replace(stage, path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextmanager
def system_refusals(path: PathLike, together: Iterable[Path] = ()) -> Iterator[None]:
    """Within the block, an exception of a writer of `path` that is the system refusing the write
    (whatever type the library wraps it in) -> one OutputPathError naming `path` (or the one of
    `together` the OSError names). Other exceptions pass unchanged."""
    path = Path(path)
    try:
        yield
    except TasegError:
        raise
    except Exception as exc:
        failed = Path(str(getattr(exc, "filename", None) or "")).name
        named = next((p for p in together if p.name == failed), path)
        refusal = write_error(exc, named) or write_error(_space_problem(_first_existing_ancestor(path)), path)
        if refusal is None:
            raise
        raise refusal from exc


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Replace a file with `data` in one step (see `replacing`)."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: PathLike, text: str) -> None:
    """Replace a text file in one step (see `replacing`): a reader or a killed run sees the old
    file or the new one, never half of it."""
    with replacing(path) as tmp:
        tmp.write_text(text)


def rename_into(source: PathLike, path: PathLike) -> None:
    """Rename a finished file over `path`, for a writer that must keep its own temporary name beside
    it (a resumable download's ``.part``, which `replacing` would remove when a run is killed): a link
    at `path` is replaced, not followed; a refusal by the system becomes one OutputPathError naming
    `path`."""
    check_write_target(path)
    try:
        os.replace(source, path)
    except OSError as exc:
        raise write_error(exc, path) or exc from None


def save_figure(figure, path: PathLike, **savefig_kwargs) -> None:
    """Save a matplotlib figure to `path` in one step (see `replacing`); the format follows `path`'s
    suffix, as matplotlib's own ``savefig`` does."""
    path = Path(path)
    with replacing(path, suffix=path.suffix) as tmp:
        figure.savefig(tmp, **savefig_kwargs)


class StagedFolder:
    """A folder that a library writes whole (rosbags creates a recording's folder itself, so
    `replacing` cannot hand it a file): written as ``<parent>/TEMP_PREFIX<pid>-<random>/<name>`` and
    renamed onto `path` by `commit`, so a killed run leaves a temporary folder (removed by a later
    run), never a half-written `path`. A `path` that appears meanwhile (another run writing the same
    output) is kept and this run's folder refused."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        check_name_length(self.path)
        check_write_target(self.path)
        remove_dead_temporaries(self.path.parent)
        self.stage = self.path.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self.stage.mkdir()
        except OSError as exc:
            raise write_error(exc, self.path) or exc from None
        self.inner = self.stage / self.path.name  # the writer creates it: its files keep their final names

    def commit(self) -> None:
        """Rename the finished folder onto `path`."""
        try:
            if os.path.lexists(self.path):
                raise OutputPathError(self._appeared())
            try:
                os.rename(self.inner, self.path)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise OutputPathError(self._appeared()) from None
                raise write_error(exc, self.path) or exc from None
        finally:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def _appeared(self) -> str:
        return (f"{self.path} appeared while this run wrote it (another run writing the same output?); it is "
                "kept and this run's output is not")


# TEMP_PREFIX + the writer's PID + "-" + 8 hex digits (+ a suffix): the names replacing,
# replacing_files and StagedFolder give their temporaries.
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-[0-9a-f]{8}")


def remove_dead_temporaries(folder: PathLike) -> list[Path]:
    """Remove the temporaries (files or folders) in `folder` whose writer is no longer running (a
    killed run's); a live run's are left alone."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True

