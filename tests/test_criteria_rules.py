"""Issue 8, criterion side: each rule at its boundary, written from the rule.

Performance status (the most recent assessment decides), measurable disease by method, unconfirmed
modifying conditions, mCODE's history of metastatic cancer, deceased patients, unreadable hCG.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from adapter.cds.app import create_app
from adapter.criteria.model import EligibilityReport
from adapter.engine import evaluate_bundle
from adapter.report.card import card, cards_response
from adapter.synth import fhir
from tests.helpers import AS_OF, ICD10, LOINC, PID, SNOMED, SUBJECT, asps, days_ago, decisive_rows, evaluate, lab
from tests.service_server import service_settings

Json = dict[str, Any]


# ------------------------------------------------------------------ performance status

def ecog(score: int, ago: int) -> Json:
    return lab("89247-1", None, integer=score, category="survey", ago=ago)


def karnofsky(score: int, ago: int) -> Json:
    return lab("89243-0", None, integer=score, category="survey", ago=ago)


def test_an_older_good_ecog_does_not_rescue_a_poor_karnofsky_from_yesterday() -> None:
    result = evaluate(asps(), ecog(1, ago=14), karnofsky(50, ago=1)).criterion("performance-status")
    assert result.status == "not-met"
    assert "Karnofsky 50" in (result.observed or "")
    assert "ECOG 1" in (result.note or "") and "most recent" in (result.note or "")


def test_an_older_good_karnofsky_does_not_rescue_a_poor_ecog_from_yesterday() -> None:
    result = evaluate(asps(), karnofsky(90, ago=20), ecog(3, ago=1)).criterion("performance-status")
    assert result.status == "not-met"


def test_ecog_and_karnofsky_of_the_same_day_that_disagree_are_unknown_with_both_shown() -> None:
    result = evaluate(asps(), ecog(1, ago=3), karnofsky(50, ago=3)).criterion("performance-status")
    assert result.status == "unknown"
    assert "ECOG 1" in (result.observed or "") and "Karnofsky 50" in (result.observed or "")
    assert "disagree" in (result.note or "")
    assert len(result.evidence) == 2


@pytest.mark.parametrize(("score", "kps", "expected"), [(1, 90, "met"), (3, 50, "not-met")])
def test_ecog_and_karnofsky_of_the_same_day_that_agree_decide(score: int, kps: int, expected: str) -> None:
    assert evaluate(asps(), ecog(score, ago=3), karnofsky(kps, ago=3)).criterion(
        "performance-status").status == expected


def test_a_coded_ecog_answer_shows_its_score() -> None:
    coded = lab("89247-1", None, coded=fhir.concept(LOINC, "LA9623-5", "Restricted in physically strenuous activity"),
                category="survey")
    result = evaluate(asps(), coded).criterion("performance-status")
    assert result.status == "met"
    assert "ECOG 1" in (result.observed or "") and "LA9623-5" in (result.observed or "")


# ------------------------------------------------------------------ measurable disease

CT = fhir.concept(SNOMED, "77477000", "CT")
XRAY = fhir.concept(SNOMED, "399208008", "Plain chest X-ray")
SPECIMEN = fhir.concept(SNOMED, "787377000", "Gross examination and sampling of tissue specimen")
ULTRASOUND = fhir.concept(SNOMED, "16310003", "Diagnostic ultrasonography")


def tumor(size: float, method: Json | None, unit: str = "mm") -> Json:
    comp = [{"code": fhir.concept(LOINC, "33728-7"), "valueQuantity": fhir.quantity(size, unit, unit)}]
    return lab("21889-1", None, method=method, component=comp, category="imaging")


def test_a_chest_x_ray_lesion_between_10_and_20_mm_needs_ct_or_mri_not_a_fail() -> None:
    result = evaluate(asps(), tumor(15, XRAY)).criterion("measurable-disease")
    assert result.status == "unknown"
    assert "CT/MRI" in (result.note or "")


def test_a_19_mm_chest_x_ray_lesion_and_a_12_mm_ct_lesion_are_measurable() -> None:
    assert evaluate(asps(), tumor(19, XRAY), tumor(12, CT)).criterion("measurable-disease").status == "met"


def test_a_pathology_specimen_size_alone_is_not_a_lesion_measurement() -> None:
    result = evaluate(asps(), tumor(40, SPECIMEN)).criterion("measurable-disease")
    assert result.status == "unknown"
    assert "specimen" in (result.note or "")


def test_a_specimen_size_is_ignored_next_to_a_small_ct_lesion() -> None:
    # the resected tumor measured 40 mm on the bench; what is left in the patient is 5 mm on CT
    result = evaluate(asps(), tumor(40, SPECIMEN), tumor(5, CT)).criterion("measurable-disease")
    assert result.status == "not-met"
    assert "specimen" in (result.note or "")


def test_a_lesion_sized_by_ultrasound_needs_ct_or_mri() -> None:
    result = evaluate(asps(), tumor(40, ULTRASOUND)).criterion("measurable-disease")
    assert result.status == "unknown" and "CT/MRI" in (result.note or "")


def test_a_tumor_size_in_a_unit_that_cannot_be_converted_is_unknown_with_the_reason() -> None:
    result = evaluate(asps(), tumor(25, CT, unit="mg")).criterion("measurable-disease")
    assert result.status == "unknown"
    assert "cannot use the tumor size" in (result.note or "")


def test_an_unconvertible_size_next_to_a_small_lesion_could_decide_so_it_is_unknown() -> None:
    assert evaluate(asps(), tumor(5, CT), tumor(25, CT, unit="mg")).criterion(
        "measurable-disease").status == "unknown"


def test_an_unconvertible_size_does_not_undo_a_measurable_lesion() -> None:
    assert evaluate(asps(), tumor(12, CT), tumor(25, CT, unit="mg")).criterion("measurable-disease").status == "met"


# ------------------------------------------------------------------ unconfirmed modifying conditions

def provisional_liver_met() -> Json:
    return fhir.condition("m1", SUBJECT, SNOMED, "94381002", "Secondary malignant neoplasm of liver",
                          verification="provisional")


@pytest.mark.parametrize(("multiple", "expected"), [(2, "met"), (3, "unknown"), (6, "not-met")])
def test_a_provisional_liver_metastasis_cannot_grant_the_5x_uln_allowance(multiple: float, expected: str) -> None:
    result = evaluate(asps(), provisional_liver_met(), lab("1920-8", multiple * 40, "U/L", high=40)).criterion("ast")
    assert result.status == expected
    if expected == "unknown":
        assert "unconfirmed" in (result.note or "")


def test_a_confirmed_liver_metastasis_grants_the_allowance() -> None:
    mets = fhir.condition("m1", SUBJECT, SNOMED, "94381002", "Secondary malignant neoplasm of liver")
    assert evaluate(asps(), mets, lab("1920-8", 3 * 40, "U/L", high=40)).criterion("ast").status == "met"


@pytest.mark.parametrize(("multiple", "expected"), [(1.2, "met"), (2, "unknown"), (4, "not-met")])
def test_a_provisional_gilbert_diagnosis_cannot_raise_the_bilirubin_limit(multiple: float, expected: str) -> None:
    gilbert = fhir.condition("g1", SUBJECT, ICD10, "E80.4", "Gilbert syndrome", verification="provisional")
    value = lab("1975-2", multiple * 1.2, "mg/dL", high=1.2)
    assert evaluate(asps(), gilbert, value).criterion("total-bilirubin").status == expected


# ------------------------------------------------------------------ advanced disease

def test_an_unconfirmed_metastasis_alone_does_not_make_the_disease_advanced() -> None:
    lung = fhir.condition("m1", SUBJECT, ICD10, "C78.00", "Secondary malignant neoplasm of lung",
                          verification="provisional")
    result = evaluate(asps(), lung).criterion("advanced-disease")
    assert result.status == "unknown"
    assert "unconfirmed" in (result.note or "") and "Condition/m1" in result.evidence


def history_of_metastatic_cancer(oid: str, code: str = "1098951000119108", **value: Any) -> Json:
    """mCODE HistoryOfMetastaticCancer, shaped like the IG's examples (SNOMED-coded, valueBoolean)."""
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "meta": {"profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-history-of-metastatic-cancer"]},
            "category": [fhir.concept("http://terminology.hl7.org/CodeSystem/observation-category", "social-history")],
            "code": fhir.concept(SNOMED, code, "History of cancer metastatic to liver (situation)"),
            "subject": {"reference": SUBJECT}, "effectiveDateTime": "2018-11-16", **value}


