"""Validating recurring elements once (adapter/mapping/validation.py) gives the model's own outcome and errors;
warming up loads every element model a resource can hold."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.observation import Observation, ObservationReferenceRange
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from adapter.fhir.record import first_error
from adapter.mapping.conditions import _SHARED
from adapter.mapping.validation import first_problem, load_element_models, validate
from adapter.mapping.values import SHARED_ELEMENTS

LOINC = "http://loinc.org"
CODE = {"coding": [{"system": LOINC, "code": "777-3"}]}
SUBJECT = {"reference": "Patient/p1"}


def observation(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"resourceType": "Observation", "id": "o1", "status": "final", "code": copy.deepcopy(CODE),
                           "subject": dict(SUBJECT), "effectiveDateTime": "2026-11-14",
                           "valueQuantity": {"value": 250, "unit": "K/uL"}}
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def condition(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"resourceType": "Condition", "id": "c1", "subject": dict(SUBJECT),
                           "code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/icd-o-3",
                                                "code": "9581/3"}]},
                           "clinicalStatus": {"coding": [{"code": "active"}]}}
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def outcome(call: Any) -> tuple[list[Any], str] | None:
    """The errors (without their exception objects, which compare by identity) and the reason shown."""
    try:
        call()
    except ValidationError as exc:
        return exc.errors(include_url=False, include_context=False), first_error(exc)
    return None


CASES = [
    (Observation, observation(), SHARED_ELEMENTS),
    (Observation, observation(status=None), SHARED_ELEMENTS),  # a valid code and subject, no status
    (Observation, observation(status="done"), SHARED_ELEMENTS),
    (Observation, observation(code={"coding": "777-3"}), SHARED_ELEMENTS),
    (Observation, observation(code={"coding": [None]}), SHARED_ELEMENTS),
    (Observation, observation(subject={"reference": 7}), SHARED_ELEMENTS),
    (Observation, observation(subject=["Patient/p1"]), SHARED_ELEMENTS),
    (Observation, observation(method={"text": "CT"}), SHARED_ELEMENTS),
    (Observation, observation(method={"text": "CT"}, valueQuantity={"value": "high"}), SHARED_ELEMENTS),
    (Observation, observation(valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct",
                                                                "code": "260415000"}]}), SHARED_ELEMENTS),
    (Observation, observation(dataAbsentReason={"text": "not done"}, valueQuantity=None), SHARED_ELEMENTS),
    (Observation, observation(code={"coding": [{"system": LOINC, "code": "777-3", "extra": 1}]}), SHARED_ELEMENTS),
    (Condition, condition(), _SHARED),
    (Condition, condition(code=None), _SHARED),
    (Condition, condition(verificationStatus={"coding": [{"code": 5}]}), _SHARED),
    (Condition, condition(meta={"profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/x"]}), _SHARED),
    (Condition, condition(meta={"profile": "not a list"}), _SHARED),
    (Condition, condition(subject={"reference": "Patient/p1"}, onsetDateTime="yesterday"), _SHARED),
]


@pytest.mark.parametrize(("model", "doc", "shared"), CASES)
def test_the_outcome_and_errors_are_the_models_own_first_time_and_from_the_cache(
        model: Any, doc: dict[str, Any], shared: tuple[str, ...]) -> None:
    expected = outcome(lambda: model.model_validate(copy.deepcopy(doc)))
    for _ in range(2):  # the second time, the recurring elements come from the cache
        assert outcome(lambda: validate(model, copy.deepcopy(doc), shared)) == expected


def test_a_valid_code_seen_before_does_not_make_an_invalid_resource_valid() -> None:
    validate(Observation, observation(), SHARED_ELEMENTS)  # code and subject now cached as valid
    with pytest.raises(ValidationError) as caught:
        validate(Observation, observation(status=None), SHARED_ELEMENTS)
    assert {e["loc"][0] for e in caught.value.errors()} == {"status"}


def test_a_reference_range_outcome_is_the_models_reason_each_time() -> None:
    good = {"low": {"value": 150, "unit": "K/uL"}, "high": {"value": 400, "unit": "K/uL"}}
    bad = {"high": {"value": "400"}, "low": ["x"]}
    with pytest.raises(ValidationError) as caught:
        ObservationReferenceRange.model_validate(bad)
    for _ in range(2):
        assert first_problem(ObservationReferenceRange, good, first_error) is None
        assert first_problem(ObservationReferenceRange, bad, first_error) == first_error(caught.value)


def test_warming_up_loads_the_model_of_every_element_a_real_patient_holds() -> None:
    # mCODE's and US Core's Patients carry meta, extension (race, ethnicity), identifier, name, telecom,
    # address, communication: each element's model class is imported when first met unless warmed up
    names = {model.__name__ for model in load_element_models(Patient)}
    assert {"Meta", "Extension", "Identifier", "HumanName", "ContactPoint", "Address", "CodeableConcept",
            "PatientCommunication", "Narrative", "Reference"} <= names
    assert "Patient" not in names  # only what a Patient holds (a reference names a type, it holds no resource)
