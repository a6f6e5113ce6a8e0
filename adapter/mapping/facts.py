"""PatientRecord + evaluation date → Facts: everything the criteria read, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from ..fhir.queries import CONDITIONS_KEY, MEDICATION_SEARCHES
from ..fhir.record import PatientRecord
from ..tables import observations
from .conditions import ConditionFact, condition_facts
from .dates import age_range
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


def build_facts(record: PatientRecord, as_of: date, lookback_days: int) -> Facts:
    birth = record.patient.get("birthDate")
    gender = record.patient.get("gender")
    meds = [e for _, t in MEDICATION_SEARCHES for e in record.of_type(t)]
    return Facts(
        as_of=as_of,
        patient_ref=record.patient_ref,
        birth_date=birth if isinstance(birth, str) else None,
        age=age_range(birth, as_of),
        gender=gender if isinstance(gender, str) else None,
        observations=ObservationIndex.build(record.of_type("Observation"), as_of, lookback_days),
        conditions=condition_facts(record.of_type("Condition"), as_of),
        exposures=ici_exposures(meds, record.medications, as_of),
        unavailable=dict(record.unavailable),
        record_notes=list(record.dropped),
    )