def test_an_mcode_history_of_metastatic_cancer_makes_the_disease_advanced() -> None:
    # as the IG's example: no value means the history is asserted
    result = evaluate(asps(), history_of_metastatic_cancer("hx1")).criterion("advanced-disease")
    assert result.status == "met"
    assert result.evidence == ["Observation/hx1"]
    assert evaluate(asps(), history_of_metastatic_cancer("hx2", "1287652008", valueBoolean=True)).criterion(
        "advanced-disease").status == "met"


def test_an_mcode_no_history_of_metastatic_cancer_is_not_evidence_and_not_a_failure() -> None:
    # valueBoolean false reverses the meaning (a modifier): no metastatic history; unresectable still counts
    no = history_of_metastatic_cancer("hx1", "1287652008", valueBoolean=False)
    result = evaluate(asps(), no).criterion("advanced-disease")
    assert result.status == "unknown"
    assert "Observation/hx1" in result.evidence


def test_a_history_value_of_the_wrong_type_is_unreadable_not_a_history() -> None:
    odd = history_of_metastatic_cancer("hx1", "1287652008", valueBoolean="false")
    assert evaluate(asps(), odd).criterion("advanced-disease").status == "unknown"


@pytest.mark.parametrize(("flag", "expected"), [(True, "met"), (False, "unknown")])
def test_the_history_observation_reaches_the_criterion_through_a_hook_prefetch(tmp_path: Path, flag: bool,
                                                                                expected: str) -> None:
    # the hook reads Observation searches through their value elements only: valueBoolean must be kept
    hx = history_of_metastatic_cancer("hx1", "1287652008", valueBoolean=flag)
    body = hook_body(fhir.patient(PID, "1990-05-02", "female"), {"conditions": [asps()], "history": [hx]})
    with TestClient(create_app(service_settings(tmp_path))) as client:
        response = client.post("/cds-services/axiom-eligibility", json=body)
    assert response.status_code == 200
    (shown,) = response.json()["cards"]
    decisive = decisive_rows(shown["detail"])
    if expected == "met":  # a met criterion is not decisive: folded into "Also met", or listed with its note
        met = [line for line in shown["detail"].splitlines() if line.startswith(("**Also met:**", "- advanced"))]
        assert any("advanced disease" in line for line in met) and "advanced disease" not in decisive
    else:
        assert decisive["advanced disease"][0] == expected


