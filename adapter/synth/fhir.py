"""Small builders for the FHIR R4 resources the generator and the tests write.

Each returns a plain dict (raw JSON shape), exactly as an EHR would send it; optional fields are left
out rather than sent empty.
"""

from __future__ import annotations

from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
HISTOLOGY_EXT = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"

Resource = dict[str, Any]


def concept(system: str, code: str, display: str | None = None, text: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    out: dict[str, Any] = {"coding": [coding]}
    if text:
        out["text"] = text
    return out


def patient(pid: str, birth_date: str | None = "1990-01-01", gender: str | None = "female",
            name: str = "Test") -> Resource:
    r: Resource = {"resourceType": "Patient", "id": pid, "name": [{"family": name, "given": ["Synthetic"]}]}
    if gender:
        r["gender"] = gender
    if birth_date:
        r["birthDate"] = birth_date
    return r


def quantity(value: float, unit: str | None, ucum: str | None = None,
             comparator: str | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if comparator:
        q["comparator"] = comparator
    if unit:
        q["unit"] = unit
    if ucum:
        q["system"] = UCUM
        q["code"] = ucum
    return q


def observation(oid: str, subject: str, loinc: str, when: str, *, value: float | dict[str, Any] | None = None,
                unit: str | None = None, ucum: str | None = None, comparator: str | None = None,
                high: float | None = None, high_unit: str | None = None, status: str = "final",
                coded: dict[str, Any] | None = None, integer: int | None = None,
                method: dict[str, Any] | None = None, absent: bool = False,
                component: list[dict[str, Any]] | None = None, category: str = "laboratory") -> Resource:
    """An Observation; `value` may be a number (with unit/ucum) or left out for coded/integer values."""
    r: Resource = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "category": [concept("http://terminology.hl7.org/CodeSystem/observation-category", category)],
        "code": concept(LOINC, loinc),
        "subject": {"reference": subject},
        "effectiveDateTime": when,
    }
    if absent:
        r["dataAbsentReason"] = concept("http://terminology.hl7.org/CodeSystem/data-absent-reason", "error")
    elif coded is not None:
        r["valueCodeableConcept"] = coded
    elif integer is not None:
        r["valueInteger"] = integer
    elif isinstance(value, int | float):
        r["valueQuantity"] = quantity(float(value), unit, ucum, comparator)
    if high is not None:
        r["referenceRange"] = [{"high": quantity(high, high_unit or unit, high_unit or ucum)}]
    if method is not None:
        r["method"] = method
    if component is not None:
        r["component"] = component
    return r


def condition(cid: str, subject: str, system: str, code: str, display: str | None = None, *,
              clinical: str | None = "active", verification: str | None = "confirmed",
              histology: tuple[str, str] | None = None, recorded: str | None = None) -> Resource:
    r: Resource = {
        "resourceType": "Condition",
        "id": cid,
        "code": concept(system, code, display, text=display),
        "subject": {"reference": subject},
    }
    if clinical:
        r["clinicalStatus"] = concept("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical)
    if verification:
        r["verificationStatus"] = concept("http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                          verification)
    if histology:
        r["extension"] = [{"url": HISTOLOGY_EXT, "valueCodeableConcept": concept(ICDO3, *histology)}]
    if recorded:
        r["recordedDate"] = recorded
    return r


def medication_request(mid: str, subject: str, rxnorm: str | None, name: str, authored: str | None,
                       status: str = "completed", resource_type: str = "MedicationRequest") -> Resource:
    """A medication resource of any of the three types, with an RxNorm coding or text only."""
    med = concept(RXNORM, rxnorm, name) if rxnorm else {"text": name}
    r: Resource = {"resourceType": resource_type, "id": mid, "status": status,
                   "medicationCodeableConcept": med, "subject": {"reference": subject}}
    if resource_type == "MedicationRequest":
        r["intent"] = "order"
        if authored:
            r["authoredOn"] = authored
    elif authored:
        r["effectiveDateTime"] = authored
    return r


def bundle(resources: list[Resource], bundle_type: str = "collection",
           full_urls: list[str] | None = None) -> dict[str, Any]:
    entries = []
    for i, r in enumerate(resources):
        entry: dict[str, Any] = {"resource": r}
        if full_urls is not None:
            entry["fullUrl"] = full_urls[i]
        entries.append(entry)
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}


def reference_range(low: float | None, high: float | None, unit: str | None,
                    ucum: str | None = None) -> dict[str, Any]:
    """One Observation.referenceRange with both limits, as labs send them (the builder above sends high only)."""
    rng: dict[str, Any] = {}
    if low is not None:
        rng["low"] = quantity(low, unit, ucum)
    if high is not None:
        rng["high"] = quantity(high, unit, ucum)
    return rng


def interpretation(code: str) -> list[dict[str, Any]]:
    """Observation.interpretation with a v3 ObservationInterpretation code (N, L, H, LL, HH)."""
    system = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
    shown = {"N": "Normal", "L": "Low", "H": "High", "LL": "Critical low", "HH": "Critical high"}
    return [concept(system, code, shown.get(code))]
