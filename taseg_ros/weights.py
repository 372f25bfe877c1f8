"""The weight files TASeg builds on: which a config needs, whether they are intact, and fetching them.

A registry of the official upstream files (names, sizes, sha256, URLs), a checker for the copies
in `models/`, and a resumable, checksum-verified downloader. Standard library only (urllib,
hashlib) plus tqdm, and no torch import, so `taseg weights` stays fast and works before torch is
usable on a machine (test/test_layers.py runs it and checks that no heavy module loads).

Downloads go to `<name>.part` next to the target; an interrupted download resumes with an HTTP
Range request, and only a file whose size and sha256 match the registry is renamed into place.
Set `TASEG_WEIGHTS_MIRROR` (or pass `mirror=`) to fetch `<mirror>/<name>` instead of the upstream
URL: an internal HTTP mirror, or `file:///mnt/usb/weights` for robots without internet.
"""
from __future__ import annotations

import enum
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from taseg_ros.errors import InputError, TasegError
from taseg_ros.formatting import progress_bar
from taseg_ros.outputs import rename_into

MIRROR_ENV = "TASEG_WEIGHTS_MIRROR"
_CHUNK = 1 << 20  # bytes per network read
_HASH_BUFFER = 8 << 20  # bytes per disk read when hashing; large reads keep sha256 CPU-bound
_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class WeightFile:
    """One weight file. `size_bytes`/`sha256` are None where no source confirms them ("unverified")."""

    name: str
    url: str | None
    size_bytes: int | None
    sha256: str | None
    description: str
    licence: str

    @property
    def verified(self) -> bool:
        return self.sha256 is not None


_SAM_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"

# Sizes and sha256 are the values that independent download manifests agree on; none of these
# files publishes a checksum next to itself except CLIP, whose URL embeds it.
# SAM sha256: micro-sam's pooch registry (computational-cell-analytics/micro-sam,
#   micro_sam/util.py) and other public manifests (all three values agree across them).
# SAM sizes: the HTTP Content-Length of dl.fbaipublicfiles.com as recorded in public download
#   manifests and a wget log (375042383 "Length: 375042383 (358M)"); several repos agree.
# SAM URLs and licence: facebookresearch/segment-anything README, "Model Checkpoints" (Apache-2.0).
REGISTRY: dict[str, WeightFile] = {
    "sam_vit_b_01ec64.pth": WeightFile(
        name="sam_vit_b_01ec64.pth",
        url=_SAM_BASE + "sam_vit_b_01ec64.pth",
        size_bytes=375_042_383,
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        description="Segment Anything ViT-B checkpoint (frozen encoder/decoder of config vit_b)",
        licence="Apache-2.0",
    ),
    "sam_vit_l_0b3195.pth": WeightFile(
        name="sam_vit_l_0b3195.pth",
        url=_SAM_BASE + "sam_vit_l_0b3195.pth",
        size_bytes=1_249_524_607,
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        description="Segment Anything ViT-L checkpoint (frozen encoder/decoder of config vit_l)",
        licence="Apache-2.0",
    ),
    "sam_vit_h_4b8939.pth": WeightFile(
        name="sam_vit_h_4b8939.pth",
        url=_SAM_BASE + "sam_vit_h_4b8939.pth",
        size_bytes=2_564_550_879,
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        description="Segment Anything ViT-H checkpoint (frozen encoder/decoder of config vit_h)",
        licence="Apache-2.0",
    ),
    # open_clip's ViT-L-14 'openai' weights are OpenAI's own release: open_clip/pretrained.py
    # (_VITL14["openai"]) points at this URL. OpenAI's clip.py verifies every download against
    # the sha256 embedded in the URL path; the size is the one recorded by several public
    # download manifests (932768134). A TorchScript archive: load it with
    # open_clip.load_openai_model(path) or torch.jit.load(path).state_dict(), not torch.load.
    # Licence: openai/CLIP repository (MIT).
    "ViT-L-14.pt": WeightFile(
        name="ViT-L-14.pt",
        url="https://openaipublic.azureedge.net/clip/models/"
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
        size_bytes=932_768_134,
        sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
        description="OpenAI CLIP ViT-L/14 (open_clip 'ViT-L-14' pretrained='openai'); text encoder "
        "for the class-name embeddings, needed for training, not for inference",
        licence="MIT",
    ),
}


class Status(str, enum.Enum):
    OK = "ok"
    UNVERIFIED = "present-unverified"  # present; the registry has no sha256 to compare with
    MISSING = "missing"
    PARTIAL = "partial"  # only an interrupted `<name>.part` download exists
    SIZE_MISMATCH = "size-mismatch"
    SHA_MISMATCH = "sha-mismatch"

    @property
    def usable(self) -> bool:
        return self in (Status.OK, Status.UNVERIFIED)


