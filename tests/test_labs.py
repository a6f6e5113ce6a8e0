"""Lab criteria at, above and below their boundaries, in US and SI units, with and without reference ranges."""

from __future__ import annotations

import pytest

from adapter.synth import fhir
from tests.helpers import ICD10, SNOMED, SUBJECT, asps, evaluate, lab

# (criterion, LOINC, value at the boundary, unit as sent, UCUM code or None, a step that crosses it)
THRESHOLDS = [
    ("anc", "751-8", 1.0, "10*3/uL", "10*3/uL", 0.01),
    ("anc", "751-8", 1.0, "x10E3/uL", None, 0.01),
    ("anc", "753-4", 1000, "cells/uL", None, 1),
    ("anc", "26499-4", 1.0, "10*9/L", "10*9/L", 0.01),
    ("platelets", "777-3", 100, "K/uL", None, 1),
    ("platelets", "777-3", 100, "thou/uL", None, 1),
    ("platelets", "26515-7", 100, "10*9/L", "10*9/L", 1),
    ("platelets", "777-3", 100000, "/uL", "/uL", 1000),
    ("hemoglobin", "718-7", 9.0, "g/dL", "g/dL", 0.1),
    ("hemoglobin", "718-7", 90, "g/L", "g/L", 1),
    ("hemoglobin", "59260-0", 9.0 / 1.61145, "mmol/L", "mmol/L", 0.05),
    ("albumin", "1751-7", 2.5, "g/dL", "g/dL", 0.1),
    ("albumin", "61151-7", 25, "g/L", "g/L", 1),
    ("sodium", "2951-2", 130, "mmol/L", "mmol/L", 1),
    ("sodium", "2951-2", 130, "mEq/L", None, 1),
    ("sodium", "2947-0", 130, "meq/L", "meq/L", 1),
]


@pytest.mark.parametrize(("cid", "loinc", "at", "unit", "ucum", "step"), THRESHOLDS)
def test_fixed_threshold_is_met_at_and_above_and_fails_below(cid: str, loinc: str, at: float, unit: str,
                                                             ucum: str | None, step: float) -> None:
    for value, expected in ((at, "met"), (at + step, "met"), (at - step, "not-met")):
        report = evaluate(asps(), lab(loinc, value, unit, ucum=ucum))
        result = report.criterion(cid)
        assert result.status == expected, (value, unit, result)
        if expected == "not-met":
            assert result.note and "below" in result.note
            assert report.overall == "not-eligible"
        assert result.observed and unit in result.observed and "(2026-11-14)" in result.observed


def test_platelets_in_k_per_ul_are_thousands_not_kelvin() -> None:
    result = evaluate(asps(), lab("777-3", 85, "K/uL")).criterion("platelets")
    assert result.status == "not-met"
    assert "85,000 /uL" in (result.observed or "")


def test_molar_hemoglobin_converts_on_the_iron_basis() -> None:
    # 5.6 mmol/L × 1.61145 = 9.02 g/dL (met); 5.5 mmol/L = 8.86 g/dL (not met)
    assert evaluate(asps(), lab("59260-0", 5.6, "mmol/L", ucum="mmol/L")).criterion("hemoglobin").status == "met"
    assert evaluate(asps(), lab("59260-0", 5.5, "mmol/L", ucum="mmol/L")).criterion("hemoglobin").status == "not-met"


def test_unit_that_cannot_be_converted_is_unknown_never_a_guess() -> None:
    result = evaluate(asps(), lab("777-3", 250, "%")).criterion("platelets")
    assert result.status == "unknown"
    assert result.note and "%" in result.note


def test_value_without_any_unit_is_unknown() -> None:
    assert evaluate(asps(), lab("777-3", 250, None)).criterion("platelets").status == "unknown"


def test_missing_lab_is_unknown_not_not_met() -> None:
    report = evaluate(asps())
    for cid in ("anc", "platelets", "hemoglobin", "total-bilirubin", "ast", "alt", "renal-function", "albumin",
                "sodium"):
        assert report.criterion(cid).status == "unknown", cid
    assert report.overall == "needs-review"


