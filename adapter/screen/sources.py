"""Where a screen reads from: the NDJSON files of a folder, as Bulk Data `$export` writes them.

Only the folder's own `*.ndjson` / `*.ndjson.gz` files are read (not `errors/`, where an export puts its
OperationOutcome files, nor any other subfolder); a file may hold one resource type or many. The list is
sorted, so two runs read the same files in the same order. Each file's first resource type is looked at
(`leads`): an export writes one type per file, so the Patient and Condition files — a few percent of the
bytes — can be narrowed first; the passes stay correct for any other layout (engines.py).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..errors import InputError

SUFFIXES = (".ndjson", ".ndjson.gz")


class SourceError(InputError):
    """The source cannot be screened (no such folder, no NDJSON file in it, a line that is not JSON …)."""


@dataclass(frozen=True)
class Sources:
    """The files of one source, sorted by name; `folder` is what the user named."""

    folder: Path
    files: tuple[Path, ...]
    leads: tuple[str | None, ...] = ()  # each file's first resource type (None: not found)

    def led_by(self, *types: str) -> tuple[Path, ...]:
        """The files whose first resource is of one of these types."""
        return tuple(f for f, t in zip(self.files, self.leads, strict=True) if t in types)


def find_sources(folder: Path) -> Sources:
    """The NDJSON files directly in `folder`. SourceError when there is no such folder or no such file."""
    if not folder.exists():
        raise SourceError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise SourceError(f"{folder}: not a folder (give the folder that holds the NDJSON files)")
    try:
        files = sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIXES) and p.is_file())
    except OSError as exc:
        raise SourceError(f"{folder}: cannot be read ({exc.strerror or exc})") from None
    if not files:
        raise SourceError(f"{folder}: no *.ndjson or *.ndjson.gz file in it")
    return Sources(folder, tuple(files), tuple(first_type(p) for p in files))


LOOK_LINES = 16  # blank lines before the first resource that are looked past


def first_type(path: Path) -> str | None:
    """The resourceType of the file's first resource; None when it cannot be told (the passes then read
    the file as a file of any type). SourceError when the file cannot be opened or is not gzip as named."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            for _ in range(LOOK_LINES):
                line = fh.readline()
                if not line:
                    return None
                if line.strip():
                    break
            else:
                return None
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SourceError(f"{path}: cannot be read ({why})") from None
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    return kind if isinstance(kind, str) else None
