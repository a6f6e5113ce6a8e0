"""The FHIR searches that gather one patient's AXIOM-relevant data.

One list, used for fetching from a FHIR server (CLI and service) and for the CDS Hooks prefetch
templates, so the two never disagree about what the criteria need. Each search's key is its prefetch
key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from ..tables import Trial, observations

PATIENT_KEY = "patient"
CONDITIONS_KEY = "conditions"
# (prefetch key, resource type)
MEDICATION_SEARCHES = (("medicationStatement", "MedicationStatement"), ("medicationRequest", "MedicationRequest"),
                       ("medicationAdministration", "MedicationAdministration"))
# Days beyond the longest window that are still read, so a stale value can be shown with its date.
STALE_MARGIN_DAYS = 2
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


def longest_window(trial: Trial) -> int:
    windows = [trial.default_window_days]
    for rule in trial.criteria.values():
        windows += [int(v) for k, v in rule.items() if k.endswith("window_days")]
    return max(windows)


def lookback_days(trial: Trial) -> int:
    """How far back windowed Observations are read at all, in every mode."""
    return longest_window(trial) + STALE_MARGIN_DAYS


def observation_codes(group: str) -> str:
    """`system|code,…` for every input fetched by the `group` search."""
    table = observations()
    return ",".join(f"{table.system}|{code}" for spec in table.inputs.values()
                    if spec.search == group and not spec.informative for code in spec.codes)


def searches(patient_id: str, trial: Trial, as_of: date | None) -> list[Search]:
    """Searches for everything but the Patient read. `as_of` None: no date floor (prefetch templates)."""
    floor = {"date": f"ge{(as_of - timedelta(days=lookback_days(trial) + ZONE_MARGIN_DAYS)).isoformat()}"} \
        if as_of is not None else {}
    out = [
        Search(group, "Observation", {"patient": patient_id, "code": observation_codes(group), **(
            floor if group != "history" else {}), "_sort": "-date", "_count": PAGE_SIZE})
        for group in ("labs", "performance", "history")
    ]
    out.append(Search(CONDITIONS_KEY, "Condition", {"patient": patient_id, "_count": PAGE_SIZE}))
    out += [Search(key, t, {"patient": patient_id, "_include": f"{t}:medication", "_count": PAGE_SIZE})
            for key, t in MEDICATION_SEARCHES]
    return out


def prefetch_templates(trial: Trial) -> dict[str, str]:
    """Discovery's `prefetch`: the Patient read plus every search, keyed as `searches` keys them."""
    return {PATIENT_KEY: "Patient/{{context.patientId}}",
            **{s.key: s.template() for s in searches("{{context.patientId}}", trial, None)}}
