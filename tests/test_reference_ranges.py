"""Which reference range is this patient's ULN: the normal one, for this patient's sex and age; when
which applies cannot be told, the verdict stands only if every possible ULN gives it."""

from __future__ import annotations

from typing import Any

from tests.helpers import asps, evaluate, lab

MEANING = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"
SNOMED = "http://snomed.info/sct"
MALE = {"coding": [{"system": SNOMED, "code": "248153007", "display": "Male"}], "text": "Male"}
FEMALE = {"coding": [{"system": SNOMED, "code": "248152002", "display": "Female"}], "text": "Female"}


def mg_dl(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}


def bilirubin(value: float, *ranges: dict[str, Any]) -> dict[str, Any]:
    obs = lab("1975-2", value, "mg/dL", ucum="mg/dL")
    obs["referenceRange"] = list(ranges)
    return obs


def years(low: float | None, high: float | None) -> dict[str, Any]:
    age: dict[str, Any] = {}
    for bound, value in (("low", low), ("high", high)):
        if value is not None:
            age[bound] = {"value": value, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"}
    return age


def test_a_therapeutic_range_is_not_a_uln_the_trial_default_stands_in() -> None:
    # bilirubin 2.0 mg/dL: 1.67 x the default ULN 1.2 (> 1.5 x, not met); against the 'therapeutic'
    # high of 4.0 it would have passed at 0.5 x
    therapeutic = {"high": mg_dl(4.0), "type": {"coding": [{"system": MEANING, "code": "therapeutic"}]}}
    result = evaluate(asps(), bilirubin(2.0, therapeutic)).criterion("total-bilirubin")
    assert result.status == "not-met", result
    assert "assumed ULN 1.2 mg/dL" in (result.observed or "")
    assert "not a normal range" in (result.note or "")


def test_a_range_typed_abnormal_is_not_read_as_the_normal_range() -> None:
    # the word "abnormal" contains "normal": such a range is not known to be the normal one, so the
    # default ULN stays possible and 2.0 mg/dL (1.67 x 1.2, but 0.5 x 4.0) cannot be decided
    abnormal = {"high": mg_dl(4.0), "type": {"text": "abnormal"}}
    result = evaluate(asps(), bilirubin(2.0, abnormal)).criterion("total-bilirubin")
    assert result.status == "unknown", result
    assert "no reference range on the result surely applies" in (result.note or "")


def test_the_range_for_the_patients_own_sex_is_her_uln() -> None:
    # 1.6 mg/dL: 1.6 x the female ULN 1.0 (not met), 1.23 x the male ULN 1.3 (met) — the male range
    # listed first must not decide for a woman
    ranges = ({"high": mg_dl(1.3), "appliesTo": [MALE]}, {"high": mg_dl(1.0), "appliesTo": [FEMALE]})
    woman = evaluate(asps(), bilirubin(1.6, *ranges), gender="female").criterion("total-bilirubin")
    assert woman.status == "not-met", woman
    assert "ULN 1 mg/dL" in (woman.observed or "") and "1.6 x ULN" in (woman.observed or "")
    man = evaluate(asps(), bilirubin(1.6, *ranges), gender="male").criterion("total-bilirubin")
    assert man.status == "met", man


def test_sex_specific_ranges_without_a_recorded_sex_decide_only_when_all_agree() -> None:
    ranges = ({"high": mg_dl(1.3), "appliesTo": [MALE]}, {"high": mg_dl(1.0), "appliesTo": [FEMALE]})
    split = evaluate(asps(), bilirubin(1.6, *ranges), gender=None).criterion("total-bilirubin")
    assert split.status == "unknown", split
    assert "1.3 mg/dL for Male" in (split.note or "") and "1 mg/dL for Female" in (split.note or "")
    # 1.4 mg/dL is within 1.5 x every possible ULN (1.0, 1.2 default, 1.3): met whichever applies
    agreed = evaluate(asps(), bilirubin(1.4, *ranges), gender=None).criterion("total-bilirubin")
    assert agreed.status == "met", agreed


def test_a_range_for_this_patient_overrides_the_unrestricted_one() -> None:
    ranges = ({"high": mg_dl(1.3)}, {"high": mg_dl(1.0), "appliesTo": [FEMALE]})
    result = evaluate(asps(), bilirubin(1.6, *ranges), gender="female").criterion("total-bilirubin")
    assert result.status == "not-met", result
    # and the unrestricted range is the ULN of a patient the restricted one is not for
    man = evaluate(asps(), bilirubin(1.6, *ranges), gender="male").criterion("total-bilirubin")
    assert man.status == "met" and "ULN 1.3 mg/dL" in (man.observed or ""), man


def test_the_adult_age_band_is_an_adults_uln() -> None:
    # a paediatric band listed first (0-17 years, ULN 0.7) and the adult band (18+, ULN 1.2): 1.6 mg/dL
    # in a 36-year-old is 1.33 x the adult ULN (met), not 2.3 x the child's
    ranges = ({"high": mg_dl(0.7), "age": years(0, 17)}, {"high": mg_dl(1.2), "age": years(18, None)})
    adult = evaluate(asps(), bilirubin(1.6, *ranges), birth_date="1990-05-02").criterion("total-bilirubin")
    assert adult.status == "met", adult
    assert "ULN 1.2 mg/dL" in (adult.observed or "")


def test_an_age_band_holds_until_the_next_birthday_and_a_partial_birth_date_may_straddle_it() -> None:
    ranges = ({"high": mg_dl(0.7), "age": years(0, 17)}, {"high": mg_dl(1.2), "age": years(18, None)})
    # the result is dated 2026-11-14: born 2008-11-15 is 17 that day (the child's band), 2008-11-14 is 18
    child = evaluate(asps(), bilirubin(1.0, *ranges), birth_date="2008-11-15").criterion("total-bilirubin")
    assert child.status == "met" and "ULN 0.7 mg/dL" in (child.observed or ""), child  # 1.43 x 0.7
    grown = evaluate(asps(), bilirubin(1.6, *ranges), birth_date="2008-11-14").criterion("total-bilirubin")
    assert grown.status == "met" and "ULN 1.2 mg/dL" in (grown.observed or ""), grown
    # born some day in 2008: 17 or 18 on the result's day — 1.6 mg/dL is met under one band, not the other
    either = evaluate(asps(), bilirubin(1.6, *ranges), birth_date="2008").criterion("total-bilirubin")
    assert either.status == "unknown", either
    assert "no reference range on the result surely applies" in (either.note or "")
    assert "0.7 mg/dL for age 0 years to 17 years; 1.2 mg/dL for age 18 years and over" in (either.note or "")


def test_ranges_only_for_other_patients_leave_the_trial_default() -> None:
    child_only = {"high": mg_dl(0.7), "age": years(0, 17)}
    result = evaluate(asps(), bilirubin(1.6, child_only), birth_date="1990-05-02").criterion("total-bilirubin")
    assert result.status == "met", result  # 1.33 x the default 1.2
    assert "assumed ULN 1.2 mg/dL" in (result.observed or "")
    assert "for other patients (age 0 years to 17 years)" in (result.note or "")


def test_a_typed_normal_range_and_a_therapeutic_one_the_normal_one_is_the_uln() -> None:
    normal = {"high": mg_dl(1.0), "type": {"coding": [{"system": MEANING, "code": "normal"}]}}
    therapeutic = {"high": mg_dl(4.0), "type": {"coding": [{"system": MEANING, "code": "therapeutic"}]}}
    result = evaluate(asps(), bilirubin(1.6, therapeutic, normal)).criterion("total-bilirubin")
    assert result.status == "not-met" and "ULN 1 mg/dL" in (result.observed or ""), result


def test_creatinine_for_the_wrong_sex_does_not_decide_the_renal_criterion() -> None:
    # creatinine 1.7 mg/dL: 1.31 x the male ULN 1.3 (met), 1.89 x the female ULN 0.9 (not met); no
    # weight or height, so Cockcroft-Gault cannot rescue it
    obs = lab("2160-0", 1.7, "mg/dL", ucum="mg/dL")
    obs["referenceRange"] = [{"high": mg_dl(1.3), "appliesTo": [MALE]}, {"high": mg_dl(0.9), "appliesTo": [FEMALE]}]
    woman = evaluate(asps(), obs, gender="female").criterion("renal-function")
    assert woman.status == "unknown", woman  # creatinine branch fails; CrCl not computable
    assert "exceeds 1.5 x ULN" in (woman.note or "")
    unsexed = evaluate(asps(), obs, gender=None).criterion("renal-function")
    assert unsexed.status == "unknown" and "depends on which reference range applies" in (unsexed.note or "")


def test_a_range_that_cannot_be_read_never_lets_the_default_uln_decide() -> None:
    # her ULN is 1.0 (1.7 = 1.7 x, not met); with the female range unreadable, the default 1.2 (1.42 x)
    # would have said met: each of these is unknown, saying why
    female_high_as_text = {"high": {"value": "1.0", "unit": "mg/dL"}, "appliesTo": [FEMALE]}
    broken: dict[str, Any] = {
        "a number sent as a string": [{"high": mg_dl(1.3), "appliesTo": [MALE]}, female_high_as_text],
        "referenceRange an object": {"high": mg_dl(1.0)},
        "a list of strings": ["0.1-1.0 mg/dL"],
        "the range only as text": [{"text": "0.1-1.0 mg/dL"}],
        "a comparator on high": [{"high": {**mg_dl(1.0), "comparator": "<"}}],
        "an empty range": [{}],
        "low above high": [{"low": mg_dl(2.0), "high": mg_dl(1.0)}],
    }
    for case, ranges in broken.items():
        obs = lab("1975-2", 1.7, "mg/dL", ucum="mg/dL")
        obs["referenceRange"] = ranges
        result = evaluate(asps(), obs, gender="female").criterion("total-bilirubin")
        assert result.status == "unknown", (case, result)
        assert "cannot use the reference range" in (result.note or ""), (case, result)
        assert "assumed ULN" not in (result.observed or ""), case


def test_an_implausible_uln_is_a_unit_slip_not_a_limit() -> None:
    # 17 "mg/dL" is the umol/L ULN labelled mg/dL: bilirubin 5.0 would pass at 0.29 x; 0.01 would fail 80 x
    for value, high in ((5.0, 17.0), (0.8, 0.01)):
        result = evaluate(asps(), bilirubin(value, {"high": mg_dl(high)})).criterion("total-bilirubin")
        assert result.status == "unknown", (high, result)
        assert "not a plausible ULN for total bilirubin" in (result.note or "")
    # a range that only may be the normal one (typed 'Critical') and has no possible ULN is left out
    critical = {"high": mg_dl(15.0), "type": {"text": "Critical"}}
    result = evaluate(asps(), bilirubin(1.6, {"high": mg_dl(1.0)}, critical)).criterion("total-bilirubin")
    assert result.status == "not-met" and "1.6 x ULN" in (result.observed or ""), result


def test_a_fractional_age_bound_is_an_exact_age() -> None:
    # bands to 17.49 years (ULN 0.7) and from 17.5 (ULN 1.2): at 17 years 10 months the adult band applies
    ranges = ({"high": mg_dl(0.7), "age": years(0, 17.49)}, {"high": mg_dl(1.2), "age": years(17.5, None)})
    result = evaluate(asps(), bilirubin(1.6, *ranges), birth_date="2009-01-14").criterion("total-bilirubin")
    assert result.status == "met" and "ULN 1.2 mg/dL" in (result.observed or ""), result
    # an age unit spelled as text ('Years') is read like its UCUM code
    spelled = {"high": mg_dl(1.0), "age": {"low": {"value": 18, "unit": "Years"}}}
    adult = evaluate(asps(), bilirubin(1.6, spelled), birth_date="1990-05-02").criterion("total-bilirubin")
    assert adult.status == "not-met" and "ULN 1 mg/dL" in (adult.observed or ""), adult


def test_the_same_range_twice_is_one_uln_and_thousands_of_ranges_stay_readable() -> None:
    twice = evaluate(asps(), bilirubin(1.6, {"high": mg_dl(1.0)}, {"high": mg_dl(1.0)})).criterion("total-bilirubin")
    assert twice.status == "not-met" and twice.note == "above 1.5 x ULN", twice
    many = [{"high": mg_dl(1.0 + k / 1000), "appliesTo": [{"text": f"population {k}"}]} for k in range(2000)]
    result = evaluate(asps(), bilirubin(1.6, *many)).criterion("total-bilirubin")
    assert result.status == "unknown"
    assert len(result.note or "") < 600 and "more" in (result.note or ""), len(result.note or "")
    assert len(result.observed or "") < 300


def test_renal_notes_say_the_clearance_is_below_30_when_it_is() -> None:
    # creatinine 1.7 with sex-specific ranges and no recorded sex: its branch is undecided; CrCl is computed
    # (60 kg, 165 cm, 80 years) and below 30 everywhere: the note must not say it 'spans' 30
    obs = lab("2160-0", 1.7, "mg/dL", ucum="mg/dL")
    obs["referenceRange"] = [{"high": mg_dl(1.3), "appliesTo": [MALE]}, {"high": mg_dl(0.9), "appliesTo": [FEMALE]}]
    weight, height = lab("29463-7", 40, "kg", ucum="kg"), lab("8302-2", 165, "cm", ucum="cm")
    result = evaluate(asps(), obs, weight, height, gender=None, birth_date="1936-01-01").criterion("renal-function")
    assert result.status == "unknown", result
    assert "is below 30" in (result.note or "") and "spans 30" not in (result.note or ""), result.note


def test_a_high_without_a_value_states_no_upper_limit() -> None:
    # found by the CLI fuzzer (tests/test_security_input.py): a `high` holding only its unit
    no_value = {"high": {"unit": "mg/dL"}, "low": mg_dl(0.1)}
    result = evaluate(asps(), bilirubin(1.6, no_value)).criterion("total-bilirubin")
    assert result.status == "met" and "assumed ULN 1.2 mg/dL" in (result.observed or ""), result
    assert "states no upper limit" in (result.note or "")
