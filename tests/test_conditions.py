"""Condition semantics per code set: a cancer stays the diagnosis, a metastasis or pregnancy counts only
while it is going on, a lifelong trait has no "resolved"; mCODE's ways of recording metastatic disease.

Each test is a patient a clinician would read one way; the rules are in mappings/conditions.yaml
(`semantics`) and DESIGN.md "Real charts".
"""

from __future__ import annotations

import copy
import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter import tables
from adapter.engine import evaluate_bundle
from adapter.synth import fhir
from tests.helpers import AS_OF, ICD10, ICDO3, SNOMED, SUBJECT, asps, days_ago, evaluate, lab

SECONDARY_PROFILE = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-secondary-cancer-condition"
# hl7.fhir.us.mcode@4.0.0 files, vendored unchanged (tests/fixtures/hl7/README.md: package path and checksum)
MCODE = Path(__file__).parent / "fixtures" / "hl7"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def condition(cid: str, system: str, code: str, display: str = "", **fields: Any) -> dict[str, Any]:
    """A confirmed, active Condition of the test patient, with any element replaced or added
    (`clinical=None` / `verification=None` leave the status out)."""
    clinical = fields.pop("clinical", "active")
    verification = fields.pop("verification", "confirmed")
    r = fhir.condition(cid, SUBJECT, system, code, display or code, clinical=clinical, verification=verification)
    r.update(fields)
    return r


def liver_mets(**fields: Any) -> dict[str, Any]:
    return condition("lm", ICD10, "C78.7", "Secondary malignant neoplasm of liver", **fields)


def ast_at(times_uln: float) -> dict[str, Any]:
    return lab("1920-8", times_uln * 40, "U/L", high=40)


def ast_status(*resources: dict[str, Any], birth_date: str | None = "1990-05-02") -> str:
    """AST at 4 x ULN: met only when liver metastases are current (5 x ULN), else above 2.5 x ULN."""
    return evaluate(asps(), *resources, ast_at(4), birth_date=birth_date).criterion("ast").status


# ------------------------------------------------------------------ diagnosis: a cancer stays the diagnosis

@pytest.mark.parametrize("clinical", ["remission", "resolved", "inactive", None])
def test_an_asps_primary_in_remission_or_resected_is_still_the_diagnosis(clinical: str | None) -> None:
    report = evaluate(asps(clinical=clinical))
    assert report.criterion("diagnosis").status == "met"
    assert report.cohort == "asps"
    assert report.overall != "not-applicable"  # the card is shown


def test_the_typical_asps_cohort_patient_primary_in_remission_lung_metastases_active() -> None:
    primary = asps(clinical="remission")
    primary["abatementDateTime"] = days_ago(400)  # resected: the primary's abatement does not end the cancer
    lungs = condition("lung", ICD10, "C78.01", "Secondary malignant neoplasm of right lung")
    report = evaluate(primary, lungs)
    assert report.criterion("diagnosis").status == "met"
    assert report.cohort == "asps"
    assert report.criterion("advanced-disease").status == "met"
    assert "Condition/lung" in report.criterion("advanced-disease").evidence


def test_the_remission_status_is_shown_with_the_diagnosis() -> None:
    result = evaluate(asps(clinical="remission")).criterion("diagnosis")
    assert "remission" in (result.note or "")


@pytest.mark.parametrize("verification", ["refuted", "entered-in-error"])
@pytest.mark.parametrize("clinical", ["active", "remission"])
def test_a_refuted_or_erroneous_asps_gives_no_card(verification: str, clinical: str) -> None:
    report = evaluate(asps(clinical=clinical, verification=verification))
    assert report.criterion("diagnosis").status == "not-met"
    assert report.overall == "not-applicable"


@pytest.mark.parametrize("verification", ["provisional", "differential", "unconfirmed"])
def test_an_unconfirmed_asps_in_remission_needs_histological_confirmation(verification: str) -> None:
    report = evaluate(asps(clinical="remission", verification=verification))
    assert report.criterion("diagnosis").status == "unknown"
    assert report.cohort == "asps"


def test_a_sarcoma_diagnosed_after_the_evaluation_date_does_not_count_yet() -> None:
    later = fhir.condition("s1", SUBJECT, ICDO3, "9581/3", "ASPS", recorded="2027-01-10")
    assert evaluate(later).overall == "not-applicable"


