"""The embedded DuckDB both passes run in, and what its read errors mean to a user.

DuckDB runs in memory with a bounded memory limit; what it would spill goes to a private temporary folder
(mode 0700, removed afterwards): spilled rows are patients' data. Its own progress bar is off (the screen
shows one). A line that is not JSON stops the screen: DuckDB names the file; the line is found here with
Python's reader (DuckDB's line numbers are approximate), and the message names the file, the line and the
reason — never the line's content, which is a patient's data.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import orjson

from .sources import SourceError

MEMORY_LIMIT = "256MB"  # DuckDB's own buffers; the process adds the engine's (bench: peak RSS of a screen)
MAX_OBJECT_BYTES = 16 * 2**20  # DuckDB's default: a longer line (a resource over 16 MiB) stops the screen


def threads() -> int:
    """The cores this process may use (a container's CPU set, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def open_db() -> Iterator[duckdb.DuckDBPyConnection]:
    spill = tempfile.mkdtemp(prefix="axiom-screen-")  # mode 0700
    con = duckdb.connect(":memory:", config={
        "threads": threads(), "memory_limit": MEMORY_LIMIT, "temp_directory": spill,
        "preserve_insertion_order": False})
    try:
        con.execute("SET enable_progress_bar = false")
        yield con
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


def file_list(files: tuple[Path, ...]) -> list[str]:
    return [str(f) for f in files]


_IN_FILE = re.compile(r'in file "([^"]+)"')


def read_error(exc: duckdb.Error, files: tuple[Path, ...]) -> SourceError:
    """A DuckDB read failure as one line naming the file and, when it can be found, the line."""
    text = str(exc)
    named = _IN_FILE.search(text)
    path = Path(named.group(1)) if named else None
    if path is not None and path in files:
        found = first_bad_line(path)
        if found is not None and found[0] == 0:
            return SourceError(f"{path}: {found[1]}; nothing was screened")
        if found is not None:
            return SourceError(f"{path}: line {found[0]} {found[1]}; nothing was screened (fix or remove the line)")
    if "maximum_object_size" in text or "object_size" in text:
        return SourceError(f"{path or 'a file'}: a resource is longer than {MAX_OBJECT_BYTES // 2**20} MiB; "
                           "nothing was screened")
    first = text.splitlines()[0] if text else type(exc).__name__
    first = re.sub(r"Object \{.*", "a resource is not readable", first)  # DuckDB quotes the object: PHI
    return SourceError(f"{path or 'the source'}: cannot be read ({first[:200]}); nothing was screened")


def _duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise ValueError(f'has the key "{twice}" twice')
    return dict(pairs)


def first_bad_line(path: Path) -> tuple[int, str] | None:
    """The first line of `path` that is not one JSON value (or has a key twice), and why; None if none is."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    orjson.loads(line)
                except orjson.JSONDecodeError:
                    return number, "is not valid JSON"
                try:
                    json.loads(line, object_pairs_hook=_duplicate_keys)
                except ValueError as exc:
                    return number, str(exc) if "twice" in str(exc) else "is not valid JSON"
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        return 0, f"cannot be read ({type(exc).__name__})"
    return None