# ------------------------------------------------------------------ ULN multiples

ULN_CASES = [
    # criterion, LOINC, ULN, unit, UCUM, allowed multiple
    ("total-bilirubin", "1975-2", 1.2, "mg/dL", "mg/dL", 1.5),
    ("total-bilirubin", "14631-6", 21.0, "umol/L", "umol/L", 1.5),
    ("total-bilirubin", "14631-6", 21.0, "µmol/L", None, 1.5),
    ("ast", "1920-8", 40, "U/L", "U/L", 2.5),
    ("ast", "1920-8", 40, "IU/L", None, 2.5),
    ("alt", "1742-6", 56, "U/L", "U/L", 2.5),
    ("alt", "1742-6", 0.6, "ukat/L", "ukat/L", 2.5),
]


@pytest.mark.parametrize(("cid", "loinc", "uln", "unit", "ucum", "k"), ULN_CASES)
def test_uln_multiple_uses_the_results_own_reference_range(cid: str, loinc: str, uln: float, unit: str,
                                                           ucum: str | None, k: float) -> None:
    for value, expected in ((k * uln, "met"), (k * uln * 0.98, "met"), (k * uln * 1.02, "not-met")):
        result = evaluate(asps(), lab(loinc, value, unit, ucum=ucum, high=uln)).criterion(cid)
        assert result.status == expected, (value, result)
        assert "assumed" not in (result.observed or "")


def test_uln_in_another_unit_than_the_value_is_converted() -> None:
    # value 2.0 mg/dL against a range high of 20.5 umol/L (= 1.20 mg/dL): 1.67 x ULN > 1.5
    obs = lab("1975-2", 2.0, "mg/dL", ucum="mg/dL")
    obs["referenceRange"] = [{"high": {"value": 20.5, "unit": "umol/L", "code": "umol/L"}}]
    result = evaluate(asps(), obs).criterion("total-bilirubin")
    assert result.status == "not-met"
    assert "1.67 x ULN" in (result.observed or "")


def test_without_reference_range_the_trial_default_uln_is_used_and_marked_assumed() -> None:
    # trial default bilirubin ULN 1.2 mg/dL: 1.8 is exactly 1.5 x; 1.9 exceeds
    met = evaluate(asps(), lab("1975-2", 1.8, "mg/dL", ucum="mg/dL")).criterion("total-bilirubin")
    assert met.status == "met"
    assert "assumed ULN" in (met.observed or "") and "assumed ULN" in (met.note or "")
    assert evaluate(asps(), lab("1975-2", 1.9, "mg/dL")).criterion("total-bilirubin").status == "not-met"


def test_gilbert_syndrome_raises_the_bilirubin_limit_to_3x_uln() -> None:
    gilbert = fhir.condition("g1", SUBJECT, ICD10, "E80.4", "Gilbert syndrome")
    value = lab("1975-2", 2.5 * 1.2, "mg/dL", high=1.2)
    assert evaluate(asps(), value).criterion("total-bilirubin").status == "not-met"
    result = evaluate(asps(), gilbert, value).criterion("total-bilirubin")
    assert result.status == "met"
    assert "Condition/g1" in result.evidence
    assert evaluate(asps(), gilbert, lab("1975-2", 3.1 * 1.2, "mg/dL", high=1.2)).criterion(
        "total-bilirubin").status == "not-met"


@pytest.mark.parametrize("liver", [(ICD10, "C78.7"), (SNOMED, "94381002")])
def test_liver_metastases_raise_the_transaminase_limit_to_5x_uln(liver: tuple[str, str]) -> None:
    mets = fhir.condition("m1", SUBJECT, *liver, "Liver metastases")
    ast = lab("1920-8", 4 * 40, "U/L", high=40)
    alt = lab("1742-6", 4 * 40, "U/L", high=40)
    without = evaluate(asps(), ast, alt)
    assert without.criterion("ast").status == "not-met" and without.criterion("alt").status == "not-met"
    with_mets = evaluate(asps(), mets, ast, alt)
    assert with_mets.criterion("ast").status == "met" and with_mets.criterion("alt").status == "met"
    assert evaluate(asps(), mets, lab("1920-8", 5.5 * 40, "U/L", high=40)).criterion("ast").status == "not-met"