# ------------------------------------------------------------------ current state: metastases

def test_a_liver_metastasis_that_abated_before_the_evaluation_date_does_not_raise_the_ast_limit() -> None:
    assert ast_status() == "not-met"
    assert ast_status(liver_mets()) == "met"
    assert ast_status(liver_mets(clinical="resolved", abatementDateTime=days_ago(30))) == "not-met"
    assert ast_status(liver_mets(abatementDateTime=AS_OF.isoformat())) == "not-met"  # on the day: past


def test_a_liver_metastasis_that_abated_after_the_evaluation_date_still_raises_it() -> None:
    # a retrospective evaluation: on the evaluation date the metastases had not yet resolved
    assert ast_status(liver_mets(abatementDateTime="2026-11-22")) == "met"
    assert ast_status(liver_mets(clinical="resolved", abatementDateTime="2027-03-01T10:00:00Z")) == "met"


@pytest.mark.parametrize(("abated", "expected"), [("2026-10", "not-met"), ("2026-11", "met"), ("2026", "met"),
                                                  ("2025", "not-met")])
def test_a_partial_abatement_date_is_past_only_when_every_day_it_can_mean_is(abated: str, expected: str) -> None:
    # AS_OF is 2026-11-21: "2026-11" may be 2026-11-30, so the metastases may still be there
    assert ast_status(liver_mets(clinical="resolved", abatementDateTime=abated)) == expected


@pytest.mark.parametrize("clinical", ["resolved", "remission", "inactive"])
def test_a_liver_metastasis_recorded_as_resolved_is_not_current(clinical: str) -> None:
    assert ast_status(liver_mets(clinical=clinical)) == "not-met"


def test_a_liver_metastasis_without_clinical_status_counts() -> None:
    assert ast_status(liver_mets(clinical=None)) == "met"


@pytest.mark.parametrize(("abatement", "expected"), [
    ({"abatementBoolean": True}, "not-met"),  # abated, date unknown
    ({"abatementBoolean": False}, "met"),  # explicitly not abated
    ({"abatementString": "after the second line of chemotherapy"}, "not-met"),
    ({"abatementString": "2027-02"}, "met"),  # a string that is a date is placed like one
    ({"abatementPeriod": {"start": "2026-01-01", "end": "2026-03-01"}}, "not-met"),
    ({"abatementPeriod": {"start": "2026-11-01"}}, "met"),  # open: still abating, not past
    ({"abatementPeriod": {"start": "2026-12-01", "end": "2027-01-01"}}, "met"),
])
def test_each_abatement_form_is_read_against_the_evaluation_date(abatement: dict[str, Any], expected: str) -> None:
    assert ast_status(liver_mets(clinical=None, **abatement)) == expected


