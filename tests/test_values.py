"""One Observation's value, as a clinician would read it: units per analyte, physiological ranges, log10
viral loads, numbers written as text (valueString) and numbers no double can hold.

Each test evaluates a one-patient Bundle and checks the criterion a coordinator would look at.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter import tables
from adapter.engine import evaluate_bundle
from adapter.synth import fhir
from tests.helpers import AS_OF, ICD10, PID, asps, evaluate, lab


def text_lab(loinc: str, text: str, **kw: Any) -> dict[str, Any]:
    """A lab whose result arrives as valueString, as some feeds send it."""
    obs = lab(loinc, None, **kw)
    obs["valueString"] = text
    return obs


def hiv() -> dict[str, Any]:
    return fhir.condition("c-hiv", "Patient/p1", ICD10, "B20", "HIV disease")


# ------------------------------------------------------------------ units per analyte

@pytest.mark.parametrize(("unit", "ucum"), [("IU/L", None), ("IU/L", "[IU]/L"), ("mIU/mL", None)])
def test_a_positive_hcg_in_international_units_per_litre_means_pregnant(unit: str, ucum: str | None) -> None:
    # 1 IU/L = 1 mIU/mL (WHO international unit): 50 IU/L is >= 25 mIU/mL, a positive test
    report = evaluate(asps(), lab("19080-1", 50, unit, ucum=ucum))
    result = report.criterion("pregnancy-breastfeeding")
    assert result.status == "not-met", result
    assert report.overall == "not-eligible"


def test_a_negative_hcg_in_iu_per_litre_is_negative() -> None:
    assert evaluate(asps(), lab("19080-1", 2, "IU/L")).criterion("pregnancy-breastfeeding").status == "met"


def test_an_hcg_in_a_count_unit_is_never_dropped() -> None:
    # K/uL is a cell count: it cannot be international units, so the test cannot be read — never "not pregnant"
    result = evaluate(asps(), lab("19080-1", 50, "K/uL")).criterion("pregnancy-breastfeeding")
    assert result.status == "unknown"
    assert result.note and "K/uL" in result.note


@pytest.mark.parametrize(("cid", "loinc"), [("ast", "1920-8"), ("alt", "1742-6")])
def test_an_enzyme_in_iu_per_litre_is_in_enzyme_units(cid: str, loinc: str) -> None:
    # IU/L is U/L for enzymes: 100 IU/L with a ULN of 40 is exactly 2.5 x ULN (met); 101 is above
    assert evaluate(asps(), lab(loinc, 100, "IU/L", high=40)).criterion(cid).status == "met"
    assert evaluate(asps(), lab(loinc, 101, "IU/L", high=40)).criterion(cid).status == "not-met"


@pytest.mark.parametrize(("value", "unit", "expected"), [
    (85, "G/L", "not-met"), (100, "G/L", "met"), (99, "10^9/L", "not-met"), (100, "x10^9/l", "met"),
    (150, "/nL", "met"), (0.1, "T/L", "met"), (0.09, "10^12/L", "not-met"), (100, "Giga/L", "met"),
])
def test_platelets_in_si_spellings_are_counts(value: float, unit: str, expected: str) -> None:
    # G/L = /nL = 10^9/L = 1,000 /uL; T/L = 10^12/L: 85 G/L is 85,000 /uL, below 100,000
    result = evaluate(asps(), lab("777-3", value, unit)).criterion("platelets")
    assert result.status == expected, result
    if unit == "G/L" and value == 85:
        assert "85,000 /uL" in (result.observed or "")


def test_an_albumin_in_giga_per_litre_is_never_read_as_grams() -> None:
    # G/L is a count spelling; an albumin in it is an error to check, not 35 g/L
    result = evaluate(asps(), lab("1751-7", 35, "G/L")).criterion("albumin")
    assert result.status == "unknown"
    assert result.note and "G/L" in result.note
    assert evaluate(asps(), lab("1751-7", 35, "g/L")).criterion("albumin").status == "met"  # 3.5 g/dL
    assert evaluate(asps(), lab("1751-7", 35, "g/l")).criterion("albumin").status == "met"


def test_a_count_in_grams_is_not_a_count() -> None:
    result = evaluate(asps(), lab("777-3", 150, "g/L")).criterion("platelets")
    assert result.status == "unknown" and result.note and "g/L" in result.note


# ------------------------------------------------------------------ physiological ranges

@pytest.mark.parametrize(("value", "unit"), [(3_000_000, "/uL"), (3000, "x10E3/uL"), (3000, "G/L")])
def test_an_impossible_anc_is_unknown_never_met(value: float, unit: str) -> None:
    report = evaluate(asps(), lab("751-8", value, unit))
    result = report.criterion("anc")
    assert result.status == "unknown"
    assert result.note and "implausible for ANC" in result.note and "check units" in result.note
    assert report.overall == "needs-review"


def test_real_extremes_stay_plausible_and_are_decided() -> None:
    # a leukaemic neutrophil count and a bilirubin of 40 mg/dL are real values: decided, not doubted
    assert evaluate(asps(), lab("751-8", 500, "10*3/uL", ucum="10*3/uL")).criterion("anc").status == "met"
    bili = evaluate(asps(), lab("1975-2", 40, "mg/dL", ucum="mg/dL", high=1.2)).criterion("total-bilirubin")
    assert bili.status == "not-met"


@pytest.mark.parametrize(("cid", "loinc", "value", "unit", "ucum", "high"), [
    ("platelets", "777-3", 250_000, "K/uL", None, None),          # a /uL count sent as thousands
    ("hemoglobin", "718-7", 0, "g/dL", "g/dL", None),             # a placeholder 0
    ("total-bilirubin", "1975-2", 171, "mg/dL", "mg/dL", 1.2),    # umol/L sent as mg/dL
    ("ast", "1920-8", 250_000, "U/L", "U/L", 40),
    ("renal-function", "2160-0", 0, "mg/dL", "mg/dL", 1.2),       # 0 would meet both branches
    ("renal-function", "2160-0", 88.4, "mg/dL", "mg/dL", 1.2),    # umol/L sent as mg/dL
    ("albumin", "1751-7", 35, "g/dL", "g/dL", None),              # g/L sent as g/dL
    ("sodium", "2951-2", 1400, "mmol/L", "mmol/L", None),         # a lost decimal point
])
def test_a_value_outside_its_analytes_physiological_range_is_unknown(cid: str, loinc: str, value: float, unit: str,
                                                                     ucum: str | None, high: float | None) -> None:
    result = evaluate(asps(), lab(loinc, value, unit, ucum=ucum, high=high)).criterion(cid)
    assert result.status == "unknown", result
    assert "implausible for" in (result.note or "") and "check units" in (result.note or "")


def test_a_hemoglobin_in_grams_per_litre_sent_as_g_per_dl_is_caught() -> None:
    result = evaluate(asps(), lab("718-7", 95, "g/dL", ucum="g/dL")).criterion("hemoglobin")
    assert result.status == "unknown" and "implausible for hemoglobin" in (result.note or "")


@pytest.mark.parametrize(("loinc", "kw", "expected"), [
    ("89247-1", {"integer": 7}, "unknown"),                 # ECOG is 0-5
    ("89247-1", {"integer": 5}, "not-met"),                 # the end of the scale is a real score
    ("89247-1", {"value": 5, "comparator": ">"}, "unknown"),  # "> 5": no ECOG score is above 5
    ("89243-0", {"integer": 150}, "unknown"),               # Karnofsky is 0-100
    ("89243-0", {"integer": 100}, "met"),
    ("89247-1", {"value": 7, "comparator": "<="}, "unknown"),  # "<= 7" may be 0-5: kept, but it spans 2
])
def test_performance_scores_outside_their_scale_are_unknown(loinc: str, kw: dict[str, Any], expected: str) -> None:
    value = kw.pop("value", None)
    result = evaluate(asps(), lab(loinc, value, **kw)).criterion("performance-status")
    assert result.status == expected, result


def test_a_height_in_metres_sent_as_centimetres_is_named_when_crcl_cannot_be_computed() -> None:
    # creatinine 2.0 with ULN 1.1 fails its branch; CrCl needs the height, and 1.7 cm is not a height
    result = evaluate(asps(), lab("2160-0", 2.0, "mg/dL", ucum="mg/dL", high=1.1), lab("29463-7", 70, "kg", ucum="kg"),
                      lab("8302-2", 1.7, "cm", ucum="cm")).criterion("renal-function")
    assert result.status == "unknown" and result.note and "CrCl not computable" in result.note
    assert "body height 1.7 cm (2026-11-14) could not be used" in result.note
    assert "implausible" in result.note


def test_a_weight_in_an_unknown_unit_is_named_when_crcl_cannot_be_computed() -> None:
    result = evaluate(asps(), lab("2160-0", 2.0, "mg/dL", ucum="mg/dL", high=1.1),
                      lab("29463-7", 11, "stone"), lab("8302-2", 170, "cm", ucum="cm")).criterion("renal-function")
    assert result.status == "unknown"
    assert result.note and "body weight 11 stone (2026-11-14) could not be used" in result.note


# ------------------------------------------------------------------ log10 viral loads

def test_a_log10_viral_load_is_shown_with_its_copies() -> None:
    result = evaluate(asps(), hiv(), lab("29541-0", 1.3, "log10 copies/mL")).criterion("hiv")
    assert result.status == "met"  # 10^1.3 = 20 copies/mL: undetectable
    assert result.observed and "1.3 log10 copies/mL (= 20 copies/mL)" in result.observed
    high = evaluate(asps(), hiv(), lab("29541-0", 4.0, "{log_copies}/mL", ucum="{log_copies}/mL")).criterion("hiv")
    assert high.status == "not-met" and "(= 10,000 copies/mL)" in (high.observed or "")


def test_a_log10_viral_load_beyond_any_body_is_implausible() -> None:
    # 10^12 copies/mL is not a human viral load: an entry error, never "detectable"
    result = evaluate(asps(), hiv(), lab("29541-0", 12, "log10 copies/mL")).criterion("hiv")
    assert result.status == "unknown" and "implausible" in (result.note or "")


# ------------------------------------------------------------------ valueString

def test_a_hemoglobin_written_as_text_is_read_and_says_so() -> None:
    result = evaluate(asps(), text_lab("718-7", "9.5 g/dL")).criterion("hemoglobin")
    assert result.status == "met"
    assert result.observed and "9.5 g/dL" in result.observed and "read from text" in result.observed


@pytest.mark.parametrize(("cid", "loinc", "text", "expected"), [
    ("sodium", "2951-2", "128 mmol/L", "not-met"),
    ("sodium", "2951-2", "130 mEq/L", "met"),
    ("total-bilirubin", "1975-2", "<0.2 mg/dL", "met"),
    ("platelets", "777-3", "7.2 x10E3/uL", "not-met"),     # 7,200 /uL
    ("platelets", "777-3", "150 x10E3/uL", "met"),
    ("anc", "751-8", "1,250 /uL", "met"),                  # US digit grouping: 1250
    ("anc", "751-8", "950 /µL", "not-met"),
    ("hemoglobin", "718-7", "≥ 10 g/dL", "met"),
    ("hemoglobin", "718-7", "< 9 g/dL", "not-met"),
    ("hemoglobin", "718-7", "9.5", "unknown"),             # a number without its unit cannot be converted
    ("hemoglobin", "718-7", "9,5 g/dL", "unknown"),        # a decimal comma is ambiguous: never guessed
    ("hemoglobin", "718-7", "95 g/dL", "unknown"),         # implausible, as for a valueQuantity
    ("platelets", "777-3", "100-150 K/uL", "unknown"),     # a range is not a unit
])
def test_numbers_with_units_in_text_follow_the_quantity_rules(cid: str, loinc: str, text: str, expected: str) -> None:
    result = evaluate(asps(), text_lab(loinc, text)).criterion(cid)
    assert result.status == expected, result


@pytest.mark.parametrize(("text", "expected"), [("1", "met"), ("3", "not-met"), ("2 to 3", "unknown"),
                                                ("7", "unknown")])
def test_an_ecog_written_as_text(text: str, expected: str) -> None:
    assert evaluate(asps(), text_lab("89247-1", text)).criterion("performance-status").status == expected


@pytest.mark.parametrize("text", ["see note", "negative", "Detected", "ECOG 1", "x10E3/uL"])
def test_words_are_never_interpreted_as_a_value(text: str) -> None:
    result = evaluate(asps(), text_lab("777-3", text)).criterion("platelets")
    assert result.status == "unknown"
    assert result.missing == "absent" and "has no value" in (result.note or "")


def test_a_text_result_that_is_not_a_number_gives_way_to_the_previous_value_with_a_note() -> None:
    older = lab("777-3", 250, "K/uL", ago=10)
    result = evaluate(asps(), older, text_lab("777-3", "see note", ago=2)).criterion("platelets")
    assert result.status == "met"
    assert result.note and "newer result" in result.note


def test_an_hcg_written_as_words_is_not_taken_as_a_negative_test() -> None:
    # "negative" is a word, not a value: it is not shown or cited as the negative test that clears the patient
    obs = text_lab("19080-1", "negative")
    result = evaluate(asps(), obs).criterion("pregnancy-breastfeeding")
    assert result.observed is None and f"Observation/{obs['id']}" not in result.evidence


# ------------------------------------------------------------------ numbers no double can hold

def test_an_integer_of_hundreds_of_digits_is_absent_not_a_crash() -> None:
    bundle = fhir.bundle([fhir.patient(PID, "1990-05-02", "female"), asps(),
                          lab("777-3", 123456789, "K/uL"), lab("89247-1", None, integer=987654321),
                          lab("1975-2", 1.0, "mg/dL", ucum="mg/dL", high=1.2)])
    raw = (orjson.dumps(bundle).replace(b"123456789.0", b"9" * 400).replace(b"987654321", b"7" * 320)
           .replace(b'"value":1.2', b'"value":' + b"1" * 330))
    assert raw.count(b"9" * 400) == 1 and raw.count(b"7" * 320) == 1 and raw.count(b"1" * 330) == 1
    report = evaluate_bundle(raw, AS_OF)
    assert report.criterion("platelets").status == "unknown"
    assert report.criterion("performance-status").status == "unknown"
    # the lab's range is there but unreadable (as 1e400 or "abc" would be): its ULN may not be the trial's
    # default, which is for results without a range, so unknown with the reason
    bilirubin = report.criterion("total-bilirubin")
    assert bilirubin.status == "unknown" and "reference range is not valid FHIR" in str(bilirubin.note)


def test_a_text_number_of_hundreds_of_digits_is_not_a_number() -> None:
    result = evaluate(asps(), text_lab("777-3", "9" * 400 + " /uL")).criterion("platelets")
    assert result.status == "unknown"


# ------------------------------------------------------------------ the mappings are checked when loaded

def test_an_input_naming_an_alias_set_that_does_not_exist_stops_the_tool(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "mappings"
    shutil.copytree(tables.mappings_dir(), bad)
    text = (bad / "observations.yaml").read_text(encoding="utf-8")
    (bad / "observations.yaml").write_text(text.replace("unit_aliases: [international-unit]",
                                                        "unit_aliases: [no-such-set]"), encoding="utf-8")
    monkeypatch.setenv("AXIOM_MAPPINGS", str(bad))
    tables.observations.cache_clear()
    tables.units.cache_clear()
    try:
        with pytest.raises(ValueError, match="no-such-set"):
            tables.observations()
    finally:
        monkeypatch.delenv("AXIOM_MAPPINGS")
        tables.observations.cache_clear()
        tables.units.cache_clear()
