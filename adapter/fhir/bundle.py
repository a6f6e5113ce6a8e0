"""A FHIR Bundle (any type) holding one Patient and its resources → PatientRecord."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from ..errors import InputError
from .record import KEPT_TYPES, PatientRecord, assemble
from .wanted import Wanted
from .wire import FHIR_ID, Entry, Head, Lazy, LazyObservations, head_and_resource, head_of, load_resource


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _same_patient(a: tuple[dict[str, Any], str | None], b: tuple[dict[str, Any], str | None]) -> bool:
    if a[0].get("id") and a[0].get("id") == b[0].get("id"):
        return True
    return bool(a[1]) and a[1] == b[1]


def _id_shown(patient: tuple[dict[str, Any], str | None]) -> str:
    pid = patient[0].get("id")
    return pid if isinstance(pid, str) and FHIR_ID.fullmatch(pid) else "?"


def bundle_entries(bundle: Any, since: str | None = None, floor_type: str = "Observation"
                   ) -> tuple[list[tuple[dict[str, Any], str | None]], list[Entry]]:
    """Split a Bundle (lazy, or parsed JSON) into its Patients and the other resources we might use.

    `since` (an ISO date): resources of `floor_type` effective before it, or undated, are left out
    before they become entries — a prefetch holds years of results where a search would have held one.
    (A report's results are not held to it: they may be dated by the report alone.)
    """
    patients: list[tuple[dict[str, Any], str | None]] = []
    entries: list[Entry] = []
    conflict: tuple[dict[str, Any], str | None] | None = None
    for head, full_url, raw, resource in _resources(bundle):
        kind = head.resourceType
        if kind == "Patient":
            candidate = (Entry(head, full_url, raw, resource).resource, full_url)
            same = next((p for p in patients if _same_patient(candidate, p)), None)
            if same is None:
                patients.append(candidate)
            elif same[0] != candidate[0] and conflict is None:
                conflict = same
        elif kind in KEPT_TYPES:
            if since is not None and kind == floor_type and (head.effective_text() or "") < since:
                continue
            entries.append(Entry(head, full_url, raw, resource))
    if len(patients) > 1 and conflict is not None:
        raise InputError(several_patients(patients))
    if conflict is not None:  # which one is current cannot be told: never the Bundle's order
        raise InputError(f"the Bundle holds two different Patient resources as Patient/{_id_shown(conflict)}; "
                         "which one is current cannot be told")
    return patients, entries


def several_patients(patients: list[tuple[dict[str, Any], str | None]]) -> str:
    ids = ", ".join(str(p[0].get("id") or p[1] or "?") for p in patients[:5])
    return f"the Bundle holds {len(patients)} Patients ({ids}); evaluate one patient at a time"


_Item = tuple[Head, str | None, msgspec.Raw | None, dict[str, Any] | None]


def _resources(bundle: Any) -> Iterator[_Item]:
    """(head, fullUrl, raw JSON, parsed resource) for each resource of the Bundle; raw or parsed may be
    None (lazy entries are parsed later). InputError when this is not a Bundle."""
    if isinstance(bundle, LazyObservations):
        # an Observation search: anything else in it was not kept whole, so it cannot be used
        for entry in bundle.entry or ():
            if entry.resource is not None and entry.resource.resourceType == "Observation":
                yield entry.resource, entry.fullUrl if isinstance(entry.fullUrl, str) else None, None, None
        return
    if isinstance(bundle, Lazy):
        for item in bundle.entry or ():
            head, resource = head_and_resource(item.resource)
            if head is not None:  # else not an object, e.g. a transaction-response entry without a resource
                yield head, item.fullUrl if isinstance(item.fullUrl, str) else None, item.resource, resource
        return
    if not isinstance(bundle, dict):
        raise InputError("not a FHIR Bundle (the JSON is not an object)")
    rtype = bundle.get("resourceType")
    if rtype != "Bundle":
        raise InputError(f"not a FHIR Bundle (resourceType is {rtype!r})")
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise InputError("not a FHIR Bundle (entry is not a list)")
    for item in raw_entries:
        if not isinstance(item, dict):
            raise InputError("not a FHIR Bundle (an entry is not an object)")
        resource = item.get("resource")
        if isinstance(resource, dict):
            full_url = item.get("fullUrl")
            yield head_of(resource), full_url if isinstance(full_url, str) else None, None, resource


def record_from_bytes(data: bytes, wanted: Wanted) -> PatientRecord:
    patients, entries = bundle_entries(load_resource(data))
    if not patients:
        raise InputError("the Bundle holds no Patient")
    if len(patients) > 1:
        raise InputError(several_patients(patients))
    patient, full_url = patients[0]
    return assemble(patient, full_url, entries, wanted)