@pytest.mark.parametrize(("age", "expected"), [
    ({"value": 35, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"}, "not-met"),
    ({"value": 36, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"}, "met"),  # 36 until 2027-05
    ({"value": 36, "comparator": "<", "unit": "years", "code": "a"}, "not-met"),  # before the 36th birthday
    ({"value": 30, "comparator": ">", "unit": "yr"}, "met"),  # open-ended
    ({"value": 400, "unit": "mo", "code": "mo"}, "not-met"),  # 33 years 4 months
])
def test_an_abatement_age_is_placed_with_the_birth_date(age: dict[str, Any], expected: str) -> None:
    # born 1990-05-02: 36 years old on 2026-11-21
    assert ast_status(liver_mets(clinical=None, abatementAge=age)) == expected


def test_an_abatement_age_that_cannot_be_placed_reads_as_abated() -> None:
    age = {"value": 35, "unit": "years", "code": "a"}
    assert ast_status(liver_mets(clinical=None, abatementAge=age), birth_date=None) == "not-met"
    assert ast_status(liver_mets(clinical=None, abatementAge={"value": 35, "unit": "moons"})) == "not-met"


def test_an_abatement_range_of_ages_is_read_by_its_end() -> None:
    past = {"low": {"value": 30, "code": "a"}, "high": {"value": 34, "code": "a"}}
    open_ended = {"low": {"value": 30, "code": "a"}}
    assert ast_status(liver_mets(clinical=None, abatementRange=past)) == "not-met"
    assert ast_status(liver_mets(clinical=None, abatementRange=open_ended)) == "met"


def test_a_resolved_metastasis_does_not_make_the_disease_advanced() -> None:
    lungs = condition("lung", ICD10, "C78.01", "lung metastases", clinical="resolved", abatementDateTime="2025-06")
    result = evaluate(asps(), lungs).criterion("advanced-disease")
    assert result.status == "unknown"  # never not-met: unresectability is rarely coded


# ------------------------------------------------------------------ lifelong: Gilbert, HIV

@pytest.mark.parametrize("clinical", ["resolved", "inactive", "remission"])
def test_gilbert_recorded_as_resolved_still_allows_3x_uln_bilirubin(clinical: str) -> None:
    gilbert = condition("g1", ICD10, "E80.4", "Gilbert syndrome", clinical=clinical, abatementDateTime="2020-01-01")
    result = evaluate(asps(), gilbert, lab("1975-2", 2.5 * 1.2, "mg/dL", high=1.2)).criterion("total-bilirubin")
    assert result.status == "met"
    assert "Condition/g1" in result.evidence


def test_a_resolved_hiv_entry_still_needs_an_undetectable_viral_load() -> None:
    hiv = condition("h1", SNOMED, "86406008", "HIV infection", clinical="resolved")
    assert evaluate(asps(), hiv).criterion("hiv").status == "unknown"  # not "not-applicable"
    assert evaluate(asps(), hiv, lab("20447-9", 12_400, "copies/mL")).criterion("hiv").status == "not-met"


# ------------------------------------------------------------------ current state: pregnancy

def test_a_pregnancy_that_ended_is_not_a_current_pregnancy() -> None:
    pregnant = condition("pg", SNOMED, "77386006", "Pregnant")
    assert evaluate(asps(), pregnant).criterion("pregnancy-breastfeeding").status == "not-met"
    delivered = condition("pg", SNOMED, "77386006", "Pregnant", clinical="resolved", abatementDateTime="2025-02-03")
    assert evaluate(asps(), delivered).criterion("pregnancy-breastfeeding").status != "not-met"
    assert evaluate(asps(), condition("pg", SNOMED, "77386006", "Pregnant", clinical="inactive")).criterion(
        "pregnancy-breastfeeding").status != "not-met"


# ------------------------------------------------------------------ mCODE secondary cancer

def secondary(cid: str, code: dict[str, Any], **fields: Any) -> dict[str, Any]:
    r = {"resourceType": "Condition", "id": cid, "meta": {"profile": [SECONDARY_PROFILE]},
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                        "code": "active"}]},
         "code": code, "subject": {"reference": SUBJECT}}
    r.update(fields)
    return r


def test_an_mcode_secondary_cancer_condition_is_metastatic_disease_whatever_its_code() -> None:
    local = secondary("sc1", {"coding": [{"system": "urn:oid:1.2.3", "code": "MET-LUNG"}], "text": "lung mets"})
    result = evaluate(asps(), local).criterion("advanced-disease")
    assert result.status == "met"
    assert "lung mets" in (result.observed or "")
    text_only = secondary("sc2", {"text": "multiple pulmonary metastases"})
    assert evaluate(asps(), text_only).criterion("advanced-disease").status == "met"
    versioned = secondary("sc3", {"text": "mets"}, meta={"profile": [SECONDARY_PROFILE + "|4.0.0"]})
    assert evaluate(asps(), versioned).criterion("advanced-disease").status == "met"


def test_an_mcode_secondary_cancer_condition_that_resolved_is_not_current() -> None:
    gone = secondary("sc1", {"text": "lung mets"}, abatementDateTime="2024-05-01")
    assert evaluate(asps(), gone).criterion("advanced-disease").status == "unknown"


@pytest.mark.parametrize("coding", [(ICD10, "C7B.03"), (ICD10, "C79.51"), (SNOMED, "128462008"),
                                    (SNOMED, "94225005")])
def test_a_secondary_cancer_value_set_code_alone_makes_the_disease_advanced(coding: tuple[str, str]) -> None:
    # codes of mCODE 4.0.0 SecondaryCancerDisorderVS, with no profile on the resource
    mets = condition("m1", *coding, "secondary malignant neoplasm")
    assert evaluate(asps(), mets).criterion("advanced-disease").status == "met"


def test_a_generic_secondary_cancer_with_a_liver_body_site_is_a_liver_metastasis() -> None:
    # mCODE's way: SNOMED 128462008 + bodySite Liver structure (10200004)
    mets = secondary("sc1", {"coding": [{"system": SNOMED, "code": "128462008",
                                         "display": "Metastatic malignant neoplasm"}]},
                     bodySite=[{"coding": [{"system": SNOMED, "code": "10200004", "display": "Liver structure"}]}])
    assert ast_status(mets) == "met"
    lung_site = dict(mets, bodySite=[{"coding": [{"system": SNOMED, "code": "39607008", "display": "Lung"}]}])
    assert ast_status(lung_site) == "not-met"
    not_a_metastasis = condition("c1", SNOMED, "363346000", "Malignant neoplastic disease",
                                 bodySite=[{"coding": [{"system": SNOMED, "code": "10200004"}]}])
    assert ast_status(not_a_metastasis) == "not-met"


def test_the_metastasis_set_holds_every_icd10cm_code_of_the_mcode_value_set() -> None:
    vs = json.loads((MCODE / "mcode-ValueSet-mcode-secondary-cancer-disorder-vs.json").read_text())
    metastasis = tables.conditions().sets["metastasis"]
    codes = [(inc["system"], c["code"]) for inc in vs["compose"]["include"] for c in inc.get("concept", ())]
    assert len(codes) > 60
    assert [c for c in codes if metastasis.match(*c) is None] == []
    roots = [f["value"] for inc in vs["compose"]["include"] for f in inc.get("filter", ())]
    assert roots == ["128462008"] and metastasis.match(SNOMED, "128462008") is not None


# mCODE 4.0.0 example Conditions (hl7.fhir.us.mcode@4.0.0, package/example/, CC0), narrative left out.
JENNY_M_PRIMARY: dict[str, Any] = {
    "resourceType": "Condition", "id": "primary-cancer-condition-jenny-m",
    "meta": {"profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition"]},
    "extension": [{"url": "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior",
                   "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "82711006",
                                                        "display": "Infiltrating duct carcinoma (morphologic "
                                                                   "abnormality)"}]}}],
    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                   "code": "remission"}]},
    "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                       "code": "confirmed"}]},
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                              "code": "problem-list-item"}]}],
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "353431000119107",
                         "display": "Primary malignant neoplasm of female left breast (disorder)"}]},
    "subject": {"reference": "Patient/cancer-patient-jenny-m"}, "onsetDateTime": "2018-03-16",
    "asserter": {"reference": "Practitioner/us-core-practitioner-owen-oncologist"},
    "stage": [{"summary": {"coding": [{"system": "http://snomed.info/sct", "code": "1222806003",
                                       "display": "American Joint Committee on Cancer stage IIIC (qualifier value)"}]},
               "assessment": [{"reference": "Observation/tnm-clinical-stage-group-jenny-m"}],
               "type": {"coding": [{"system": "http://snomed.info/sct", "code": "897275008",
                                    "display": "American Joint Commission on Cancer, Cancer Staging Manual, 8th "
                                               "edition neoplasm staging system (tumor staging)"}]}}],
}
BRAIN_METS: dict[str, Any] = {
    "resourceType": "Condition", "id": "secondary-cancer-condition-brain-mets",
    "meta": {"profile": [SECONDARY_PROFILE]},
    "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/condition-related",
                   "valueReference": {"reference": "Condition/primary-cancer-condition-nsclc"}}],
    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                   "code": "active", "display": "Active"}]},
    "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                       "code": "confirmed", "display": "Confirmed"}]},
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                              "code": "problem-list-item"}]}],
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "94225005",
                         "display": "Secondary malignant neoplasm of brain"}]},
    "subject": {"reference": "Patient/cancer-patient-john-anyperson"}, "onsetDateTime": "2019-05-01",
    "asserter": {"reference": "Practitioner/us-core-practitioner-kyle-anydoc"},
}


