"""Diagnosis and cohort, advanced and measurable disease, prior ICI with later progression, verdict."""

from __future__ import annotations

import pytest

from adapter.synth import fhir
from adapter.synth.fhir import RXNORM
from tests.helpers import ICD10, ICDO3, LOINC, SNOMED, SUBJECT, asps, days_ago, evaluate, lab


def sarcoma(system: str, code: str, **kw: object) -> dict:  # type: ignore[type-arg]
    return fhir.condition("s1", SUBJECT, system, code, "sarcoma", **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ diagnosis and cohort

def test_asps_by_icdo3_morphology_assigns_the_asps_cohort() -> None:
    report = evaluate(asps())
    assert report.criterion("diagnosis").status == "met"
    assert report.cohort == "asps"


def test_asps_in_the_mcode_histology_extension() -> None:
    cond = fhir.condition("s1", SUBJECT, ICD10, "C49.20", "Malignant neoplasm of connective tissue, lower limb",
                          histology=("9581/3", "Alveolar soft part sarcoma"))
    report = evaluate(cond)
    assert report.cohort == "asps"
    assert report.criterion("diagnosis").status == "met"


@pytest.mark.parametrize("coding", [(ICDO3, "8890/3"), (ICDO3, "9040/3"), (SNOMED, "424413001"),
                                    (ICD10, "C49.9")])
def test_other_soft_tissue_sarcoma_goes_to_the_safety_run_in(coding: tuple[str, str]) -> None:
    report = evaluate(sarcoma(*coding))
    assert report.criterion("diagnosis").status == "met"
    assert report.cohort == "safety-run-in"
    assert report.criterion("prior-ici-progression").status == "not-applicable"


def test_snomed_404053004_is_alveolar_rhabdomyosarcoma_not_asps() -> None:
    # "Alveolar" is the trap: 404053004 is Alveolar rhabdomyosarcoma (disorder), ICD-O-3 8920/3 — a soft
    # tissue sarcoma for the safety run-in. Taking it for ASPS would put the patient in the wrong cohort.
    report = evaluate(sarcoma(SNOMED, "404053004"))
    assert report.cohort == "safety-run-in"
    assert "code not verified" in (report.criterion("diagnosis").observed or "")
    assert evaluate(sarcoma(ICDO3, "8920/3")).cohort == "safety-run-in"


def test_no_sarcoma_makes_the_trial_not_applicable() -> None:
    breast = fhir.condition("b1", SUBJECT, ICD10, "C50.911", "Breast cancer")
    report = evaluate(breast)
    assert report.criterion("diagnosis").status == "not-met"
    assert report.overall == "not-applicable"
    assert report.cohort is None


def test_benign_morphology_is_not_a_sarcoma() -> None:
    assert evaluate(sarcoma(ICDO3, "8890/0")).overall == "not-applicable"  # leiomyoma


@pytest.mark.parametrize("verification", ["refuted", "entered-in-error"])
def test_refuted_or_erroneous_diagnoses_do_not_count(verification: str) -> None:
    report = evaluate(asps(verification=verification))
    assert report.overall == "not-applicable"


@pytest.mark.parametrize("clinical", ["resolved", "remission", "inactive"])
def test_a_resected_or_remitted_primary_stays_the_diagnosis(clinical: str) -> None:
    # DESIGN.md "Real charts": only refuted / entered-in-error remove a diagnosis
    report = evaluate(asps(clinical=clinical))
    assert report.criterion("diagnosis").status == "met"
    assert report.cohort == "asps"


def test_provisional_asps_needs_histological_confirmation() -> None:
    report = evaluate(asps(verification="provisional"))
    assert report.criterion("diagnosis").status == "unknown"
    assert report.cohort == "asps"
    assert report.overall == "needs-review"


def test_bone_sarcoma_is_left_to_the_study_team() -> None:
    report = evaluate(sarcoma(ICDO3, "9180/3"))  # osteosarcoma
    assert report.criterion("diagnosis").status == "unknown"
    assert report.overall == "needs-review"


def test_diagnosis_recorded_after_the_evaluation_date_is_not_known_yet() -> None:
    assert evaluate(asps(recorded=days_ago(-10))).overall == "not-applicable"


# ------------------------------------------------------------------ advanced disease

@pytest.mark.parametrize("coding", [(ICD10, "C78.00"), (ICD10, "C79.51"), (SNOMED, "94381002"), (ICDO3, "9581/6")])
def test_metastasis_makes_disease_advanced(coding: tuple[str, str]) -> None:
    mets = fhir.condition("m1", SUBJECT, *coding, "metastasis")
    assert evaluate(asps(), mets).criterion("advanced-disease").status == "met"


def test_tnm_m1_observation_makes_disease_advanced() -> None:
    m1 = lab("21907-1", None, coded=fhir.concept("http://cancerstaging.org", "cM1"), ago=200)
    assert evaluate(asps(), m1).criterion("advanced-disease").status == "met"


def test_no_metastasis_recorded_is_unknown_not_failed() -> None:
    result = evaluate(asps()).criterion("advanced-disease")
    assert result.status == "unknown"
    assert "unresectable" in (result.note or "")


# ------------------------------------------------------------------ measurable disease

CT = fhir.concept(SNOMED, "77477000", "CT")
XRAY = fhir.concept(SNOMED, "399208008", "Plain chest X-ray")


def tumor(mm: float, method: dict | None = None, unit: str = "mm", **kw: object) -> dict:  # type: ignore[type-arg]
    comp = [{"code": fhir.concept(LOINC, "33728-7"), "valueQuantity": fhir.quantity(mm, unit, unit)}]
    return lab("21889-1", None, method=method, component=comp, category="imaging", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("mm", "method", "expected"), [
    (10, CT, "met"), (9, CT, "not-met"),
    (20, XRAY, "met"), (19, XRAY, "unknown"), (9, XRAY, "not-met"),  # 10-19 mm on x-ray: needs CT/MRI
    (20, None, "met"), (15, None, "unknown"), (9, None, "not-met"),
])
def test_measurable_threshold_depends_on_the_method(mm: float, method: dict | None, expected: str) -> None:  # type: ignore[type-arg]
    assert evaluate(asps(), tumor(mm, method)).criterion("measurable-disease").status == expected


def test_tumor_size_in_centimetres() -> None:
    assert evaluate(asps(), tumor(1.2, CT, unit="cm")).criterion("measurable-disease").status == "met"


def test_any_one_measurable_lesion_is_enough() -> None:
    assert evaluate(asps(), tumor(6, CT), tumor(14, CT)).criterion("measurable-disease").status == "met"


def test_old_scan_is_stale() -> None:
    result = evaluate(asps(), tumor(30, CT, ago=90)).criterion("measurable-disease")
    assert result.status == "unknown" and "stale" in (result.note or "")


# ------------------------------------------------------------------ prior ICI and progression

def ici(rxnorm: str | None, name: str, when: str, resource_type: str = "MedicationRequest",
        status: str = "completed") -> dict:  # type: ignore[type-arg]
    return fhir.medication_request(f"med-{name[:4]}-{when}", SUBJECT, rxnorm, name, when, status=status,
                                   resource_type=resource_type)


def progression(ago: int) -> dict:  # type: ignore[type-arg]
    return lab("97509-4", None, coded=fhir.concept(SNOMED, "271299001", "Patient's condition worsened"), ago=ago)


def test_progression_after_prior_pembrolizumab_is_met() -> None:
    result = evaluate(asps(), ici("1547545", "pembrolizumab", days_ago(200)), progression(30)).criterion(
        "prior-ici-progression")
    assert result.status == "met"
    assert any(e.startswith("MedicationRequest/") for e in result.evidence)


@pytest.mark.parametrize("resource_type", ["MedicationStatement", "MedicationAdministration"])
def test_every_medication_resource_type_counts(resource_type: str) -> None:
    med = ici("1792776", "atezolizumab", days_ago(150), resource_type=resource_type)
    assert evaluate(asps(), med, progression(20)).criterion("prior-ici-progression").status == "met"


def test_ici_matched_by_brand_name_when_no_rxnorm_code() -> None:
    result = evaluate(asps(), ici(None, "Keytruda 200 mg IV every 3 weeks", days_ago(200)), progression(30)).criterion(
        "prior-ici-progression")
    assert result.status == "met"
    assert "by name" in (result.note or "")


def test_progression_only_before_the_ici_is_unknown() -> None:
    result = evaluate(asps(), ici("1597876", "nivolumab", days_ago(100)), progression(300)).criterion(
        "prior-ici-progression")
    assert result.status == "unknown"


def test_no_ici_history_is_unknown_not_failed() -> None:
    assert evaluate(asps(), progression(30)).criterion("prior-ici-progression").status == "unknown"


def test_cancelled_order_is_not_exposure() -> None:
    med = ici("1547545", "pembrolizumab", days_ago(200), status="cancelled")
    assert evaluate(asps(), med, progression(30)).criterion("prior-ici-progression").status == "unknown"


def test_non_ici_drug_is_not_exposure() -> None:
    med = fhir.medication_request("m9", SUBJECT, "1234", "doxorubicin", days_ago(200))
    med["medicationCodeableConcept"]["coding"][0]["system"] = RXNORM
    assert evaluate(asps(), med, progression(30)).criterion("prior-ici-progression").status == "unknown"


# ------------------------------------------------------------------ verdict

def test_closed_cohort_makes_its_patients_not_eligible(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from adapter.trials import load_trial
    real = load_trial()
    closed = dataclasses.replace(real, cohorts={**real.cohorts, "asps": dataclasses.replace(
        real.cohorts["asps"], open=False)})
    monkeypatch.setattr("adapter.engine.load_trial", lambda name="axiom": closed)
    report = evaluate(asps())
    assert report.overall == "not-eligible"
    assert any("closed" in r for r in report.reasons)
