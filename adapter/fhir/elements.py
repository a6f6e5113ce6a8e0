"""Readers of FHIR JSON elements shared by every mapping module: codings, concept text, numbers.

They take parsed JSON as it arrives (any type) and never raise: an element of the wrong JSON type is
read as absent, so one malformed field cannot fail a whole record.
"""

from __future__ import annotations

import math
from typing import Any

Coding = tuple[str, str]  # (system, code)



def coding_list(concept: Any) -> list[Any]:
    """A CodeableConcept's `coding` array; [] when the concept or the array has the wrong JSON type."""
    found = concept.get("coding") if isinstance(concept, dict) else None
    return found if isinstance(found, list) else []


def unreadable_concept(value: Any) -> bool:
    """A CodeableConcept that is there but no code can be read from: not an object, or `coding` that is
    not a list. One with text only (or no coding) is readable: it names no code."""
    if value is None:
        return False
    coding = value.get("coding") if isinstance(value, dict) else None
    return not isinstance(value, dict) or (coding is not None and not isinstance(coding, list))


def codings(concept: Any) -> frozenset[Coding]:
    """(system, code) of every coding that has both as strings."""
    out = set()
    for c in coding_list(concept):
        if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str):
            out.add((c["system"], c["code"]))
    return frozenset(out)


def concept_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if isinstance(concept.get("text"), str):
        return str(concept["text"])
    for c in coding_list(concept):
        if isinstance(c, dict) and (c.get("display") or c.get("code")):
            return str(c.get("display") or c.get("code"))
    return ""


def number(x: Any) -> float | None:
    """A JSON number as a finite float; None for anything else — including an integer of 310+ digits,
    which no double can hold (float() raises OverflowError): not a finite number, so absent."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    try:
        value = float(x)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def fmt_number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:,.0f}"


def quantity_text(q: dict[str, Any]) -> str:
    comparator = f"{q['comparator']} " if isinstance(q.get("comparator"), str) else ""
    value = number(q.get("value"))
    shown = fmt_number(value) if value is not None else "?"
    unit = q.get("unit") or q.get("code") or ""
    return f"{comparator}{shown} {unit}".strip()