def ours(resource: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of an example resource, as the test patient's, with top-level elements changed."""
    copy: dict[str, Any] = json.loads(json.dumps(resource))
    copy.update(subject={"reference": SUBJECT}, **changes)
    return copy


@pytest.mark.parametrize(("resource", "name"), [(JENNY_M_PRIMARY, "Condition-primary-cancer-condition-jenny-m.json"),
                                                (BRAIN_METS, "Condition-secondary-cancer-condition-brain-mets.json")])
def test_the_inline_mcode_examples_are_faithful_copies(resource: dict[str, Any], name: str) -> None:
    published = json.loads((MCODE / f"mcode-{name}").read_text())
    published.pop("text", None)
    assert published == resource


def test_mcode_example_patients_are_read_as_a_clinician_would() -> None:
    # Jenny M's breast cancer in remission: not a sarcoma — no card
    assert evaluate(ours(JENNY_M_PRIMARY)).overall == "not-applicable"
    # the same primary recoded as ASPS (ICD-O-3 9581/3 in the histology extension), still in remission
    histology = [{"url": JENNY_M_PRIMARY["extension"][0]["url"],
                  "valueCodeableConcept": {"coding": [{"system": ICDO3, "code": "9581/3"}]}}]
    primary = ours(JENNY_M_PRIMARY, extension=histology)
    report = evaluate(primary)
    assert report.cohort == "asps" and report.criterion("diagnosis").status == "met"
    assert report.criterion("advanced-disease").status == "unknown"  # stage IIIC, no metastasis
    # with the example brain metastases (SecondaryCancerCondition, SNOMED 94225005, active)
    with_mets = evaluate(primary, ours(BRAIN_METS))
    assert with_mets.criterion("advanced-disease").status == "met"
    assert "Condition/secondary-cancer-condition-brain-mets" in with_mets.criterion("advanced-disease").evidence
    # the brain metastases treated and resolved before the evaluation date
    resolved = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]}
    gone = ours(BRAIN_METS, clinicalStatus=resolved, abatementDateTime="2025-01-15")
    assert evaluate(primary, gone).criterion("advanced-disease").status == "unknown"
    # Jenny M's real verificationStatus, its display emptied (not valid FHIR: a string is never empty): it
    # may have said refuted, so the recoded ASPS is to confirm — not dropped, not read as confirmed
    blank = copy.deepcopy(primary["verificationStatus"])
    blank["coding"][0]["display"] = ""
    unsure = evaluate(ours(primary, verificationStatus=blank))
    assert unsure.cohort == "asps" and unsure.criterion("diagnosis").status == "unknown"
    assert "verificationStatus is not valid FHIR R4" in (unsure.criterion("diagnosis").note or "")
    # and its brain metastases with their real clinicalStatus emptied the same way: no longer taken as current
    mets_blank = ours(BRAIN_METS)
    mets_blank["clinicalStatus"]["coding"][0]["display"] = ""
    assert evaluate(primary, mets_blank).criterion("advanced-disease").status != "met"


