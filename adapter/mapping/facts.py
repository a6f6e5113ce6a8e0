"""PatientRecord + evaluation date → Facts: everything the criteria read, and nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from ..fhir.queries import CONDITIONS_KEY, MEDICATION_SEARCHES
from ..fhir.record import PatientRecord
from ..tables import observations
from .conditions import ConditionFact, condition_facts, unreadable_codes
from .dates import age_range, date_range
from .history import HistoryAssertion, metastatic_history
from .medications import Exposure, ici_exposures
from .observations import ObservationIndex


@dataclass
class Facts:
    as_of: date
    patient_ref: str
    birth_date: str | None
    age: tuple[int, int] | None  # youngest, oldest possible age in completed years
    gender: str | None
    observations: ObservationIndex
    conditions: list[ConditionFact]
    exposures: list[Exposure]
    unavailable: dict[str, str] = field(default_factory=dict)  # search key → why its data is missing
    record_notes: list[str] = field(default_factory=list)
    deceased: str | None = None  # "deceased (2026-10-02)" when dead on the evaluation date, else None
    metastatic_history: list[HistoryAssertion] = field(default_factory=list)  # mCODE, newest first
    unreadable_conditions: list[str] = field(default_factory=list)  # references: code not readable

    def having(self, set_id: str) -> list[ConditionFact]:
        return [c for c in self.conditions if c.set_id == set_id]

    def _missing(self, keys: list[str]) -> str | None:
        reasons = [self.unavailable[k] for k in dict.fromkeys(keys) if k in self.unavailable]
        return "; ".join(reasons) if reasons else None

    def missing_inputs(self, *input_ids: str) -> str | None:
        """Why the searches that fetch these Observation inputs failed, if any did."""
        inputs = observations().inputs
        return self._missing([inputs[i].search for i in input_ids])

    def missing_conditions(self) -> str | None:
        return self._missing([CONDITIONS_KEY])

    def missing_medications(self) -> str | None:
        return self._missing([key for key, _ in MEDICATION_SEARCHES])


def deceased_on(patient: Mapping[str, object], as_of: date) -> str | None:
    """Why the patient is taken as dead on `as_of` ("deceased (2026-10-02)"), else None.

    `deceasedBoolean: true`, or a `deceasedDateTime` whose earliest possible day is on or before `as_of`
    (a partial date that may fall on or before it counts: a recorded death is not a referral). A later
    date means alive on `as_of` (a retrospective evaluation); `false` or a value of the wrong JSON type
    is read as alive.
    """
    if patient.get("deceasedBoolean") is True:
        return "deceased"
    when = patient.get("deceasedDateTime")
    days = date_range(when)
    if days is not None and days[0] <= as_of:
        return f"deceased ({str(when)[:10]})"
    return None


def build_facts(record: PatientRecord, as_of: date, lookback_days: int) -> Facts:
    birth = record.patient.get("birthDate")
    gender = record.patient.get("gender")
    meds = [e for _, t in MEDICATION_SEARCHES for e in record.of_type(t)]
    index = ObservationIndex.build(record.of_type("Observation"), as_of, lookback_days)
    return Facts(
        as_of=as_of,
        patient_ref=record.patient_ref,
        birth_date=birth if isinstance(birth, str) else None,
        age=age_range(birth, as_of),
        gender=gender if isinstance(gender, str) else None,
        observations=index,
        conditions=condition_facts(record.of_type("Condition"), as_of, birth if isinstance(birth, str) else None),
        exposures=ici_exposures(meds, record.medications, as_of),
        unavailable=dict(record.unavailable),
        record_notes=list(record.dropped),
        deceased=deceased_on(record.patient, as_of),
        metastatic_history=metastatic_history(index),
        unreadable_conditions=unreadable_codes(record.of_type("Condition")),
    )