@dataclass(frozen=True)
class CheckResult:
    status: Status
    path: Path
    size_bytes: int | None = None  # on disk (of the .part for PARTIAL)
    sha256: str | None = None  # on disk, when it was computed

    def describe(self, wf: WeightFile) -> str:
        """One line for a person: what is wrong and what was expected."""
        if self.status is Status.SIZE_MISMATCH:
            return f"{self.path}: {self.size_bytes} bytes, expected {wf.size_bytes}"
        if self.status is Status.SHA_MISMATCH:
            return f"{self.path}: sha256 {self.sha256}, expected {wf.sha256}"
        if self.status is Status.PARTIAL:
            total = f" of {wf.size_bytes}" if wf.size_bytes else ""
            return f"{self.path}: interrupted download, {self.size_bytes}{total} bytes in {part_path(self.path)}"
        return f"{self.path}: {self.status.value}"


class WeightDownloadError(TasegError, RuntimeError):
    """A download that could not complete; the message says whether re-running resumes it."""


class WeightChecksumError(WeightDownloadError, ValueError):
    """The downloaded bytes are not the registered file; nothing was kept."""


def part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def lookup(name: str) -> WeightFile:
    """The registry entry for `name`, or an entry with no source for a file the registry doesn't know."""
    if name in REGISTRY:
        return REGISTRY[name]
    return WeightFile(
        name=name, url=None, size_bytes=None, sha256=None,
        description="not in taseg_ros's weight registry (user-supplied file)", licence="unknown",
    )


def required_files(cfg, purpose: str = "training") -> list[WeightFile]:
    """The weight files a TASegConfig needs: its SAM checkpoint, plus CLIP for training with text.

    purpose "inference" leaves CLIP out: trained checkpoints store their class-name embeddings.
    The tiny config needs nothing (random frozen weights, no CLIP weights).
    """
    if purpose not in ("training", "inference"):
        raise InputError(f"purpose must be 'training' or 'inference', not '{purpose}'")
    names = [cfg.sam_checkpoint]
    if purpose == "training" and cfg.text:
        names.append(cfg.clip_weights)
    return [lookup(name) for name in names if name]


def sha256_file(path: str | Path, progress: bool = False) -> str:
    """Streaming sha256 of a file (8 MiB reads into one reused buffer; no whole-file read)."""
    path = Path(path)
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_BUFFER)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle, _progress_bar(
        path.stat().st_size, f"sha256 {path.name}", progress
    ) as bar:
        while True:
            n = handle.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
            bar.update(n)
    return digest.hexdigest()


def check(path: str | Path, wf: WeightFile, verify_sha: bool = True, progress: bool = False) -> CheckResult:
    """State of the file at `path` against its registry entry.

    Size is checked first (free); sha256 only when the size matches, the registry knows the
    hash and `verify_sha` is true (False: a quick, size-only check that reports OK).
    """
    path = Path(path)
    if not path.is_file():
        part = part_path(path)
        if part.is_file():
            return CheckResult(Status.PARTIAL, path, size_bytes=part.stat().st_size)
        return CheckResult(Status.MISSING, path)
    size = path.stat().st_size
    if wf.size_bytes is not None and size != wf.size_bytes:
        return CheckResult(Status.SIZE_MISMATCH, path, size_bytes=size)
    if wf.sha256 is None:
        return CheckResult(Status.UNVERIFIED, path, size_bytes=size)
    if not verify_sha:
        return CheckResult(Status.OK, path, size_bytes=size)
    actual = sha256_file(path, progress=progress)
    status = Status.OK if actual == wf.sha256 else Status.SHA_MISMATCH
    return CheckResult(status, path, size_bytes=size, sha256=actual)


