"""The synthetic-patient generator: reproducible, valid FHIR R4, and clinically what each scenario claims.

The scenarios are the shared test patients of the project, so each one is checked for the criterion
statuses that make it clinically meaningful, not only for its overall verdict.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from adapter.criteria.model import EligibilityReport
from adapter.engine import evaluate_bundle
from adapter.synth import generator
from adapter.synth.generator import SCENARIOS, Case, build, generate, scenario_cases, to_json, write_bundles
from adapter.synth.realistic import realistic_bundle
from adapter.trials import load_trial

AS_OF = date(2026, 11, 21)
FIXTURES = Path(__file__).parent / "fixtures"
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
LAB_CRITERIA = ("anc", "platelets", "hemoglobin", "total-bilirubin", "ast", "alt", "renal-function",
                "albumin", "sodium")
DESIGNS = {s.name: s.design for s in SCENARIOS}


def evaluate(bundle: dict[str, Any], as_of: date = AS_OF) -> EligibilityReport:
    """Evaluate from the bytes written to disk, as the CLI and the service read them."""
    return evaluate_bundle(to_json(bundle).encode("utf-8"), as_of)


@cache
def scenario(name: str) -> EligibilityReport:
    return evaluate(next(c for c in scenario_cases(AS_OF) if c.name == name).bundle)


def statuses(report: EligibilityReport) -> dict[str, str]:
    return {c.id: c.status for c in report.criteria}


def not_fine(report: EligibilityReport) -> dict[str, str]:
    """The criteria that keep a patient from likely-eligible."""
    return {c.id: c.status for c in report.criteria if c.status not in ("met", "not-applicable")}


def resources(bundle: dict[str, Any], rtype: str | None = None) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if rtype is None or e["resource"]["resourceType"] == rtype]


def variant(name: str, **changes: Any) -> EligibilityReport:
    """The scenario's patient with one clinical fact changed (the counterfactual that proves the rule)."""
    return evaluate(build(replace(DESIGNS[name], **changes), "variant", AS_OF))


# --------------------------------------------------------------------------- fixtures never drift


def test_committed_fixtures_are_byte_identical_to_a_fresh_generation(tmp_path: Path) -> None:
    written = write_bundles(tmp_path, 7, 6, AS_OF, scenarios=True)
    committed = sorted(p.name for p in FIXTURES.glob("*.json"))
    assert sorted(p.name for p in written) == committed
    for path in written:
        assert path.read_bytes() == (FIXTURES / path.name).read_bytes(), f"{path.name} drifted; regenerate"


def test_fixture_readme_lists_every_fixture_with_its_designed_verdict() -> None:
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(2).strip() for m in re.finditer(r"^\| `([^`]+)\.json` \|.*\| ([^|]+) \|$",
                                                                 readme, re.MULTILINE)}
    cases = [*scenario_cases(AS_OF), *generate(7, 6, AS_OF)]
    assert set(rows) == {c.name for c in cases}
    for case in cases:
        assert rows[case.name].startswith(case.expected_overall or "—"), case.name


def test_write_bundles_writes_one_json_file_per_case_and_nothing_else(tmp_path: Path) -> None:
    paths = write_bundles(tmp_path, 3, 4, AS_OF)
    assert sorted(tmp_path.iterdir()) == sorted(paths)
    assert len(paths) == 4
    text = paths[0].read_text(encoding="utf-8")
    assert text.startswith('{\n  "resourceType": "Bundle"') and text.endswith("}\n")


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_byte_identical_patients() -> None:
    first = [to_json(c.bundle) for c in generate(11, 8, AS_OF)]
    again = [to_json(c.bundle) for c in generate(11, 8, AS_OF)]
    assert first == again


def test_different_seeds_give_different_patients() -> None:
    a = [to_json(c.bundle) for c in generate(11, 8, AS_OF)]
    b = [to_json(c.bundle) for c in generate(12, 8, AS_OF)]
    assert not set(a) & set(b)


def test_generator_leaves_the_global_random_state_alone() -> None:
    import random

    random.seed(99)
    expected = random.random()
    random.seed(99)
    generate(5, 3, AS_OF)
    assert random.random() == expected


def test_generate_returns_count_cases_with_unique_names_and_patient_ids() -> None:
    cases = generate(7, 40, AS_OF)
    assert len(cases) == 40
    assert len({c.name for c in cases}) == 40
    assert len({resources(c.bundle, "Patient")[0]["id"] for c in cases}) == 40


# --------------------------------------------------------------------------- valid FHIR