def test_r4_core_f202_a_cancer_resolved_at_an_age_is_still_a_cancer() -> None:
    # FHIR R4 core example Condition-f202: malignant neoplastic disease, resolved, abatementAge 54 a —
    # recoded as ASPS it stays the diagnosis (abatement ends a current-state condition, not a cancer)
    f202 = condition("f202", ICDO3, "9581/3", "ASPS", clinical="resolved",
                     abatementAge={"value": 54, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"},
                     bodySite=[{"coding": [{"system": SNOMED, "code": "361355005",
                                            "display": "Entire head and neck"}]}])
    report = evaluate(f202, birth_date="1960-01-01")
    assert report.criterion("diagnosis").status == "met" and report.cohort == "asps"


# ------------------------------------------------------------------ odd JSON: absent, never a crash

def report_of(*resources: dict[str, Any]) -> Any:
    bundle = fhir.bundle([fhir.patient("p1", "1990-05-02", "female"), *resources])
    return evaluate_bundle(orjson.dumps(bundle), date(2026, 11, 21))


@pytest.mark.parametrize("field", [
    {"clinicalStatus": "remission"}, {"clinicalStatus": {"coding": 5}},
    {"abatementDateTime": ["2020-01-01"]}, {"abatementAge": 54}, {"meta": "x"}, {"meta": {"profile": "x"}},
    {"extension": 5}, {"bodySite": {"coding": []}}, {"onsetDateTime": 2020}, {"abatementPeriod": []},
])
def test_a_field_of_the_wrong_json_type_is_absent(field: dict[str, Any]) -> None:
    report = report_of({**asps(), **field})
    assert report.criterion("diagnosis").status == "met"
    assert report.cohort == "asps"


@pytest.mark.parametrize("status", [["confirmed"], {"coding": [{"system": VERIFICATION, "code": "refuted",
                                                                 "display": ""}]}])
def test_a_verification_status_that_cannot_be_read_leaves_the_diagnosis_to_confirm(status: Any) -> None:
    # it may have said refuted or provisional: read as absent it would have made the diagnosis confirmed
    report = report_of({**asps(), "verificationStatus": status})
    assert report.criterion("diagnosis").status == "unknown" and report.cohort == "asps"


def test_a_condition_whose_code_is_not_valid_fhir_is_to_confirm_not_dropped() -> None:
    # "9581/3 " (a trailing space is not a FHIR code): the ASPS is unconfirmed, never silently absent
    broken = asps()
    broken["code"]["coding"][0]["code"] = "9581/3 "
    report = report_of(broken)
    assert report.overall == "needs-review" and report.criterion("diagnosis").status == "unknown"
    assert "not valid FHIR R4" in (report.criterion("diagnosis").note or "")


def test_an_abatement_of_the_wrong_type_leaves_the_metastasis_current() -> None:
    assert ast_status(liver_mets(abatementDateTime=["2020-01-01"])) == "met"
    assert ast_status(liver_mets(abatementBoolean="yes")) == "met"


def test_a_code_of_the_wrong_json_type_is_no_evidence_but_never_a_silent_not_applicable() -> None:
    # coding that is no list: what the Condition records cannot be told — it may be ASPS — so the diagnosis
    # is unknown (a card asks a person), not "none of the trial's diagnoses" (no card at all)
    broken = asps()
    broken["code"] = {"coding": 5}
    report = report_of(broken)
    assert report.overall == "needs-review" and report.cohort is None
    assert "cannot be read" in (report.criterion("diagnosis").note or "")
    # a readable list whose coding has a number for its code: no coding to match (no evidence)
    numbers = asps()
    numbers["code"] = {"coding": [{"system": ICDO3, "code": 9581}]}
    assert report_of(numbers).overall == "not-applicable"


def test_a_clinical_status_coded_in_another_system_is_not_read() -> None:
    local = liver_mets(clinicalStatus={"coding": [{"system": "urn:local", "code": "resolved"}]})
    assert ast_status(local) == "met"  # as if absent: counted (and noted)


# ------------------------------------------------------------------ the table itself

def test_a_set_without_valid_semantics_stops_the_tool_with_the_file_and_path(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "mappings"
    shutil.copytree(tables.mappings_dir(), bad)
    text = (bad / "conditions.yaml").read_text().replace("semantics: lifelong", "semantics: forever", 1)
    (bad / "conditions.yaml").write_text(text)
    monkeypatch.setenv("AXIOM_MAPPINGS", str(bad))
    tables.conditions.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"conditions\.yaml: sets\.gilbert\.semantics: 'forever'"):
            tables.conditions()
    finally:
        monkeypatch.delenv("AXIOM_MAPPINGS")
        tables.conditions.cache_clear()


def test_every_code_set_says_how_it_reads_clinical_status() -> None:
    sets = tables.conditions().sets
    assert {s.semantics for s in sets.values()} <= set(tables.SEMANTICS)
    assert {k for k, s in sets.items() if s.semantics == "diagnosis"} == {"asps", "soft-tissue-sarcoma",
                                                                         "bone-sarcoma"}
    assert {k for k, s in sets.items() if s.semantics == "lifelong"} == {"gilbert", "hiv"}


def test_the_order_of_conditions_in_the_bundle_never_changes_the_report() -> None:
    older = {**asps(), "onsetDateTime": "2019-03-01"}
    newer = fhir.condition("s2", SUBJECT, ICDO3, "9581/3", "ASPS, recurrence", clinical="recurrence")
    newer["onsetDateTime"] = "2024-06-01"
    lungs = condition("lung", ICD10, "C78.01", "lung metastases")
    brain = condition("brain", SNOMED, "94225005", "brain metastases", verification="provisional")
    resources = [older, newer, lungs, brain, liver_mets(), ast_at(4)]
    first = evaluate(*resources).to_json()
    assert evaluate(*reversed(resources)).to_json() == first
    assert evaluate(*resources[2:], *resources[:2]).to_json() == first
    diagnosis = next(c for c in first["criteria"] if c["id"] == "diagnosis")
    assert "recurrence" in diagnosis["observed"]  # the most recent ASPS entry is the one shown
