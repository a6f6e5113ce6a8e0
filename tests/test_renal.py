"""Renal function: creatinine <= 1.5 x ULN, OR Cockcroft-Gault CrCl >= 30 mL/min/1.73 m²."""

from __future__ import annotations

import math

import pytest

from adapter.criteria.renal import cockcroft_gault, mosteller
from tests.helpers import asps, evaluate, lab


def weight(kg: float, unit: str = "kg", ucum: str | None = "kg") -> dict:  # type: ignore[type-arg]
    return lab("29463-7", kg, unit, ucum=ucum, category="vital-signs")


def height(cm: float, unit: str = "cm", ucum: str | None = "cm") -> dict:  # type: ignore[type-arg]
    return lab("8302-2", cm, unit, ucum=ucum, category="vital-signs")


def test_cockcroft_gault_reference_values() -> None:
    # (140 − 60) × 72 / (72 × 1.0) = 80 mL/min; × 0.85 for a woman = 68
    assert cockcroft_gault(60, 72, 1.0, 1.0) == pytest.approx(80)
    assert cockcroft_gault(60, 72, 1.0, 0.85) == pytest.approx(68)
    # Mosteller: 180 cm, 80 kg → √(14400/3600) = 2.0 m²
    assert mosteller(180, 80) == pytest.approx(2.0)


def test_creatinine_at_1_5_x_uln_meets_by_the_creatinine_branch() -> None:
    result = evaluate(asps(), lab("2160-0", 1.5, "mg/dL", ucum="mg/dL", high=1.0)).criterion("renal-function")
    assert result.status == "met"
    assert result.note and "creatinine branch" in result.note


def test_high_creatinine_passes_when_cockcroft_gault_is_at_least_30() -> None:
    # male, 36 y (born 1990-05-02), 80 kg, 180 cm, SCr 2.0 (2 x ULN 1.0):
    # CrCl = 104 × 80 / 144 = 57.8 mL/min; BSA 2.0 → 57.8 × 1.73 / 2 = 50.0 per 1.73 m²
    report = evaluate(asps(), lab("2160-0", 2.0, "mg/dL", high=1.0), weight(80), height(180), gender="male")
    result = report.criterion("renal-function")
    assert result.status == "met"
    assert "Cockcroft-Gault branch" in (result.note or "")
    assert "CrCl 50.0 mL/min/1.73 m2" in (result.observed or "")


def test_high_creatinine_and_low_clearance_fail() -> None:
    # female 80 y (born 1946), 45 kg, 155 cm, SCr 3.0 (3 x ULN):
    # CrCl = 60 × 45 / 216 × 0.85 = 10.6 mL/min; BSA 1.39 → 13.2 per 1.73 m²
    report = evaluate(asps(), lab("2160-0", 3.0, "mg/dL", high=1.0), weight(45), height(155), birth_date="1946-01-01")
    result = report.criterion("renal-function")
    assert result.status == "not-met"
    assert report.overall == "not-eligible"


def test_clearance_exactly_30_meets() -> None:
    # choose the weight that makes CrCl/1.73 m² exactly 30 for a male, 40 y, 170 cm, SCr 3.0
    age, scr, cm = 40, 3.0, 170.0
    # per_173 = (140-age)·w/(72·scr) · 1.73 / √(cm·w/3600) = K·√w  →  w = (30/K)²
    k = (140 - age) / (72 * scr) * 1.73 / math.sqrt(cm / 3600)
    kg = (30 / k) ** 2
    report = evaluate(asps(), lab("2160-0", scr, "mg/dL", high=1.0), weight(kg), height(cm), gender="male",
                      birth_date="1986-11-21")
    assert report.criterion("renal-function").status == "met"
    below = evaluate(asps(), lab("2160-0", scr, "mg/dL", high=1.0), weight(kg * 0.98), height(cm), gender="male",
                     birth_date="1986-11-21")
    assert below.criterion("renal-function").status == "not-met"


def test_molar_creatinine_and_imperial_body_size_convert() -> None:
    # 176.8 umol/L = 2.0 mg/dL; 176.37 lb = 80 kg; 70.87 in = 180 cm → same as the US-unit case (50.0)
    report = evaluate(asps(), lab("14682-9", 176.8, "umol/L", ucum="umol/L", high=88.4),
                      weight(176.37, "lb", None), height(70.866, "in", None), gender="male")
    result = report.criterion("renal-function")
    assert result.status == "met"
    assert "CrCl 50.0" in (result.observed or "")


def test_high_creatinine_without_weight_is_unknown_not_failed() -> None:
    result = evaluate(asps(), lab("2160-0", 2.0, "mg/dL", high=1.0)).criterion("renal-function")
    assert result.status == "unknown"
    assert "body weight" in (result.note or "")


def test_unknown_sex_decides_only_when_both_formulas_agree() -> None:
    # male 50.0 vs female 42.5: both >= 30 → met even without a recorded sex
    report = evaluate(asps(), lab("2160-0", 2.0, "mg/dL", high=1.0), weight(80), height(180), gender="unknown")
    assert report.criterion("renal-function").status == "met"
    # male 33.3 vs female 28.3 → cannot decide
    report = evaluate(asps(), lab("2160-0", 3.0, "mg/dL", high=1.0), weight(80), height(180), gender=None)
    result = report.criterion("renal-function")
    assert result.status == "unknown"
    assert "CrCl 28.3-33.3" in (result.observed or "")


def test_no_creatinine_is_unknown() -> None:
    assert evaluate(asps(), weight(80), height(180)).criterion("renal-function").status == "unknown"


def test_a_creatinine_below_the_assay_limit_leaves_the_clearance_without_an_upper_bound() -> None:
    # '< 0.3 mg/dL' is [0, 0.3): the clearance has no upper bound. This once crashed the service (500).
    report = evaluate(asps(), lab("2160-0", 0.3, "mg/dL", ucum="mg/dL", high=1.2, comparator="<"),
                      weight(70), height(170))
    result = report.criterion("renal-function")
    assert result.status == "met" and "creatinine branch" in (result.note or "")
    assert "CrCl >= " in (result.observed or "")


@pytest.mark.parametrize(("body", "why"), [
    ([weight(-70), height(170)], "no usable body weight"),
    ([weight(0), height(170)], "no usable body weight"),
    ([weight(70), height(0)], "no body height or BSA"),
])
def test_an_impossible_body_measurement_makes_the_clearance_not_computable(body: list[dict], why: str) -> None:  # type: ignore[type-arg]
    # SCr 2.0 is 2 x ULN: only Cockcroft-Gault could meet the criterion, and it cannot be computed
    report = evaluate(asps(), lab("2160-0", 2.0, "mg/dL", ucum="mg/dL", high=1.0), *body)
    result = report.criterion("renal-function")
    assert result.status == "unknown" and why in (result.note or "")


def test_a_negative_lab_value_is_not_a_result() -> None:
    result = evaluate(asps(), lab("2160-0", -1.0, "mg/dL", ucum="mg/dL", high=1.2)).criterion("renal-function")
    assert result.status == "unknown" and "a negative value is not a possible result" in (result.note or "")
