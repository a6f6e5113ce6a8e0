"""Gather one patient's record: use what the hook prefetched, fetch what is missing, within a deadline.

CDS Hooks clients may satisfy all, some or none of the prefetch templates: a key may be absent, `null`,
an empty Bundle, an OperationOutcome, or a Bundle with more pages. Whatever is not usable is fetched
from the FHIR server (in parallel, one session per server); whatever still cannot be had is recorded in
`PatientRecord.unavailable`, which turns the criteria that need it into `unknown` with the reason. Only
a missing Patient is fatal (FhirServerError → HTTP 412 / CLI exit 2).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FhirServerError, InputError
from .bundle import bundle_entries
from .client import SessionClient, collect_pages, read_patient, search_all
from .queries import CODE_PARAMS, MEDICATION_SEARCHES, PATIENT_KEY, REPORTS_KEY, Search
from .record import PatientRecord, assemble
from .urls import names
from .wanted import Wanted
from .wire import FHIR_ID, Entry, Resource, is_bundle, is_lazy, issues, reference_key, resource_type

# Medications named by reference and not brought by the searches' _include: read one by one, at most
# this many per patient (a medication history names a few dozen drugs at most).
MAX_MEDICATION_READS = 50
MEDICATION_TYPES = frozenset(t for _, t in MEDICATION_SEARCHES)


@dataclass
class GatherStats:
    prefetched: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # prefetched as null / an error / not a Bundle: fetched
    seconds: float = 0.0


def _prefetched_patient(value: Any, patient_id: str, notes: list[str]) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, dict) and value.get("resourceType") == "Patient":
        if value.get("id") == patient_id:
            return value
        notes.append("prefetched Patient is not context.patientId: ignored")
        return None
    if is_bundle(value):  # a search instead of a read
        try:
            patients = bundle_entries(value)[0]
        except InputError:
            return None
        return next((patient for patient, _ in patients if patient.get("id") == patient_id), None)
    return None


def _prefetch_problem(value: Any, key: str) -> str:
    """Why a prefetched value is not a usable search result, in words for the card."""
    if value is None:
        return f"'{key}' was not prefetched"
    kind = resource_type(value)
    if kind == "OperationOutcome":
        said = next((str(i.get("diagnostics")) for i in issues(value) if isinstance(i, dict) and i.get("diagnostics")),
                    None)
        return f"'{key}' came back as an OperationOutcome" + (f" ({said[:120]})" if said else "")
    if kind is None:
        kind = "an object without a resourceType" if isinstance(value, dict) or is_lazy(value) \
            else type(value).__name__
    return f"'{key}' came back as {kind}, not a Bundle"


NO_SERVER = "there is no FHIR server to fetch it from"


async def gather_record(patient_id: str, plan: list[Search], prefetch: dict[str, Any] | None,
                        client: SessionClient | None, deadline_s: float,
                        stats: GatherStats | None = None, no_server: str = NO_SERVER, *,
                        wanted: Wanted, server: str | None = None) -> PatientRecord:
    """The patient's record from prefetch + FHIR server. Raises FhirServerError without a Patient.

    `no_server`: why there is no client, for the reasons shown when something was not prefetched.
    `wanted`: the Observation codes kept (fhir/wanted.py). `server`: the FHIR base the data is from
    (default: the client's), the only base of absolute references to the patient (fhir/record.py).
    """
    started = time.perf_counter()
    stats = stats if stats is not None else GatherStats()
    prefetch = prefetch or {}
    notes: list[str] = []
    jobs: dict[str, Awaitable[Any]] = {}
    if client is not None:  # retries must fit in what is left of the budget, not only in their count
        client.set_deadline(time.monotonic() + deadline_s)

    patient = _prefetched_patient(prefetch.get(PATIENT_KEY), patient_id, notes)
    if patient is not None:
        stats.prefetched.append(PATIENT_KEY)
    elif client is not None:
        jobs[PATIENT_KEY] = read_patient(client, patient_id)

    ready: dict[str, list[Entry]] = {}
    unavailable: dict[str, str] = {}
    to_fetch: list[Search] = []
    for search in plan:
        value = prefetch.get(search.key)
        if is_bundle(value):
            stats.prefetched.append(search.key)
            jobs[search.key] = _prefetched(client, value, search)
            continue
        problem = _prefetch_problem(value, search.key)
        if client is not None:
            stats.fetched.append(search.key)
            to_fetch.append(search)
            if value is not None:  # an integration detail for the log, not news for the clinician
                stats.repaired.append(search.key)
        else:
            unavailable[search.key] = f"{problem} and {no_server}"
    if client is not None:
        for search in merge_searches(to_fetch):
            jobs[search.key] = search_all(client, search)

    results = await _within(jobs, deadline_s)
    for key, result in results.items():
        if key == PATIENT_KEY:
            if isinstance(result, BaseException):
                raise _as_server_error(result)
            patient = result
        elif isinstance(result, BaseException):
            stats.failed.append(key)
            for part in key.split(MERGED):
                unavailable[part] = f"'{part}': {_as_server_error(result)}"
        else:
            ready[key] = result
    if patient is None:
        raise FhirServerError(f"Patient/{patient_id} was not prefetched and {no_server}")

    if REPORTS_KEY in unavailable:  # no criterion is unknown for it: labs are searched on their own too
        notes.append(f"{unavailable[REPORTS_KEY]}: results found only in diagnostic reports may be missing")
    entries = _unique([e for found in ready.values() for e in found])
    medications: dict[str, Resource] = {}
    if client is not None:
        left = deadline_s - (time.perf_counter() - started)
        medications = await _read_medications(client, entries, left, notes)
    record = assemble(patient, None, entries, wanted, server or (client.url if client is not None else None))
    for key, medication in medications.items():
        record.medications.setdefault(key, medication)
    record.unavailable.update(unavailable)
    record.dropped.extend(notes)
    stats.seconds = time.perf_counter() - started
    return record


MERGED = "+"


def _unique(entries: list[Entry]) -> list[Entry]:
    """Each resource once: a report's `_include`d results are often found by the Observation searches too."""
    seen: set[tuple[str | None, str]] = set()
    out = []
    for entry in entries:
        head = entry.head
        if head.id:
            key = (head.resourceType, head.id)
            if key in seen:
                continue
            seen.add(key)
        out.append(entry)
    return out


def _medication_reads(entries: list[Entry], base_url: str) -> list[str]:
    """`Medication/id` of every Medication named by reference and not among the entries (sorted)."""
    have = {reference_key(k) for e in entries if e.head.resourceType == "Medication"
            for k in filter(None, (e.ref, e.full_url))}
    out = set()
    for entry in entries:
        if entry.head.resourceType not in MEDICATION_TYPES:
            continue
        ref = entry.resource.get("medicationReference")
        target = ref.get("reference") if isinstance(ref, dict) else None
        if not isinstance(target, str) or target.startswith(("#", "urn:")):
            continue  # contained, or a Bundle-local name the server does not know
        key = reference_key(target)
        if "://" in target and not names(target, base_url, key):
            continue  # on another server (or not at `{base}/Medication/id`): the token must not travel there
        kind, _, mid = key.partition("/")
        if kind == "Medication" and FHIR_ID.fullmatch(mid) and key not in have:
            out.add(key)
    return sorted(out)


async def _read_medications(client: SessionClient, entries: list[Entry], seconds: float,
                            notes: list[str]) -> dict[str, Resource]:
    """The Medications the searches' `_include` did not bring, read from the server within `seconds`.

    One that cannot be read leaves the request to be known by its display text, if any, and says so."""
    keys = _medication_reads(entries, client.url)
    if not keys:
        return {}
    if len(keys) > MAX_MEDICATION_READS:
        notes.append(f"{len(keys) - MAX_MEDICATION_READS} referenced Medication(s) not read (more than "
                     f"{MAX_MEDICATION_READS})")
        keys = keys[:MAX_MEDICATION_READS]
    if seconds <= 0:
        notes.append(f"{len(keys)} referenced Medication(s) not read: no time left before the deadline")
        return {}
    results = await _within({key: client.get_json(key) for key in keys}, seconds)
    out: dict[str, Resource] = {}
    failed = []
    for key, result in results.items():
        if isinstance(result, dict) and result.get("resourceType") == "Medication":
            out[key] = result
        else:
            failed.append(key)
    if failed:
        notes.append(f"{', '.join(failed)}: named by a medication record, could not be read from the FHIR server")
    return out


async def _prefetched(client: SessionClient | None, bundle: Any, search: Search) -> list[Entry]:
    """A prefetched result, held to its search's date floor: prefetch templates cannot carry dates, so
    an EHR sends the whole history where a fetch would have sent the last year or so."""
    floor = search.params.get("date", "")
    return await collect_pages(client, bundle, search.key, since=floor[2:] if floor.startswith("ge") else None,
                               floor_type=search.resource_type)


def _code_param(search: Search) -> str | None:
    return next((p for p in CODE_PARAMS if p in search.params), None)


def merge_searches(searches: list[Search]) -> list[Search]:
    """Searches of one type that differ only in their code list become one request.

    Fewer requests per hook for the EHR's server (labs and performance status share their date floor);
    the merged search's key names its parts, so a failure is reported for each.
    """
    groups: dict[tuple[str, str | None, tuple[tuple[str, str], ...]], list[Search]] = {}
    for s in searches:
        param = _code_param(s)
        shape = tuple(sorted((k, v) for k, v in s.params.items() if k != param))
        groups.setdefault((s.resource_type, param, shape), []).append(s)
    merged = []
    for (_, param, _), group in groups.items():
        if len(group) == 1 or param is None:
            merged.extend(group)
            continue
        params = {**group[0].params, param: ",".join(s.params[param] for s in group)}
        merged.append(Search(MERGED.join(s.key for s in group), group[0].resource_type, params))
    return merged


async def _within(jobs: dict[str, Awaitable[Any]], deadline_s: float) -> dict[str, Any]:
    """Run jobs in parallel; a job still running at the deadline is cancelled and becomes a timeout."""
    if not jobs:
        return {}
    tasks = {key: asyncio.ensure_future(job) for key, job in jobs.items()}
    done, pending = await asyncio.wait(tasks.values(), timeout=deadline_s)
    for task in pending:
        task.cancel()
    out: dict[str, Any] = {}
    for key, task in tasks.items():
        if task in done:
            out[key] = task.exception() if task.exception() is not None else task.result()
        else:
            out[key] = FhirServerError(f"the FHIR server did not answer within the {deadline_s:g} s deadline",
                                       "timeout")
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    return out


def _as_server_error(exc: BaseException) -> FhirServerError:
    if isinstance(exc, FhirServerError):
        return exc
    if isinstance(exc, ValueError):  # fhirpy refusing a URL that is not on the server: not repeated, it may
        return FhirServerError("the FHIR server sent an unsafe or invalid URL; not followed", "invalid")  # carry a key
    raise exc
