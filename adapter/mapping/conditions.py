"""Conditions → which code sets (ASPS, sarcoma, metastasis, Gilbert, HIV, pregnancy) a patient has.

Only current conditions count: clinicalStatus active/recurrence/relapse (or absent, noted), and never
refuted or entered-in-error. Codes are read from Condition.code and from the mCODE histology
extension, on code + system only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from fhir.resources.R4B.condition import Condition
from pydantic import ValidationError

from .. import tables
from ..fhir.elements import codings, concept_text
from ..fhir.wire import Entry
from .dates import date_range


@dataclass(frozen=True)
class ConditionFact:
    set_id: str
    ref: str | None
    display: str
    coding: tables.Coding
    confirmed: bool  # verificationStatus confirmed or absent
    verified_code: bool  # the code is verified in mappings (not a '?' entry)
    note: str | None = None


def _status(concept: Any) -> str | None:
    for _, code in codings(concept):
        return code
    return None


def _all_codings(resource: dict[str, Any], histology_url: str) -> list[tuple[tables.Coding, str]]:
    out = [(c, concept_text(resource.get("code"))) for c in codings(resource.get("code"))]
    for ext in resource.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == histology_url:
            concept = ext.get("valueCodeableConcept")
            out.extend((c, concept_text(concept)) for c in codings(concept))
    return out


def _recorded_after(resource: dict[str, Any], as_of: date) -> bool:
    for key in ("onsetDateTime", "recordedDate"):
        rng = date_range(resource.get(key))
        if rng is not None and rng[0] > as_of:
            return True
    return False


def condition_facts(entries: list[Entry], as_of: date) -> list[ConditionFact]:
    """One fact per (condition, code set) it belongs to, for current conditions only."""
    table = tables.conditions()
    facts: list[ConditionFact] = []
    for entry in entries:
        r = entry.resource
        verification = _status(r.get("verificationStatus"))
        if verification in table.excluded_verification_status:
            continue
        clinical = _status(r.get("clinicalStatus"))
        if clinical is not None and clinical not in table.active_clinical_status:
            continue
        if _recorded_after(r, as_of):
            continue
        matched: dict[str, ConditionFact] = {}
        for coding, text in _all_codings(r, table.histology_extension):
            for set_id, code_set in table.sets.items():
                rule = code_set.match(*coding)
                if rule is None or set_id in matched:
                    continue
                matched[set_id] = ConditionFact(
                    set_id=set_id,
                    ref=entry.ref,
                    display=text or coding[1],
                    coding=coding,
                    confirmed=verification not in table.unconfirmed_verification_status,
                    verified_code=rule.verified,
                    note="clinical status not recorded" if clinical is None else None,
                )
        if matched:
            try:
                Condition.model_validate(r)
            except ValidationError:
                continue  # not valid FHIR: never evidence
            facts.extend(matched.values())
    return facts