LEAP_DAY = date(2028, 2, 29)
ALL_CASES = [*((c, AS_OF) for c in [*scenario_cases(AS_OF), *generate(7, 30, AS_OF)]),
             *((c, LEAP_DAY) for c in generate(2024, 30, LEAP_DAY))]
CASE_IDS = [f"{c.name}@{d}" for c, d in ALL_CASES]


@pytest.mark.parametrize(("case", "as_of"), ALL_CASES, ids=CASE_IDS)
def test_bundle_holds_one_patient_and_every_resource_is_valid_r4_about_that_patient(case: Case,
                                                                                     as_of: date) -> None:
    bundle = case.bundle
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    patients = resources(bundle, "Patient")
    assert len(patients) == 1
    pid = patients[0]["id"]
    ids = [r["id"] for r in resources(bundle)]
    assert len(set(ids)) == len(ids)
    for r in resources(bundle):
        assert FHIR_ID.match(r["id"]), r["id"]
        get_fhir_model_class(r["resourceType"]).model_validate(r)
        if r["resourceType"] != "Patient":
            assert r["subject"] == {"reference": f"Patient/{pid}"}


@pytest.mark.parametrize(("case", "as_of"), ALL_CASES, ids=CASE_IDS)
def test_every_patient_is_evaluated_on_all_17_criteria_and_gets_any_designed_verdict(case: Case,
                                                                                      as_of: date) -> None:
    report = evaluate(case.bundle, as_of)
    assert [c.id for c in report.criteria] == list(load_trial().criterion_ids)
    assert len(report.criteria) == 17
    if case.expected_overall is not None:
        assert report.overall == case.expected_overall, case.description


def test_random_patients_cover_the_data_shapes_real_feeds_send() -> None:
    """Coverage of the generator itself: every variant the brief lists turns up in 200 patients."""
    text = "\n".join(to_json(c.bundle) for c in generate(7, 200, AS_OF))
    for needle in ('"9581/3"', 'mcode-histology-morphology-behavior"', '"8890/3"', '"9040/3"', '"424413001"',
                   '"C50.911"', '"C78.00"', '"C78.7"', '"C79.51"', '"94381002"', '"MedicationRequest"',
                   '"MedicationStatement"', '"MedicationAdministration"', '"Keytruda 200 mg IV"', '"1547545"',
                   '"271299001"', '"89247-1"', '"89243-0"', '"77477000"', '"21889-1"', '"33728-7"',
                   '"K/uL"', '"x10E3/uL"', '"thou/uL"', '"10*9/L"', '"umol/L"', '"µmol/L"', '"59260-0"',
                   '"g/L"', '"mEq/L"', '"IU/L"', '"ukat/L"', '"entered-in-error"', '"86406008"', '"20447-9"',
                   '"comparator": "<"', '"77386006"', '"LA29252-6"', '"[lb_av]"'):
        assert needle in text, needle
    births = [resources(c.bundle, "Patient")[0]["birthDate"] for c in generate(7, 200, AS_OF)]
    assert any(len(b) == 4 for b in births) and any(len(b) == 7 for b in births)
    assert any(AS_OF.year - int(b[:4]) in (11, 12, 13) for b in births)


def test_random_patients_have_stale_and_unranged_labs() -> None:
    cases = generate(7, 60, AS_OF)
    labs = [r for c in cases for r in resources(c.bundle, "Observation")
            if r["category"][0]["coding"][0]["code"] == "laboratory" and "valueQuantity" in r]
    days = [(AS_OF - date.fromisoformat(r["effectiveDateTime"][:10])).days for r in labs]
    assert any(d > 28 for d in days) and any(d <= 28 for d in days)
    assert any("referenceRange" not in r for r in labs) and any("referenceRange" in r for r in labs)


# --------------------------------------------------------------------------- scenario verdicts


@pytest.mark.parametrize("as_of", [AS_OF, date(2028, 2, 29), date(2025, 1, 1)], ids=str)
@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_scenario_reaches_its_designed_verdict_on_any_evaluation_date(name: str, as_of: date) -> None:
    case = next(c for c in scenario_cases(as_of) if c.name == name)
    report = evaluate(case.bundle, as_of)
    assert report.overall == case.expected_overall, (name, not_fine(report), report.reasons)


def test_the_required_scenarios_exist() -> None:
    names = {s.name for s in SCENARIOS}
    assert {"asps-likely-eligible", "asps-si-units-likely-eligible", "sts-safety-run-in-likely-eligible",
            "asps-low-platelets-not-eligible", "asps-missing-labs-needs-review", "asps-stale-labs-needs-review",
            "asps-entered-in-error", "gilbert-bilirubin", "liver-mets-ast", "hiv-undetectable",
            "hiv-detectable-not-eligible", "pregnant-not-eligible", "child-age-11-not-eligible",
            "partial-birthdate-age-unknown", "breast-cancer-not-applicable", "renal-cg-branch"} <= names


