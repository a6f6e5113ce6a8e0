"""A FHIR Bundle (any type) holding one Patient and its resources → PatientRecord."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from .record import KEPT_TYPES, PatientRecord, assemble
from .wire import Entry, Lazy, head_and_resource, load_json, load_resource


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _same_patient(a: tuple[dict[str, Any], str | None], b: tuple[dict[str, Any], str | None]) -> bool:
    if a[0].get("id") and a[0].get("id") == b[0].get("id"):
        return True
    return bool(a[1]) and a[1] == b[1]


def bundle_entries(bundle: Any) -> tuple[list[tuple[dict[str, Any], str | None]], list[Entry]]:
    """Split a Bundle (lazy, or parsed JSON) into its Patients and the other resources we might use."""
    if isinstance(bundle, Lazy):
        return _lazy_bundle_entries(bundle)
    if not isinstance(bundle, dict):
        raise InputError("not a FHIR Bundle (the JSON is not an object)")
    rtype = bundle.get("resourceType")
    if rtype != "Bundle":
        raise InputError(f"not a FHIR Bundle (resourceType is {rtype!r})")
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise InputError("not a FHIR Bundle (entry is not a list)")
    patients: list[tuple[dict[str, Any], str | None]] = []
    entries: list[Entry] = []
    for item in raw_entries:
        if not isinstance(item, dict):
            raise InputError("not a FHIR Bundle (an entry is not an object)")
        resource = item.get("resource")
        if not isinstance(resource, dict):
            continue  # e.g. a transaction-response entry without a resource
        full_url = item.get("fullUrl") if isinstance(item.get("fullUrl"), str) else None
        kind = resource.get("resourceType")
        if kind == "Patient":
            candidate = (resource, full_url)
            if not any(_same_patient(candidate, p) for p in patients):
                patients.append(candidate)
        elif kind in KEPT_TYPES:
            entries.append(Entry.from_dict(resource, full_url))
    return patients, entries


def _lazy_bundle_entries(bundle: Lazy) -> tuple[list[tuple[dict[str, Any], str | None]], list[Entry]]:
    """`bundle_entries` for a lazy Bundle: the same split, reading only each resource's head."""
    patients: list[tuple[dict[str, Any], str | None]] = []
    entries: list[Entry] = []
    for item in bundle.entry or ():
        head, resource = head_and_resource(item.resource)
        if head is None:
            continue  # not an object, e.g. a transaction-response entry without a resource
        full_url = item.fullUrl if isinstance(item.fullUrl, str) else None
        kind = head.resourceType
        if kind == "Patient":
            candidate = (resource if resource is not None else load_json(item.resource), full_url)
            if not any(_same_patient(candidate, p) for p in patients):
                patients.append(candidate)
        elif kind in KEPT_TYPES:
            entries.append(Entry(head, full_url, item.resource, resource))
    return patients, entries


def record_from_bytes(data: bytes) -> PatientRecord:
    patients, entries = bundle_entries(load_resource(data))
    if not patients:
        raise InputError("the Bundle holds no Patient")
    if len(patients) > 1:
        ids = ", ".join(str(p[0].get("id") or p[1] or "?") for p in patients[:5])
        raise InputError(f"the Bundle holds {len(patients)} Patients ({ids}); evaluate one patient at a time")
    patient, full_url = patients[0]
    return assemble(patient, full_url, entries)