def test_the_history_prefetch_asks_for_the_snomed_coded_history_observation(tmp_path: Path) -> None:
    with TestClient(create_app(service_settings(tmp_path))) as client:
        (service,) = client.get("/cds-services").json()["services"]
    assert "http://snomed.info/sct|1287652008" in service["prefetch"]["history"]



# ------------------------------------------------------------------ deceased patients

def evaluate_patient(patient: Json, *resources: Json) -> EligibilityReport:
    return evaluate_bundle(orjson.dumps(fhir.bundle([patient, *resources])), AS_OF)


def person(**deceased: Any) -> Json:
    return {**fhir.patient(PID, "1990-05-02", "female"), **deceased}


def test_a_patient_who_died_before_the_evaluation_date_is_not_eligible_and_gets_no_card() -> None:
    report = evaluate_patient(person(deceasedDateTime="2026-10-02"), asps())
    assert report.overall == "not-eligible"
    assert report.reasons[0] == "deceased (2026-10-02)"
    assert card(report) is None
    assert cards_response(report) == {"cards": []}
    assert [c["id"] for c in report.to_json()["criteria"]] == [c.id for c in report.criteria]
    assert len(report.criteria) == 17


def test_death_recorded_as_a_boolean_is_not_eligible_and_gets_no_card() -> None:
    report = evaluate_patient(person(deceasedBoolean=True), asps())
    assert report.overall == "not-eligible" and "deceased" in report.reasons[0]
    assert card(report) is None


def test_deceased_boolean_false_is_alive_and_evaluated_normally() -> None:
    alive = evaluate_patient(person(deceasedBoolean=False), asps())
    plain = evaluate_patient(person(), asps())
    assert alive.overall == plain.overall == "needs-review"
    assert not any("deceased" in r for r in alive.reasons)
    assert card(alive) is not None


def test_a_death_dated_after_the_evaluation_date_means_alive_on_that_date() -> None:
    report = evaluate_patient(person(deceasedDateTime=days_ago(-10)), asps())
    assert report.overall == "needs-review"
    assert card(report) is not None


