"""PatientRecord: one patient's raw FHIR resources, attributed to that patient and nothing else.

Resources stay raw here (fhir/wire.py: a head of a few elements, the rest parsed when first read):
validating thousands of Observations with pydantic costs ~30× a JSON parse, so the mapping layer
filters by code first and validates only what it keeps. What this module guarantees is attribution:
a resource whose subject is another patient, or no patient, is dropped and reported, never mixed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from ..errors import InputError
from ..tables import observations
from .wire import Entry, Resource

CLINICAL_TYPES = ("Observation", "Condition", "MedicationStatement", "MedicationRequest",
                  "MedicationAdministration")
KEPT_TYPES = (*CLINICAL_TYPES, "Medication")


@dataclass
class PatientRecord:
    patient: Resource
    patient_ref: str
    resources: dict[str, list[Entry]] = field(default_factory=dict)
    medications: dict[str, Resource] = field(default_factory=dict)  # Medication by reference key
    dropped: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # search key → why it could not be had

    def of_type(self, resource_type: str) -> list[Entry]:
        return self.resources.get(resource_type, [])


def patient_keys(patient: Resource, full_url: str | None) -> frozenset[str]:
    """Every reference string that can point at this patient."""
    keys = set()
    pid = patient.get("id")
    if isinstance(pid, str) and pid:
        keys.add(f"Patient/{pid}")
    if full_url:
        keys.add(full_url)
    return frozenset(keys)


def reference_key(reference: str) -> str:
    """Normalise `Patient/1`, `http://x/fhir/Patient/1`, `Patient/1/_history/2` to `Patient/1`.

    urn:uuid references are returned unchanged.
    """
    if reference.startswith("urn:"):
        return reference
    parts = reference.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts[-2:]) if len(parts) >= 2 else reference


def first_error(exc: ValidationError) -> str:
    """A fhir.resources validation failure in one line: where, and what is wrong there."""
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg')}"


def validate_patient(patient: Resource) -> None:
    try:
        Patient.model_validate(patient)
    except ValidationError as exc:
        raise InputError(f"the Patient resource is not valid FHIR R4 ({first_error(exc)})") from None


def patient_ref(patient: Resource, full_url: str | None) -> str:
    pid = patient.get("id")
    if isinstance(pid, str) and pid:
        return f"Patient/{pid}"
    if full_url and full_url.startswith("urn:uuid:"):
        return full_url
    if full_url and "/Patient/" in full_url:
        return reference_key(full_url)
    raise InputError("the Patient has no id and no urn:uuid fullUrl, so nothing can reference it")


def assemble(patient: Resource, patient_full_url: str | None, entries: Iterable[Entry]) -> PatientRecord:
    """Attribute entries to the patient; keep mapped Observations and the other clinical types."""
    validate_patient(patient)
    ref = patient_ref(patient, patient_full_url)
    keys = {reference_key(k) for k in patient_keys(patient, patient_full_url)} | {ref}
    table = observations()
    record = PatientRecord(patient=patient, patient_ref=ref)
    foreign = 0
    orphans = 0
    subject_keys: dict[str, str] = {}  # a record repeats one subject string thousands of times
    for entry in entries:
        head = entry.head
        rtype = head.resourceType
        if rtype == "Medication":
            for key in filter(None, (entry.ref, entry.full_url)):
                record.medications[reference_key(key)] = entry.resource
            continue
        if rtype not in CLINICAL_TYPES:
            continue
        if rtype == "Observation" and head.code_in(table.system, table.by_code) is None:
            continue
        subject = head.subject_reference()
        if subject is None:
            orphans += 1
            continue
        subject_key = subject_keys.get(subject)
        if subject_key is None:
            subject_key = subject_keys[subject] = reference_key(subject)
        if subject_key not in keys:
            foreign += 1
            continue
        record.resources.setdefault(rtype, []).append(entry)
    if foreign:
        record.dropped.append(f"{foreign} resource(s) about another patient ignored")
    if orphans:
        record.dropped.append(f"{orphans} resource(s) without a subject ignored")
    return record