def test_a_refuted_or_erroneous_gilbert_diagnosis_does_not_raise_the_limit() -> None:
    value = lab("1975-2", 2.5 * 1.2, "mg/dL", high=1.2)
    refuted = fhir.condition("g1", SUBJECT, ICD10, "E80.4", verification="refuted")
    eie = fhir.condition("g2", SUBJECT, ICD10, "E80.4", verification="entered-in-error")
    assert evaluate(asps(), refuted, eie, value).criterion("total-bilirubin").status == "not-met"


# ------------------------------------------------------------------ comparators

def test_less_than_comparator_below_the_limit_meets_uln_criterion() -> None:
    result = evaluate(asps(), lab("1975-2", 0.2, "mg/dL", comparator="<", high=1.2)).criterion("total-bilirubin")
    assert result.status == "met"
    assert "< 0.2 mg/dL" in (result.observed or "")


def test_comparator_interval_spanning_the_threshold_is_unknown() -> None:
    # "> 50 K/uL" could be 60,000 or 600,000
    assert evaluate(asps(), lab("777-3", 50, "K/uL", comparator=">")).criterion("platelets").status == "unknown"
    # "> 150 K/uL" is wholly above 100,000
    assert evaluate(asps(), lab("777-3", 150, "K/uL", comparator=">")).criterion("platelets").status == "met"
    # "< 50 K/uL" is wholly below
    assert evaluate(asps(), lab("777-3", 50, "K/uL", comparator="<")).criterion("platelets").status == "not-met"


# ------------------------------------------------------------------ which value counts

def test_the_most_recent_value_in_the_window_wins() -> None:
    older_low = lab("777-3", 80, "K/uL", ago=20)
    newer_ok = lab("777-3", 180, "K/uL", ago=3)
    result = evaluate(asps(), older_low, newer_ok).criterion("platelets")
    assert result.status == "met"
    assert result.evidence == [f"Observation/{newer_ok['id']}"]


def test_entered_in_error_value_is_ignored_and_the_previous_valid_one_used() -> None:
    wrong = lab("777-3", 20, "K/uL", ago=1, status="entered-in-error")
    valid = lab("777-3", 150, "K/uL", ago=5)
    result = evaluate(asps(), wrong, valid).criterion("platelets")
    assert result.status == "met"
    assert f"Observation/{valid['id']}" in result.evidence


def test_cancelled_and_data_absent_values_are_ignored() -> None:
    cancelled = lab("777-3", 20, "K/uL", ago=1, status="cancelled")
    absent = lab("777-3", None, ago=2, absent=True)
    result = evaluate(asps(), cancelled, absent).criterion("platelets")
    assert result.status == "unknown"
    assert result.note and "cancelled" in result.note and "data absent" in result.note


def test_value_older_than_the_window_is_stale_and_unknown() -> None:
    result = evaluate(asps(), lab("777-3", 30, "K/uL", ago=29)).criterion("platelets")
    assert result.status == "unknown"
    assert result.note and "stale" in result.note and "2026-10-23" in result.note


def test_value_exactly_at_the_window_edge_counts() -> None:
    assert evaluate(asps(), lab("777-3", 30, "K/uL", ago=28)).criterion("platelets").status == "not-met"


def test_value_dated_after_the_evaluation_date_is_not_used() -> None:
    result = evaluate(asps(), lab("777-3", 30, "K/uL", ago=-3)).criterion("platelets")
    assert result.status == "unknown"


def test_preliminary_result_counts_but_says_so() -> None:
    result = evaluate(asps(), lab("777-3", 30, "K/uL", status="preliminary")).criterion("platelets")
    assert result.status == "not-met"
    assert result.note and "preliminary" in result.note


def test_codes_are_matched_on_system_not_display() -> None:
    obs = lab("777-3", 30, "K/uL")
    obs["code"]["coding"][0]["system"] = "http://example.org/local-codes"
    obs["code"]["coding"][0]["display"] = "Platelets"
    assert evaluate(asps(), obs).criterion("platelets").status == "unknown"


