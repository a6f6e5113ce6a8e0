"""The destination folder: private files, and the small state file that makes a download resumable.

Everything written there holds PHI or a way to it (the status URL, file URLs that may be pre-signed):
the folder is created 0700 and every file 0600, whatever the umask. The state file records what the
run asked for, the status URL once the kick-off was accepted, the manifest once the export completed,
and each file once it is whole on disk; it is rewritten atomically (temp file, fsync, rename), so an
interruption at any point leaves either the old state or the new one. Rerunning the same command
reads it: polling goes on at the recorded status URL, finished files are not downloaded again, and a
completed download is returned as it is.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from .errors import DestinationError

STATE_NAME = ".axiom-bulk-state.json"
SOURCE_NAME = "source.json"
STATE_VERSION = 1
MAX_STATE_BYTES = 64 * 1024 * 1024


def prepare(dest: Path) -> Path:
    """The destination folder, created 0700 when missing; DestinationError when it cannot be."""
    try:
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise DestinationError(f"cannot create the destination folder {dest} ({exc.strerror})") from None
    if not dest.is_dir():
        raise DestinationError(f"{dest} is not a folder")
    return dest


def append_private(path: Path, size: int) -> BinaryIO:
    """An existing file cut back to `size` bytes (what a checkpoint recorded), opened to append; still 0600."""
    fd = os.open(path, os.O_WRONLY)
    os.fchmod(fd, 0o600)
    os.ftruncate(fd, size)
    os.lseek(fd, size, os.SEEK_SET)
    return os.fdopen(fd, "wb")


def create_private(path: Path) -> BinaryIO:
    """A new file (truncated if present) that only its owner can read: 0600 from its creation."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    return os.fdopen(fd, "wb")


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a 0600 temp file beside it, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with create_private(tmp) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class FileRecord:
    """One file of the manifest, whole on disk."""

    name: str  # in the destination folder
    type: str  # resource type the manifest gave (OperationOutcome for error files)
    bytes: int
    resources: int  # lines (NDJSON resources) in the file
    error: bool = False  # from the manifest's `error` list


@dataclass
class ExportState:
    """What a run asked for and how far it got (see the module docstring)."""

    server: str
    request: str  # the kick-off URL (base, level, group, _type, _since): a rerun must ask the same
    method: str = "export"  # or "search" (the fallback)
    status_url: str | None = None
    kicked_off: str | None = None  # ISO time the kick-off was accepted
    manifest: dict[str, Any] | None = None
    files: dict[str, FileRecord] = field(default_factory=dict)  # by manifest URL
    complete: bool = False
    cleaned_up: bool = False  # the server was told (DELETE) that the files may go
    patients: int | None = None  # the search fallback: patients found
    # the search fallback under way: the patients found, how many are written, and the part files' sizes
    # then (bulk/search.py SearchProgress) — a rerun goes on from there
    search: dict[str, Any] | None = None
    version: int = STATE_VERSION

    def save(self, dest: Path) -> None:
        write_private(dest / STATE_NAME, orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))


def load_state(dest: Path) -> ExportState | None:
    """The state left by an earlier run, or None; DestinationError when it cannot be read."""
    path = dest / STATE_NAME
    if not path.exists():
        return None
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            raise DestinationError(f"{path} is too large to be a download state; remove it to start again")
        data = orjson.loads(path.read_bytes())
        files = {url: FileRecord(**rec) for url, rec in data.pop("files", {}).items()}
        state = ExportState(**data, files=files)
    except (OSError, orjson.JSONDecodeError, TypeError, AttributeError):
        raise DestinationError(f"{path} is not a download state this version can read; remove it to start "
                               "again") from None
    if state.version != STATE_VERSION:
        raise DestinationError(f"{path} was written by another version; remove it to start again")
    return state


def clear_state(dest: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (dest / STATE_NAME).unlink()