def test_a_death_on_the_evaluation_date_counts() -> None:
    report = evaluate_patient(person(deceasedDateTime=f"{AS_OF.isoformat()}T08:00:00Z"), asps())
    assert report.overall == "not-eligible"


def test_no_sarcoma_stays_not_applicable_for_a_deceased_patient() -> None:
    assert evaluate_patient(person(deceasedBoolean=True)).overall == "not-applicable"


def hook_body(patient: Json, searches: dict[str, list[Json]]) -> Json:
    keys = ("labs", "performance", "history", "conditions", "medicationStatement", "medicationRequest",
            "medicationAdministration")
    prefetch: Json = {"patient": patient}
    for key in keys:
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset",
                         "entry": [{"resource": r} for r in searches.get(key, [])]}
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": PID},
            "prefetch": prefetch}


def test_the_hook_answers_no_card_for_a_deceased_patient(tmp_path: Path) -> None:
    body = hook_body(person(deceasedDateTime="2026-10-02"), {"conditions": [asps()]})
    with TestClient(create_app(service_settings(tmp_path))) as client:
        response = client.post("/cds-services/axiom-eligibility", json=body)
    assert response.status_code == 200
    assert response.json() == {"cards": []}


# ------------------------------------------------------------------ hCG

def test_a_quantitative_hcg_in_a_unit_that_cannot_be_converted_is_unknown_never_dropped() -> None:
    result = evaluate(asps(), lab("19080-1", 1500, "mg/dL")).criterion("pregnancy-breastfeeding")
    assert result.status == "unknown"
    assert "quantitative hCG" in (result.note or "") and result.evidence


def test_a_newer_pregnancy_test_that_cannot_be_read_makes_pregnancy_unknown_never_met() -> None:
    """A quantitative hCG sent as text ("positive", "see note") is no number; it may still be positive."""
    from tests.helpers import asps, evaluate, lab

    unreadable = lab("19080-1", None)
    unreadable["valueString"] = "positive - see note"
    result = evaluate(asps(), unreadable).criterion("pregnancy-breastfeeding")
    assert result.status == "unknown", "an unreadable recent hCG might be positive"
    assert result.note and "was not used" in result.note


# ------------------------------------------------------------------ unreadable codes

def platelets_with_coding_as_object(value: float) -> Json:
    obs = lab("777-3", value, "10*3/uL", ucum="10*3/uL")
    obs["code"] = {"coding": obs["code"]["coding"][0]}  # an object where FHIR has a list
    return obs


def test_a_result_whose_code_cannot_be_read_is_reported_never_silently_missing() -> None:
    # platelets 50 x10^3/uL would fail the criterion; with its code unreadable nobody can tell it is a
    # platelet count: the criterion is unknown (never met), and the report says which resource was not read
    report = evaluate(asps(), platelets_with_coding_as_object(50))
    assert report.criterion("platelets").status == "unknown"
    (note,) = [n for n in report.data_notes if "code is not a readable CodeableConcept" in n]
    assert note.startswith("Observation/")


def test_an_unreadable_code_in_a_hook_prefetch_is_on_the_card(tmp_path: Path) -> None:
    body = hook_body(fhir.patient(PID, "1990-05-02", "female"),
                     {"conditions": [asps()], "labs": [platelets_with_coding_as_object(50)]})
    with TestClient(create_app(service_settings(tmp_path))) as client:
        response = client.post("/cds-services/axiom-eligibility", json=body)
    assert response.status_code == 200
    (shown,) = response.json()["cards"]
    assert decisive_rows(shown["detail"])["platelets"][0] == "unknown"
    assert "code is not a readable CodeableConcept" in shown["detail"]


def test_a_result_coded_by_text_only_is_no_unreadable_code() -> None:
    # valid FHIR: a code with text and no coding names no code, so nothing reads it — but nothing is wrong
    # with it either, and the report must not call it unreadable
    # (also when another element of the wrong JSON type makes the Bundle reader read it field by field)
    for odd in ({}, {"issued": 5}):
        obs = {**lab("777-3", 50, "10*3/uL", ucum="10*3/uL"), **odd}
        obs["code"] = {"text": "Platelet count"}
        report = evaluate(asps(), obs)
        assert report.criterion("platelets").status == "unknown"
        assert not [n for n in report.data_notes if "readable CodeableConcept" in n], (odd, report.data_notes)
