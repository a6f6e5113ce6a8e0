"""The criteria and code-mapping reference (docs/reference/), generated from mappings/.

`documents()` renders every page from the loaded tables and trial definitions (AXIOM_MAPPINGS honoured);
`stale()` says which pages on disk differ; `write()` brings them up to date. The output depends on the
data only — no dates, sorted where the data has no order, `\\n` line endings — so the checked-in pages
can be compared byte for byte (`axiom-cds reference --check`, tests/test_reference_docs.py).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import InputError
from . import answers, conditions, criteria, index, medications, observations, units
from .markdown import NOTICE
from .sources import trials

COMMAND = "axiom-cds reference"
# What unusable data or an unwritable --out raises: a bad trial file, a table without a key it needs, YAML
# that does not parse, a file that cannot be read or written. The command reports each as one line.
FAILURES = (InputError, ValueError, KeyError, TypeError, OSError, yaml.YAMLError)


def documents() -> dict[str, str]:
    """File name → Markdown, for every page of the reference."""
    found = trials()
    pages = {f"criteria-{stem}.md": criteria.document(stem, trial) for stem, trial in found}
    pages |= {
        "observations.md": observations.document(found),
        "conditions.md": conditions.document(found),
        "medications.md": medications.document(found),
        "answers.md": answers.document(found),
        "units.md": units.document(),
        "index.md": index.document(found),
    }
    return dict(sorted(pages.items()))


def _generated(path: Path) -> bool:
    """A page this command wrote (it carries the notice): one left over from data since removed is stale."""
    try:
        return NOTICE in path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def stale(out: Path, pages: dict[str, str]) -> list[str]:
    """Pages in `out` that differ from `pages`, are missing, or were generated and are no longer."""
    differ = [name for name, text in pages.items()
              if not (out / name).is_file() or (out / name).read_bytes() != text.encode("utf-8")]
    leftover = [p.name for p in sorted(out.glob("*.md")) if p.name not in pages and _generated(p)]
    return sorted(differ + leftover)


def write(out: Path, pages: dict[str, str]) -> list[str]:
    """Write the pages that changed, remove generated ones no longer produced; the names touched."""
    changed = stale(out, pages)
    out.mkdir(parents=True, exist_ok=True)
    for name in changed:
        path = out / name
        if name in pages:
            path.write_bytes(pages[name].encode("utf-8"))
        else:
            path.unlink()
    return changed
