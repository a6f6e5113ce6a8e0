"""Writing the worklist: files that hold patient data, readable by their owner only (mode 0600).

Each file is written under a temporary name created 0600 (never a moment world-readable, whatever the
umask) and renamed into place, so a reader never sees half a worklist and a rerun replaces the last one.
`--out` is checked before the screen starts: an hour's scan must not end on an unwritable folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from .sources import SourceError

PRIVATE = 0o600


def prepare(out: Path) -> None:
    """Create `out` (0700) if needed and check that files can be written in it."""
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = out / f".axiom-screen-probe-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise SourceError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    if not out.is_dir():
        raise SourceError(f"--out {out}: not a folder")


def write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, PRIVATE)  # an existing temporary file keeps its mode through O_CREAT
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SourceError(f"{path}: cannot be written ({exc.strerror or exc})") from None