# --------------------------------------------------------------------------- what each scenario means


def test_eligible_asps_patient_meets_every_criterion_in_the_asps_cohort() -> None:
    report = scenario("asps-likely-eligible")
    assert report.cohort == "asps"
    assert not_fine(report) == {}
    assert statuses(report)["hiv"] == "not-applicable"  # no HIV recorded
    assert statuses(report)["prior-ici-progression"] == "met"
    assert statuses(report)["pregnancy-breastfeeding"] == "met"  # negative pregnancy status documented


def test_si_units_and_feed_spellings_give_the_same_decisions_as_us_units() -> None:
    us = statuses(scenario("asps-likely-eligible"))
    assert statuses(scenario("asps-si-units-likely-eligible")) == us
    assert statuses(scenario("asps-ici-by-name-likely-eligible")) == us
    hgb = scenario("asps-si-units-likely-eligible").criterion("hemoglobin")
    assert "mmol/L" in (hgb.observed or "") and "g/dL" in (hgb.observed or "")  # shown converted


def test_si_scenario_finds_asps_through_the_mcode_histology_extension() -> None:
    report = scenario("asps-si-units-likely-eligible")
    assert report.cohort == "asps"
    assert "9581/3" in (report.criterion("diagnosis").observed or "")


def test_checkpoint_inhibitor_named_only_in_text_counts_as_prior_ici() -> None:
    ici = scenario("asps-ici-by-name-likely-eligible").criterion("prior-ici-progression")
    assert ici.status == "met"
    assert "by name" in (ici.note or "")


def test_safety_run_in_patient_needs_no_prior_checkpoint_inhibitor() -> None:
    report = scenario("sts-safety-run-in-likely-eligible")
    assert report.cohort == "safety-run-in"
    assert statuses(report)["prior-ici-progression"] == "not-applicable"
    assert statuses(report)["pregnancy-breastfeeding"] == "not-applicable"  # male, nothing documented
    assert report.overall == "likely-eligible"


def test_platelets_of_85000_alone_make_the_patient_not_eligible() -> None:
    report = scenario("asps-low-platelets-not-eligible")
    assert not_fine(report) == {"platelets": "not-met"}
    assert report.overall == "not-eligible"
    assert any(r.startswith("platelets:") for r in report.reasons)


def test_missing_labs_are_unknown_never_failed() -> None:
    report = scenario("asps-missing-labs-needs-review")
    assert not_fine(report) == dict.fromkeys(LAB_CRITERIA, "unknown")
    assert report.overall == "needs-review"


def test_labs_older_than_28_days_are_unknown_and_called_stale() -> None:
    report = scenario("asps-stale-labs-needs-review")
    assert not_fine(report) == dict.fromkeys(LAB_CRITERIA, "unknown")
    platelets = report.criterion("platelets")
    assert "stale" in (platelets.note or "") and "245" in (platelets.observed or "")


def test_entered_in_error_low_platelet_count_is_ignored_for_the_older_valid_one() -> None:
    platelets = scenario("asps-entered-in-error").criterion("platelets")
    assert platelets.status == "met"
    assert (platelets.observed or "").startswith("245 K/uL")
    assert scenario("asps-entered-in-error").overall == "likely-eligible"


def test_gilbert_syndrome_allows_bilirubin_up_to_3_times_uln() -> None:
    bilirubin = scenario("gilbert-bilirubin").criterion("total-bilirubin")
    assert bilirubin.status == "met"
    assert "2.5 x ULN" in (bilirubin.observed or "")
    without_gilbert = variant("gilbert-bilirubin", conditions=())
    assert statuses(without_gilbert)["total-bilirubin"] == "not-met"


def test_liver_metastases_allow_ast_and_alt_up_to_5_times_uln() -> None:
    report = scenario("liver-mets-ast")
    assert statuses(report)["ast"] == "met" and "4 x ULN" in (report.criterion("ast").observed or "")
    assert statuses(report)["alt"] == "met"
    lung_only = variant("liver-mets-ast", metastases=("lung",))
    assert statuses(lung_only)["ast"] == "not-met" and statuses(lung_only)["alt"] == "not-met"


def test_hiv_with_undetectable_viral_load_within_28_days_is_met() -> None:
    hiv = scenario("hiv-undetectable").criterion("hiv")
    assert hiv.status == "met"
    assert "< 20" in (hiv.observed or "")
    assert scenario("hiv-undetectable").overall == "likely-eligible"


