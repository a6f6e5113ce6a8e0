"""The few Markdown pieces the reference is written with: inert text, code spans, tables.

Data goes in as text (a display, a source, a unit): every character that would be markup is escaped
(`report.card.md_text`, the card's escaping), so a `|` in a display never opens a table cell and a `*`
in `10*3/uL` never starts emphasis.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..report.card import clinical, md_text


def text(value: object) -> str:
    """Data as inert Markdown on one line."""
    return md_text(" ".join(str(value).split()))


def words(value: str) -> str:
    """Our own notation made clinical (≥, ≤, × ULN, µL), as inert Markdown."""
    return text(clinical(value))


def code(value: object, cell: bool = True) -> str:
    """A code span. In a table cell a `|` is escaped as GFM asks, even inside the span."""
    shown = " ".join(str(value).split())
    if cell:
        shown = shown.replace("|", "\\|")
    fence = "``" if "`" in shown else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{shown}{pad}{fence}"


def number(value: float) -> str:
    """A number exactly as the data has it, digits grouped: 100,000 · 9 · 1.5 · 16,114.5 (never rounded)."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,}"


def link(label: str, target: str) -> str:
    return f"[{label}]({target})"


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    """A GFM table; cells are already Markdown (escaped by the caller). Empty cells show as —."""
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell or "—" for cell in row) + " |" for row in rows]
    return lines


def document(title: str, *blocks: list[str]) -> str:
    """A whole file: the title, the generated-file notice, then blocks separated by one blank line."""
    parts = [[f"# {title}"], [NOTICE], *(b for b in blocks if b)]
    return "\n\n".join("\n".join(b) for b in parts) + "\n"


NOTICE = ("> Generated from `mappings/` by `axiom-cds reference`: edit the data, then run the command. "
          "`make test` fails when this page and the data differ.")
