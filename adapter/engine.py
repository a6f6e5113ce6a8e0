"""The whole pipeline for callers that hold a PatientRecord or raw Bundle bytes."""

from __future__ import annotations

from datetime import date
from functools import cache

import orjson
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.observation import Observation, ObservationReferenceRange
from fhir.resources.R4B.patient import Patient

from .criteria.evaluate import evaluate
from .criteria.model import EligibilityReport
from .fhir.bundle import record_from_bytes
from .fhir.record import PatientRecord
from .fhir.wanted import Wanted
from .mapping.facts import build_facts
from .mapping.validation import load_element_models
from .tables import observations
from .trials import Trial, load_trial

# the R4B models resources are validated with (fhir/record.py, mapping/values.py, mapping/conditions.py)
VALIDATED_MODELS = (Patient, Observation, ObservationReferenceRange, Condition)
# Days beyond the longest window that are still read, so a stale value can be shown with its date.
STALE_MARGIN_DAYS = 2


def longest_window(definition: Trial) -> int:
    return max(definition.lookback_windows())


@cache
def lookback_days(definition: Trial) -> int:
    """How far back windowed Observations are read at all, in every mode."""
    return longest_window(definition) + STALE_MARGIN_DAYS


@cache
def fhir_wanted(definition: Trial) -> Wanted:
    """What the FHIR layer is asked to find for this trial (it knows nothing of criteria): every mapped
    Observation code, each search's codes (mappings/observations.yaml `search`; informative inputs are
    kept when sent, never searched for), which searches read the whole history, and how far back."""
    table = observations()
    keys = dict.fromkeys(spec.search for spec in table.inputs.values())
    return Wanted(
        codes=dict(table.codes_by_system),
        searches=tuple((key, tuple((spec.system, code) for spec in table.inputs.values()
                                   if spec.search == key and not spec.informative for code in spec.codes))
                       for key in keys),
        whole_history=frozenset(spec.search for spec in table.inputs.values() if spec.history),
        lookback_days=lookback_days(definition))


def evaluate_record(record: PatientRecord, as_of: date, trial_name: str = "axiom") -> EligibilityReport:
    definition = load_trial(trial_name)
    return evaluate(build_facts(record, as_of, lookback_days(definition)), definition)


def warm_up(trial_name: str = "axiom") -> None:
    """Load what the first evaluations would load lazily: code tables, the unit registry and the units
    seen in real feeds, the FHIR model classes of the elements read — by evaluating the synthetic
    scenario charts (adapter/synth: the test fixtures' shapes and unit spellings), and every element
    model the validated resources can hold (the scenarios do not hold them all: a real chart's first
    `meta` imported its model mid-evaluation). A service then answers
    its first hook warm, and screen workers forked after this start warm: each would pay it again. Once
    per trial and process, however it is named (`warm_up()` and `warm_up("axiom")` are one call; a
    failure is not remembered: the next call tries again)."""
    _warm_up(trial_name)


@cache
def _warm_up(trial_name: str) -> None:
    from .synth.generator import scenario_cases  # noqa: PLC0415 (only long-lived processes warm up)

    load_element_models(*VALIDATED_MODELS)
    today = date.today()
    for case in scenario_cases(today):
        evaluate_bundle(orjson.dumps(case.bundle), today, trial_name)


def evaluate_bundle(data: bytes, as_of: date, trial_name: str = "axiom") -> EligibilityReport:
    """Raw Bundle JSON bytes → report. Raises InputError on bad input."""
    return evaluate_record(record_from_bytes(data, fhir_wanted(load_trial(trial_name))), as_of, trial_name)