def test_hiv_with_detectable_viral_load_is_not_eligible_because_of_hiv() -> None:
    report = scenario("hiv-detectable-not-eligible")
    assert not_fine(report) == {"hiv": "not-met"}
    assert report.overall == "not-eligible"


def test_pregnancy_and_breastfeeding_each_exclude() -> None:
    assert not_fine(scenario("pregnant-not-eligible")) == {"pregnancy-breastfeeding": "not-met"}
    assert not_fine(scenario("breastfeeding-not-eligible")) == {"pregnancy-breastfeeding": "not-met"}


def test_child_aged_11_is_too_young_and_only_age_fails() -> None:
    report = scenario("child-age-11-not-eligible")
    assert not_fine(report) == {"age": "not-met"}
    assert (report.criterion("age").observed or "").startswith("11 years")


def test_year_only_birth_date_straddling_12_leaves_age_unknown() -> None:
    report = scenario("partial-birthdate-age-unknown")
    assert not_fine(report) == {"age": "unknown"}
    assert report.overall == "needs-review"


def test_breast_cancer_without_sarcoma_is_not_applicable() -> None:
    report = scenario("breast-cancer-not-applicable")
    assert statuses(report)["diagnosis"] == "not-met"
    assert report.cohort is None
    assert report.overall == "not-applicable"


def test_creatinine_above_1_5_uln_is_met_through_cockcroft_gault() -> None:
    renal = scenario("renal-cg-branch").criterion("renal-function")
    assert renal.status == "met"
    assert "Cockcroft-Gault branch" in (renal.note or "")  # 2.16 mg/dL is 1.8 x ULN: the other branch fails
    small = variant("renal-cg-branch", weight_kg=40.0, height_cm=150.0, age=80)  # CrCl now < 30
    assert statuses(small)["renal-function"] == "not-met"


def test_lesion_of_15_mm_without_a_method_is_not_yet_measurable() -> None:
    report = scenario("tumor-no-method-needs-review")
    assert not_fine(report) == {"measurable-disease": "unknown"}
    assert statuses(variant("tumor-no-method-needs-review", tumor_method="ct"))["measurable-disease"] == "met"


def test_karnofsky_60_fails_performance_status() -> None:
    assert not_fine(scenario("karnofsky-60-not-eligible")) == {"performance-status": "not-met"}


# --------------------------------------------------------------------------- the benchmark record


@cache
def heavy() -> dict[str, Any]:
    return realistic_bundle(1, AS_OF)


def test_realistic_record_has_exactly_2000_lab_results_of_20_codes_over_3_years() -> None:
    labs = [r for r in resources(heavy(), "Observation")
            if r["category"][0]["coding"][0]["code"] == "laboratory"]
    assert len(labs) == 2000
    codes = [r["code"]["coding"][0]["code"] for r in labs]
    assert len(set(codes)) == 20 and all(codes.count(c) == 100 for c in set(codes))
    assert {"2345-7", "2823-3", "6690-2"} <= set(codes)  # unmapped results the engine must skip
    for r in labs:
        q = r["valueQuantity"]
        assert q["system"] == "http://unitsofmeasure.org" and q["code"]
        assert {"low", "high"} <= set(r["referenceRange"][0]) and r["interpretation"]
        age_days = (AS_OF - date.fromisoformat(r["effectiveDateTime"][:10])).days
        assert 0 < age_days <= 3 * 365


def test_realistic_record_has_40_conditions_and_20_medications_of_all_three_types() -> None:
    bundle = heavy()
    assert len(resources(bundle, "Patient")) == 1
    assert len(resources(bundle, "Condition")) == 40
    meds = [r for r in resources(bundle) if r["resourceType"].startswith("Medication")]
    assert len(meds) == 20
    assert {r["resourceType"] for r in meds} == {"MedicationRequest", "MedicationStatement",
                                                 "MedicationAdministration"}
    assert "I10" in to_json(bundle)


def test_realistic_record_is_about_2_5_mb_and_reproducible() -> None:
    text = json.dumps(heavy())
    assert 2_000_000 < len(text) < 3_000_000
    assert to_json(realistic_bundle(1, AS_OF)) == to_json(heavy())
    assert to_json(realistic_bundle(2, AS_OF)) != to_json(heavy())


def test_realistic_record_is_an_evaluable_asps_patient_after_prior_ici() -> None:
    report = evaluate(heavy())
    assert len(report.criteria) == 17
    assert report.cohort == "asps"
    assert statuses(report)["prior-ici-progression"] == "met"
    assert report.overall == "likely-eligible"


def test_generator_reads_checkpoint_inhibitor_codes_from_the_mappings() -> None:
    assert generator.ici_rxnorm("pembrolizumab") == "1547545"
