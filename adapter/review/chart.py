"""The patient's chart, read with the clinician's token through the service's FHIR layer, evaluated by the
one engine, and laid out for the page: every criterion with the resources behind it.

The same reads as a hook and `evaluate --fhir-server` (fhir/gather.py `gather_record` with the searches
of fhir/queries.py), the same `evaluate_record`: the page's verdicts are the CLI's and the card's.
What the page adds is the evidence as the chart recorded it — value with its original unit, date,
status, the reference range's upper limit — so a clinician can check the engine's reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..cds.hook import Service
from ..criteria.model import CriterionResult, EligibilityReport
from ..engine import evaluate_record, fhir_wanted
from ..errors import FhirServerError, InputError
from ..fhir.client import SessionClient
from ..fhir.elements import coding_list, quantity_text
from ..fhir.gather import GatherStats, gather_record
from ..fhir.queries import searches
from ..fhir.record import PatientRecord
from ..fhir.wire import FHIR_ID
from ..report.card import clinical, criterion_label
from ..report.text import plain
from ..trials import load_trial
from .errors import ReviewError
from .sessions import Session

STATUS_ORDER = ("not-met", "unknown", "met", "not-applicable")
STATUS_TEXT = {"not-met": "Not met", "unknown": "Unknown", "met": "Met", "not-applicable": "Not applicable"}


@dataclass(frozen=True)
class Evidence:
    """One resource behind a criterion, as the chart has it (chart text: escaped by the template)."""

    ref: str
    url: str | None  # the resource on the EHR's FHIR server
    what: str
    value: str | None
    when: str | None
    status: str | None
    uln: str | None  # the result's own referenceRange.high, as recorded


@dataclass(frozen=True)
class CriterionView:
    id: str
    label: str
    status: str
    requirement: str
    observed: str | None
    note: str | None
    uln_source: str | None
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class Chart:
    record: PatientRecord
    report: EligibilityReport
    fhir_ms: int


async def read_chart(service: Service, session: Session, deadline_s: float, timeout_s: float) -> Chart:
    """Gather and evaluate; ReviewError (502) when the Patient itself cannot be read."""
    assert session.access_token is not None and session.patient is not None
    settings = service.settings
    trial = load_trial(settings.trial)
    wanted = fhir_wanted(trial)
    as_of = service.as_of()
    client = SessionClient(session.iss, service.sessions.get(session.iss), session.access_token, timeout_s,
                           retries=settings.fhir_retries,
                           max_response_bytes=int(settings.fhir_max_response_mb * 1024 * 1024),
                           max_entries_per_page=settings.fhir_max_entries_per_page,
                           slots=service.sessions.slots(session.iss))
    stats = GatherStats()
    try:
        record = await gather_record(session.patient, searches(session.patient, wanted, as_of), None, client,
                                     deadline_s, stats, wanted=wanted, server=session.iss)
    except (FhirServerError, InputError) as exc:  # InputError: the Patient is not valid FHIR R4
        raise ReviewError(502, "The patient's chart could not be read",
                          f"The EHR's FHIR server did not give the patient's record: {plain(str(exc))}.") from None
    return Chart(record, evaluate_record(record, as_of, settings.trial), round(stats.seconds * 1000))


def criteria_views(chart: Chart, fhir_base: str) -> list[CriterionView]:
    """Every criterion, decisive ones first (not met, unknown, met, not applicable), each with its evidence."""
    index = _resources(chart.record)
    order = {s: i for i, s in enumerate(STATUS_ORDER)}
    ordered = sorted(chart.report.criteria, key=lambda c: order[c.status])
    return [_view(chart.report, c, index, fhir_base) for c in ordered]


def _view(report: EligibilityReport, c: CriterionResult, index: dict[str, dict[str, Any]],
          fhir_base: str) -> CriterionView:
    evidence = tuple(_evidence(ref, index.get(ref), fhir_base) for ref in dict.fromkeys(c.evidence) if ref)
    name = criterion_label(report.trial, c.id)
    return CriterionView(c.id, name[:1].upper() + name[1:], c.status, clinical(c.requirement),
                         clinical(plain(c.observed)) if c.observed else None,
                         clinical(plain(c.note)) if c.note else None, _uln_source(c), evidence)


def _uln_source(c: CriterionResult) -> str | None:
    """Where the upper limit of normal came from, for criteria that use one (the engine's own wording)."""
    said = f"{c.observed or ''} {c.note or ''}"
    if "ULN" not in said:
        return None
    if "assumed ULN" in said:
        return "assumed: the trial's default ULN (the result has no reference range)"
    if "reference range unreadable" in said:
        return "the result's reference range could not be read"
    return "the result's own reference range (referenceRange.high)"


def _resources(record: PatientRecord) -> dict[str, dict[str, Any]]:
    """Every resource of the record by the reference the report cites it with."""
    out: dict[str, dict[str, Any]] = {record.patient_ref: record.patient}
    for entries in record.resources.values():
        for entry in entries:
            if entry.ref:
                out.setdefault(entry.ref, entry.resource)
    return out


def _link(ref: str, fhir_base: str) -> str | None:
    kind, _, rid = ref.partition("/")
    return f"{fhir_base}/{kind}/{rid}" if kind.isalpha() and FHIR_ID.fullmatch(rid) else None


def _text(value: Any) -> str | None:
    return plain(value) if isinstance(value, str) and value.strip() else None


SYSTEMS = {"http://loinc.org": "LOINC", "http://snomed.info/sct": "SNOMED CT",
           "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM", "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm"}


def _concept(concept: Any) -> str | None:
    """A code as the chart names it: its text, else a coding's display, else 'LOINC 751-8'."""
    if not isinstance(concept, dict):
        return None
    if isinstance(concept.get("text"), str) and concept["text"].strip():
        return plain(concept["text"])
    codings = [c for c in coding_list(concept) if isinstance(c, dict)]
    for c in codings:
        if isinstance(c.get("display"), str) and c["display"].strip():
            return plain(c["display"])
    for c in codings:
        if isinstance(c.get("code"), str):
            system = c.get("system")
            name = SYSTEMS.get(system, system.rsplit("/", 1)[-1]) if isinstance(system, str) else None
            return plain(f"{name} {c['code']}" if name else c["code"])
    return None


def _code(concept: Any) -> str | None:
    """A status or category code: the first coding's code."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    first = codings[0] if isinstance(codings, list) and codings and isinstance(codings[0], dict) else {}
    return _text(first.get("code"))


def _value(r: dict[str, Any]) -> str | None:
    """The recorded value with its original unit (valueQuantity's `unit`, else its code)."""
    if isinstance(r.get("valueQuantity"), dict):
        return plain(quantity_text(r["valueQuantity"]))
    if isinstance(r.get("valueCodeableConcept"), dict):
        return _concept(r["valueCodeableConcept"])
    for name in ("valueString", "valueBoolean", "valueInteger"):
        if name in r and not isinstance(r[name], dict | list):
            return plain(str(r[name]))
    parts = [f"{_concept(c.get('code')) or 'component'}: {quantity_text(c['valueQuantity'])}"
             for c in r.get("component") or () if isinstance(c, dict) and isinstance(c.get("valueQuantity"), dict)]
    return plain("; ".join(parts)) if parts else None


def _when(r: dict[str, Any]) -> str | None:
    for name in ("effectiveDateTime", "effectiveInstant", "onsetDateTime", "authoredOn", "recordedDate", "issued"):
        if isinstance(r.get(name), str):
            return plain(r[name])
    for name in ("effectivePeriod", "onsetPeriod"):
        period = r.get(name)
        if isinstance(period, dict) and isinstance(period.get("start"), str):
            return plain(period["start"]) + (f" to {plain(period['end'])}" if isinstance(period.get("end"), str)
                                             else "")
    return None


def _uln(r: dict[str, Any]) -> str | None:
    ranges = r.get("referenceRange")
    first = ranges[0] if isinstance(ranges, list) and ranges and isinstance(ranges[0], dict) else {}
    return plain(quantity_text(first["high"])) if isinstance(first.get("high"), dict) else None


def _evidence(ref: str, r: dict[str, Any] | None, fhir_base: str) -> Evidence:
    url = _link(ref, fhir_base)
    if r is None:
        return Evidence(ref, url, ref.partition("/")[0], None, None, None, None)
    kind = r.get("resourceType")
    if kind == "Patient":
        born = _text(r.get("birthDate"))
        return Evidence(ref, url, "Patient", f"born {born}" if born else None, None, _text(r.get("gender")), None)
    if kind == "Condition":
        status = "/".join(s for s in (_code(r.get("clinicalStatus")), _code(r.get("verificationStatus"))) if s)
        return Evidence(ref, url, _concept(r.get("code")) or "Condition", None, _when(r), status or None,
                        None)
    if isinstance(kind, str) and kind.startswith("Medication"):
        medication = r.get("medicationCodeableConcept")
        reference = r.get("medicationReference")
        what = _concept(medication) or (
            _text(reference.get("display")) or _text(reference.get("reference")) if isinstance(reference, dict)
            else None)
        return Evidence(ref, url, what or kind, None, _when(r), _text(r.get("status")), None)
    return Evidence(ref, url, _concept(r.get("code")) or str(kind or "Resource"), _value(r), _when(r),
                    _text(r.get("status")), _uln(r))


def patient_banner(record: PatientRecord) -> str:
    """Name, birth date and sex, so the clinician sees whose chart this is (chart text: escaped later)."""
    p = record.patient
    names = p.get("name")
    first = names[0] if isinstance(names, list) and names and isinstance(names[0], dict) else {}
    name = _text(first.get("text")) or plain(" ".join(
        [*(g for g in first.get("given") or () if isinstance(g, str)),
         *([first["family"]] if isinstance(first.get("family"), str) else [])])) or "Name not recorded"
    born = _text(p.get("birthDate"))
    return ", ".join(x for x in (name, f"born {born}" if born else None, _text(p.get("gender"))) if x)