def source_url(wf: WeightFile, mirror: str | None = None) -> str | None:
    """Where `wf` is fetched from: `<mirror>/<name>` if a mirror is set (argument, else env), else upstream."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror:
        return mirror.rstrip("/") + "/" + wf.name
    return wf.url


def download(
    wf: WeightFile,
    dest_dir: str | Path,
    url: str | None = None,
    progress: bool = True,
    mirror: str | None = None,
) -> Path:
    """Fetch `wf` into `dest_dir/wf.name`, verified; returns the path.

    A file already there that passes `check` is kept without any request. Otherwise bytes stream
    into `<name>.part`; an existing .part is resumed with `Range: bytes=N-` (a server that
    ignores Range and sends everything restarts the file from zero). The complete file must
    match the registered size and sha256 before it is renamed (atomically) over the target.

    Raises WeightChecksumError (no .part or file left behind) when the bytes are wrong, and
    WeightDownloadError when the transfer stops early (the .part is kept: call again to resume).
    """
    dest_dir = Path(dest_dir)
    final = dest_dir / wf.name
    url = url or source_url(wf, mirror)
    if url is None:
        raise WeightDownloadError(
            f"{wf.name}: no download source (not in the registry); put the file in {dest_dir} yourself"
        )
    if final.is_file() and check(final, wf).status.usable:
        return final

    dest_dir.mkdir(parents=True, exist_ok=True)
    part = part_path(final)
    offset = part.stat().st_size if part.is_file() else 0
    if wf.size_bytes is not None and offset > wf.size_bytes:
        offset = 0  # longer than the real file: not a prefix of it

    if offset and wf.size_bytes is not None and offset == wf.size_bytes:
        # Complete but never verified (e.g. killed between last write and rename): no request needed.
        digest = _hash_prefix(part, offset)
    else:
        digest = _transfer(wf, url, part, offset, progress)

    written = part.stat().st_size
    if wf.size_bytes is not None and written != wf.size_bytes:
        raise WeightDownloadError(
            f"{wf.name}: download from {url} stopped at {written} of {wf.size_bytes} bytes; "
            f"{part} is kept, run the same command again to resume"
        )
    actual = digest.hexdigest()
    if wf.sha256 is not None and actual != wf.sha256:
        part.unlink(missing_ok=True)
        raise WeightChecksumError(
            f"{wf.name}: sha256 of the download from {url} is {actual}, expected {wf.sha256}; "
            "the file was deleted (wrong file on the server or mirror, or corrupted in transit)"
        )
    rename_into(part, final)
    return final


def _transfer(wf: WeightFile, url: str, part: Path, offset: int, progress: bool):
    """Write the file into `part` from byte `offset` (0 if the server won't resume); returns its sha256 state."""
    headers = {"User-Agent": "taseg_ros-weights/0.1 (python urllib)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part does not fit what the server has: start over
            part.unlink(missing_ok=True)
            return _transfer(wf, url, part, 0, progress)
        raise WeightDownloadError(f"{wf.name}: {url} answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightDownloadError(f"{wf.name}: cannot reach {url}: {reason}") from exc

    with response:
        status = getattr(response, "status", None)  # None for file:// URLs
        if offset and not (status == 206 and _range_start(response.headers.get("Content-Range")) == offset):
            offset = 0  # the server sent the whole file (Range ignored, or a range we did not ask for)
        remaining = _content_length(response)
        if wf.size_bytes is not None and remaining is not None and offset + remaining != wf.size_bytes:
            part.unlink(missing_ok=True)  # whatever it holds came from somewhere we no longer trust
            raise WeightChecksumError(
                f"{wf.name}: {url} offers {offset + remaining} bytes, expected {wf.size_bytes}; "
                "not the registered file (check the URL or mirror)"
            )
        digest = _hash_prefix(part, offset) if offset else hashlib.sha256()
        total = wf.size_bytes or (offset + remaining if remaining is not None else None)
        received = offset
        try:
            with open(part, "r+b" if offset else "wb") as out, _progress_bar(total, wf.name, progress, offset) as bar:
                out.seek(offset)
                out.truncate()
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    received += len(chunk)
                    if wf.size_bytes is not None and received > wf.size_bytes:
                        out.close()
                        part.unlink(missing_ok=True)
                        raise WeightChecksumError(
                            f"{wf.name}: {url} sent more than the expected {wf.size_bytes} bytes; "
                            "not the registered file, nothing was kept"
                        )
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except (OSError, http.client.HTTPException) as exc:  # connection reset, timeout, disk full
            raise WeightDownloadError(
                f"{wf.name}: download from {url} interrupted after {part.stat().st_size if part.exists() else 0} "
                f"bytes ({exc}); {part} is kept, run the same command again to resume"
            ) from exc
    return digest


def _hash_prefix(part: Path, length: int):
    """sha256 state over the first `length` bytes of `part`, ready to be fed the rest."""
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_BUFFER)
    view = memoryview(buffer)
    left = length
    with open(part, "rb", buffering=0) as handle:
        while left:
            n = handle.readinto(view[: min(left, len(buffer))])
            if not n:
                break
            digest.update(view[:n])
            left -= n
    return digest


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _range_start(content_range: str | None) -> int | None:
    match = _CONTENT_RANGE.match(content_range or "")
    return int(match.group(1)) if match else None


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _progress_bar(total: int | None, label: str, enabled: bool, initial: int = 0):
    return progress_bar(
        total=total, initial=initial, desc=label, unit="B", unit_scale=True, unit_divisor=1024, enabled=enabled,
    )
