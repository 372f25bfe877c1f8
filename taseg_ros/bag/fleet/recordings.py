"""Which recordings a fleet command works on, their folder names in the output, and their fingerprints.

A path on the command line is a recording (a rosbag2 folder with metadata.yaml, or a bare .mcap /
.db3 file) or a folder that holds recordings: every folder below it with a metadata.yaml is one
(searched recursively; a recording's own subfolders are not searched). Found recordings are taken in
path order, duplicates once.

The fingerprint says "the same recording" without reading all of it (100 hours are terabytes):
sha256 over metadata.yaml and, per storage file, its name, size and first and last MiB. A recording
re-recorded, cut, appended to or repaired gets another; one copied elsewhere keeps its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from taseg_ros.config_io import read_bytes
from taseg_ros.errors import InputError, MissingInputError

METADATA = "metadata.yaml"
STORAGE_SUFFIXES = (".mcap", ".db3")
_EDGE_BYTES = 1 << 20


@dataclass(frozen=True)
class Recording:
    path: Path
    name: str  # its folder in the output: the recording's name, made unique

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in storage_files(self.path))


def is_recording(path: Path) -> bool:
    """A rosbag2 folder (metadata.yaml, or a storage file directly in it) or a bare storage file."""
    if path.is_dir():
        return (path / METADATA).is_file() or any(p.suffix in STORAGE_SUFFIXES for p in path.iterdir())
    return path.is_file() and path.suffix in STORAGE_SUFFIXES


def find_recordings(paths) -> list[Recording]:
    """The recordings ``paths`` name or hold (module docstring), each with a unique output name;
    InputError when a path is neither or a folder holds none."""
    found: list[Path] = []
    for given in map(Path, paths):
        if not given.exists():
            raise MissingInputError(f"{given}: no such recording or folder")
        if is_recording(given):
            found.append(given)
            continue
        if not given.is_dir():
            raise InputError(f"{given}: not a rosbag2 recording (a folder with {METADATA}, or a .mcap / .db3 file)")
        inside = sorted(p.parent for p in given.rglob(METADATA))
        inside = [p for p in inside if not any(q != p and p.is_relative_to(q) for q in inside)]
        if not inside:
            raise InputError(f"{given}: holds no rosbag2 recording (no {METADATA} below it)")
        found += inside
    unique = sorted({p.resolve(): p for p in found}.values(), key=lambda p: str(p.resolve()))
    return _named(unique)


def _named(paths: list[Path]) -> list[Recording]:
    """Output names: the recording's name; where two share one, each gets a short hash of its path."""
    names = [recording_name(p) for p in paths]
    out = []
    for path, name in zip(paths, names):
        if names.count(name) > 1:
            name = f"{name}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
        out.append(Recording(path, name))
    return out


def recording_name(path: Path) -> str:
    """The folder's name, or the bare file's without its suffix."""
    name = Path(path).resolve().name
    for suffix in STORAGE_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def storage_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES and p.is_file())


def fingerprint(path: Path) -> str:
    """See the module docstring; a recording that cannot be read is a MissingInputError."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        if path.is_dir():
            digest.update(b"metadata.yaml\0" + read_bytes(path / METADATA) + b"\0")
        for file in storage_files(path):
            size = file.stat().st_size
            digest.update(f"{file.name}\0{size}\0".encode())
            with file.open("rb") as handle:
                digest.update(handle.read(_EDGE_BYTES))
                if size > _EDGE_BYTES:
                    handle.seek(max(_EDGE_BYTES, size - _EDGE_BYTES))
                    digest.update(handle.read(_EDGE_BYTES))
    except OSError as exc:
        raise MissingInputError(f"{path}: cannot read the recording ({exc.strerror or exc})") from None
    return digest.hexdigest()
