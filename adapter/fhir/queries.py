"""The FHIR searches that gather one patient's data: what the caller wants (fhir/wanted.py), fetched.

One list, used for fetching from a FHIR server (CLI and service) and for the CDS Hooks prefetch
templates, so the two never disagree about what is read. Each search's key is its prefetch key.

Results that are not standalone Observations of the patient are searched for too (DESIGN.md "Real
charts"): the windowed Observation searches match a code or a component's code (`combo-code`, so a
panel whose values are only components is found); the DiagnosticReport search brings the reports'
results (`_include`) and their panels' members (`_include:iterate`), which a lab may send without a
subject or a date of their own. The whole-history search stays on `code`: a server that ignores
`combo-code` would send every Observation of the patient's life instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from .wanted import Wanted

PATIENT_KEY = "patient"
CONDITIONS_KEY = "conditions"
REPORTS_KEY = "diagnosticReports"
# (prefetch key, resource type)
MEDICATION_SEARCHES = (("medicationStatement", "MedicationStatement"), ("medicationRequest", "MedicationRequest"),
                       ("medicationAdministration", "MedicationAdministration"))
# The parameters a search's code list goes in (fhir/gather.py merges searches that differ only there).
CODE_PARAMS = ("code", "combo-code")
# The server's `date=ge` compares instants in the server's zone, the engine reads the local date as
# written: one more day covers any UTC offset (at most 14 h).
ZONE_MARGIN_DAYS = 1
PAGE_SIZE = "1000"


@dataclass(frozen=True)
class Search:
    key: str
    resource_type: str
    params: dict[str, str]

    def template(self, patient_token: str = "{{context.patientId}}") -> str:
        """The search as a CDS Hooks prefetch template (no date floor: templates cannot compute dates)."""
        params = {k: (patient_token if k == "patient" else v) for k, v in self.params.items() if k != "date"}
        return f"{self.resource_type}?" + "&".join(f"{k}={v}" for k, v in params.items())


def searches(patient_id: str, wanted: Wanted, as_of: date | None) -> list[Search]:
    """Searches for everything but the Patient read. `as_of` None: no date floor (prefetch templates)."""
    floor = {"date": f"ge{(as_of - timedelta(days=wanted.lookback_days + ZONE_MARGIN_DAYS)).isoformat()}"} \
        if as_of is not None else {}
    out = []
    for key, codes in wanted.searches:
        whole = key in wanted.whole_history
        out.append(Search(key, "Observation", {
            "patient": patient_id, "code" if whole else "combo-code": ",".join(f"{s}|{c}" for s, c in codes),
            **({} if whole else floor), "_sort": "-date", "_count": PAGE_SIZE}))
    out.append(Search(CONDITIONS_KEY, "Condition", {"patient": patient_id, "_count": PAGE_SIZE}))
    out += [Search(key, t, {"patient": patient_id, "_include": f"{t}:medication", "_count": PAGE_SIZE})
            for key, t in MEDICATION_SEARCHES]
    out.append(Search(REPORTS_KEY, "DiagnosticReport", {
        "patient": patient_id, **floor, "_include": "DiagnosticReport:result",
        "_include:iterate": "Observation:has-member", "_count": PAGE_SIZE}))
    return out


def prefetch_templates(wanted: Wanted) -> dict[str, str]:
    """Discovery's `prefetch`: the Patient read plus every search, keyed as `searches` keys them."""
    return {PATIENT_KEY: "Patient/{{context.patientId}}",
            **{s.key: s.template() for s in searches("{{context.patientId}}", wanted, None)}}
