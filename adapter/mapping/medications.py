"""Medication history → immune checkpoint inhibitor (ICI) exposures with their dates.

MedicationStatement, MedicationRequest and MedicationAdministration all count, unless their status
says the drug was not given, and a MedicationRequest only when its intent is an order (a proposal or a
plan is not exposure; mappings/medications.yaml `exposure_intent`). The drug is named by
medicationCodeableConcept or medicationReference (a Medication of the Bundle, contained, or read from
the FHIR server by fhir/gather.py). RxNorm ingredient codes match first; clinical-drug codings differ
from ingredient codes, so ingredient or brand names in the coding display or text match too, and say so.
A status or intent that is not a string is read as absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Any

from .. import tables
from ..fhir.elements import coding_list, codings
from ..fhir.wire import Entry, reference_key
from .dates import date_range

_DATE_KEYS = {
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod", "dateAsserted"),
    "MedicationRequest": ("authoredOn",),
    "MedicationAdministration": ("effectiveDateTime", "effectivePeriod"),
}


@dataclass(frozen=True)
class Exposure:
    drug: str
    ref: str | None
    start: date | None  # earliest possible start; None when undated
    start_text: str | None
    by_name: bool


def _concept(resource: dict[str, Any], medications: dict[str, dict[str, Any]]) -> Any:
    concept = resource.get("medicationCodeableConcept")
    if concept is not None:
        return concept
    ref = resource.get("medicationReference")
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        target = ref["reference"]
        if target.startswith("#"):  # contained Medication
            found = resource.get("contained")
            for contained in found if isinstance(found, list) else ():
                if isinstance(contained, dict) and contained.get("id") == target[1:]:
                    return contained.get("code")
        med = medications.get(reference_key(target))
        if med is not None:
            return med.get("code")
        if isinstance(ref.get("display"), str):
            return {"text": ref["display"]}
    return None


def _words(concept: Any) -> str:
    parts = []
    if isinstance(concept, dict):
        if isinstance(concept.get("text"), str):
            parts.append(concept["text"])
        for c in coding_list(concept):
            if isinstance(c, dict) and isinstance(c.get("display"), str):
                parts.append(c["display"])
    return " ".join(parts).lower()


@cache
def _names() -> tuple[re.Pattern[str], dict[str, tables.Drug]]:
    """One pattern for every ingredient and brand name (whole words), and the drug each name means."""
    by_name = {name: drug for drug in tables.medications().ici for name in drug.names}
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(by_name, key=len, reverse=True)) + r")\b")
    return pattern, by_name


def _identify(concept: Any) -> tuple[tables.Drug, bool] | None:
    table = tables.medications()
    for system, code in codings(concept):
        if system == table.system and code in table.by_rxnorm:
            return table.by_rxnorm[code], False
    pattern, by_name = _names()
    found = pattern.search(_words(concept))
    return (by_name[found.group(1)], True) if found else None


def _start(resource: dict[str, Any]) -> tuple[date | None, str | None]:
    for key in _DATE_KEYS.get(str(resource.get("resourceType")), ()):
        value = resource.get(key)
        text = value.get("start") if isinstance(value, dict) else value
        rng = date_range(text)
        if rng is not None and isinstance(text, str):
            return rng[0], text[:10]
    return None, None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def is_exposure(resource: dict[str, Any]) -> bool:
    """Whether the record says the drug was (or was ordered to be) given: its status does not deny it,
    and a request's intent is an order."""
    table = tables.medications()
    kind = str(resource.get("resourceType"))
    if _text(resource.get("status")) in table.excluded_status.get(kind, frozenset()):
        return False
    if kind not in table.exposure_intent:
        return True
    orders, absent_counts = table.exposure_intent[kind]
    intent = _text(resource.get("intent"))
    return absent_counts if intent is None else intent in orders


def ici_exposures(entries: list[Entry], medications: dict[str, dict[str, Any]], as_of: date) -> list[Exposure]:
    out = []
    for entry in entries:
        r = entry.resource
        if not is_exposure(r):
            continue
        found = _identify(_concept(r, medications))
        if found is None:
            continue
        start, start_text = _start(r)
        if start is not None and start > as_of:
            continue
        out.append(Exposure(found[0].name, entry.ref, start, start_text, found[1]))
    return out