def test_invalid_fhir_observation_is_skipped_with_a_reason() -> None:
    broken = lab("777-3", 30, "K/uL", ago=1)
    broken["effectiveDateTime"] = "2026-11-20T99:99"
    valid = lab("777-3", 150, "K/uL", ago=5)
    result = evaluate(asps(), broken, valid).criterion("platelets")
    assert result.status == "met"
    assert f"Observation/{valid['id']}" in result.evidence


def test_an_unreadable_reference_range_matters_only_to_criteria_that_use_the_uln() -> None:
    # a platelet count is read against a fixed threshold: its reference range is not needed
    plt = lab("777-3", 150, "K/uL", ucum="10*3/uL", high=400, high_unit="furlongs")
    assert evaluate(asps(), plt).criterion("platelets").status == "met"
    # AST is judged against the lab's own ULN: it exists but cannot be read, so no default stands in
    ast = evaluate(asps(), lab("1920-8", 30, "U/L", ucum="U/L", high=40, high_unit="furlongs")).criterion("ast")
    assert ast.status == "unknown" and "cannot use the reference range" in (ast.note or "")


def test_an_unreadable_creatinine_reference_range_leaves_cockcroft_gault_to_decide() -> None:
    scr = lab("2160-0", 1.0, "mg/dL", ucum="mg/dL", high=1.2, high_unit="furlongs")
    body = [lab("29463-7", 70, "kg", ucum="kg"), lab("8302-2", 170, "cm", ucum="cm")]
    result = evaluate(asps(), scr, *body).criterion("renal-function")
    assert result.status == "met" and "Cockcroft-Gault branch" in (result.note or "")
    alone = evaluate(asps(), scr).criterion("renal-function")
    assert alone.status == "unknown" and "cannot use the reference range" in (alone.note or "")


def test_a_reference_range_that_is_not_valid_fhir_is_refused_only_where_it_is_read() -> None:
    def with_bad_range(resource: dict) -> dict:  # type: ignore[type-arg]
        resource["referenceRange"] = [{"low": {"value": "ten"}, "high": {"value": 40, "unit": "U/L"}}]
        return resource

    plt = with_bad_range(lab("777-3", 150, "K/uL", ucum="10*3/uL"))
    assert evaluate(asps(), plt).criterion("platelets").status == "met"
    ast = evaluate(asps(), with_bad_range(lab("1920-8", 30, "U/L", ucum="U/L"))).criterion("ast")
    assert ast.status == "unknown" and "reference range is not valid FHIR R4" in (ast.note or "")


def test_hemoglobin_sent_in_milliequivalents_is_unknown_not_converted() -> None:
    """mEq/L is not a unit of hemoglobin (no charge to count): 9 mEq/L is a unit error, so the criterion
    is unknown — read as 9 mmol/L it would be 14.5 g/dL and silently met."""
    from tests.helpers import asps, evaluate, lab
    report = evaluate(asps(), lab("718-7", 9, "mEq/L", ucum="meq/L"))
    result = next(c for c in report.criteria if c.id == "hemoglobin")
    assert result.status == "unknown", (result.status, result.note)


def test_a_quantity_whose_ucum_code_and_unit_disagree_is_unknown() -> None:
    # 29 with code umol/L and unit mg/dL: 1.7 mg/dL (met) or 29 mg/dL (not met) — which one cannot be told
    obs = lab("1975-2", 29, "mg/dL", ucum="mg/dL")
    obs["valueQuantity"]["code"] = "umol/L"
    result = evaluate(asps(), obs).criterion("total-bilirubin")
    assert result.status == "unknown", result
    assert "the UCUM code 'umol/L' and the unit 'mg/dL' disagree" in (result.note or "")
    # the same unit spelt two ways (a UCUM code and a lab's text) agrees
    spelt = lab("777-3", 150, "K/uL", ucum="10*3/uL")
    assert evaluate(asps(), spelt).criterion("platelets").status == "met"
