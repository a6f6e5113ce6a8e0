"""The whole pipeline for callers that hold a PatientRecord or raw Bundle bytes."""

from __future__ import annotations

from datetime import date

import orjson

from .criteria.evaluate import evaluate
from .criteria.model import EligibilityReport
from .fhir.bundle import record_from_bytes
from .fhir.queries import lookback_days
from .fhir.record import PatientRecord
from .mapping.facts import build_facts
from .tables import trial


def evaluate_record(record: PatientRecord, as_of: date, trial_name: str = "axiom") -> EligibilityReport:
    definition = trial(trial_name)
    return evaluate(build_facts(record, as_of, lookback_days(definition)), definition)


def warm_up(trial_name: str = "axiom") -> None:
    """Load code tables, the unit registry and the FHIR models before the first real request."""
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "warm-up", "birthDate": "1990"}},
        {"resource": {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/warm-up"},
                      "code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/icd-o-3",
                                           "code": "9581/3"}]}}},
        *({"resource": {"resourceType": "Observation", "id": f"o{i}", "status": "final",
                        "subject": {"reference": "Patient/warm-up"}, "effectiveDateTime": date.today().isoformat(),
                        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                        "valueQuantity": {"value": 1, "unit": unit}}}
          for i, (code, unit) in enumerate((("777-3", "K/uL"), ("14631-6", "umol/L"), ("1920-8", "IU/L"))))]}
    evaluate_bundle(orjson.dumps(bundle), date.today(), trial_name)


def evaluate_bundle(data: bytes, as_of: date, trial_name: str = "axiom") -> EligibilityReport:
    """Raw Bundle JSON bytes → report. Raises InputError on bad input."""
    return evaluate_record(record_from_bytes(data), as_of, trial_name)
