"""The whole pipeline for callers that hold a PatientRecord or raw Bundle bytes."""

from __future__ import annotations

from datetime import date

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


def evaluate_bundle(data: bytes, as_of: date, trial_name: str = "axiom") -> EligibilityReport:
    """Raw Bundle JSON bytes → report. Raises InputError on bad input."""
    return evaluate_record(record_from_bytes(data), as_of, trial_name)
