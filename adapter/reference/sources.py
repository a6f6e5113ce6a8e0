"""What the reference reads: the loaded tables and trials, plus the `source` the loaders drop.

Every value shown comes from the project's loaders (`tables`, `load_trial`), so the reference says what
the code uses. The loaders keep no `source` (no rule reads one); those, a semantics' reason and a drug's
target are taken from the same file read the same way (`tables._load`), entry by entry beside the
loaded one, so the two can never be paired wrongly (`pair`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .. import tables
from ..trials import Trial, load_trial

T = TypeVar("T")


def raw(name: str) -> dict[str, Any]:
    """A mappings file as `tables` reads it (AXIOM_MAPPINGS honoured)."""
    return tables._load(name)


def source(entry: object) -> str:
    """An entry's `source`, '' when it has none."""
    return str(entry.get("source") or "") if isinstance(entry, dict) else ""


def pair(loaded: Iterable[T], entries: object) -> Iterator[tuple[T, dict[str, Any]]]:
    """Loaded items with the file entries they were made from (the loaders keep the file's order)."""
    items = list(loaded)
    found = [e if isinstance(e, dict) else {} for e in entries] if isinstance(entries, list) else []
    if len(found) != len(items):
        raise ValueError(f"reference: {len(items)} loaded entries but {len(found)} in the file")
    return zip(items, found, strict=True)


def trials() -> list[tuple[str, Trial]]:
    """Every trial definition in mappings/trials/ (by file name), loaded and validated as the tool does.
    The file name is the `--trial` ID, unique where an id may repeat (an amendment keeps its trial's)."""
    folder = tables.mappings_dir() / "trials"
    return [(path.stem, load_trial(str(path))) for path in sorted(folder.glob("*.yaml"))]


def trial_file(trial: Trial) -> str:
    """The trial's file as the repository names it (never an absolute path: the output is the same anywhere)."""
    return f"mappings/trials/{Path(trial.path).name}"
