"""The FHIR searches that gather one patient's AXIOM-relevant data.

One list, used for fetching from a FHIR server here and (in the service) for prefetch templates, so
the two never disagree about what the criteria need.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from ..tables import Trial, observations

MEDICATION_TYPES = ("MedicationStatement", "MedicationRequest", "MedicationAdministration")


@dataclass(frozen=True)
class Search:
    key: str
    resource_type: str
    params: dict[str, str]


def _codes(history: bool) -> str:
    table = observations()
    return ",".join(f"{table.system}|{code}" for spec in table.inputs.values()
                    if spec.history == history for code in spec.codes)


# Days beyond the longest window that are still read, so a stale value can be shown with its date.
STALE_MARGIN_DAYS = 2
# The server's `date=ge` compares instants in the server's zone, the engine reads the local date as
# written: one more day covers any UTC offset (at most 14 h).
ZONE_MARGIN_DAYS = 1


def longest_window(trial: Trial) -> int:
    windows = [trial.default_window_days]
    for rule in trial.criteria.values():
        windows += [int(v) for k, v in rule.items() if k.endswith("window_days")]
    return max(windows)


def lookback_days(trial: Trial) -> int:
    """How far back windowed Observations are read at all, in every mode."""
    return longest_window(trial) + STALE_MARGIN_DAYS


def searches(patient_id: str, trial: Trial, as_of: date | None) -> list[Search]:
    """Searches for everything but the Patient read. `as_of` None: no date floor (prefetch templates)."""
    labs = {"patient": patient_id, "code": _codes(history=False), "_sort": "-date", "_count": "1000"}
    if as_of is not None:
        floor = as_of - timedelta(days=lookback_days(trial) + ZONE_MARGIN_DAYS)
        labs["date"] = f"ge{floor.isoformat()}"
    out = [
        Search("observations", "Observation", labs),
        Search("history", "Observation", {"patient": patient_id, "code": _codes(history=True),
                                          "_count": "1000"}),
        Search("conditions", "Condition", {"patient": patient_id, "_count": "1000"}),
    ]
    out += [Search(t[0].lower() + t[1:], t, {"patient": patient_id, "_count": "1000",
                                             "_include": f"{t}:medication"}) for t in MEDICATION_TYPES]
    return out
