"""The card a clinician reads in two seconds (issue 11): the summary names the deciding finding in
clinical words, the detail leads with what decides, and the actions fit the verdict.

Built from the demo fixtures (tests/fixtures, generated for tests.helpers.AS_OF), each designed for one
verdict; the thresholds quoted are the trial file's (mappings/trials/axiom.yaml).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapter.cds.app import create_app
from adapter.criteria.model import EligibilityReport
from adapter.engine import evaluate_bundle
from adapter.report.card import SUMMARY_LIMIT, card, clinical
from adapter.synth import fhir
from adapter.trials import load_trial
from tests.card_validator import assert_valid_response
from tests.helpers import AS_OF, PID, asps, decisive_rows
from tests.service_server import service_settings

FIXTURES = Path(__file__).parent / "fixtures"
CHECKLIST = "- [ ] "
Json = dict[str, Any]


def report_of(name: str) -> EligibilityReport:
    return evaluate_bundle((FIXTURES / f"{name}.json").read_bytes(), AS_OF)


def card_of(name: str, **kw: Any) -> Json:
    shown = card(report_of(name), **kw)
    assert shown is not None, name
    assert_valid_response({"cards": [shown]})
    return shown


def test_a_not_eligible_summary_names_the_value_and_the_threshold() -> None:
    """Platelets 85 K/uL fail the protocol's >= 100,000/uL: the summary says so in those words."""
    shown = card_of("asps-low-platelets-not-eligible")
    assert shown["summary"] == "AXIOM: not eligible — platelets 85,000/µL (needs ≥ 100,000/µL)"
    assert len(shown["summary"]) < SUMMARY_LIMIT


def test_a_not_eligible_card_leads_with_the_failure_and_folds_the_rest() -> None:
    """The one failing criterion is the only decisive row; the 15 met ones are named on one line; and
    there is no attestation checklist and no referral for a patient who fails a criterion."""
    shown = card_of("asps-low-platelets-not-eligible")
    detail = shown["detail"]
    rows = [line for line in detail.splitlines() if line.startswith("- **")]
    assert detail.count("**Not met:**\n") == 1 and "**Unknown" not in detail
    assert len(rows) == 1 and rows[0].startswith("- **platelets:** 85 K/µL (2026\u201111\u201114)"), rows
    assert rows[0].endswith(" — needs ≥ 100,000/µL"), rows
    assert "|" not in detail, "no Markdown table: EHRs that show Markdown as text read lists well"
    also = next(line for line in detail.splitlines() if line.startswith("**Also met:**"))
    assert "ANC" in also and "age" in also and "platelets" not in also
    assert len(detail.splitlines()) < 17, "well under the old 17-row table"
    assert CHECKLIST not in detail
    assert not [s for s in shown.get("suggestions", []) if s["label"].startswith("Refer")]


def test_a_needs_review_card_says_what_would_settle_each_unknown() -> None:
    """Nine labs absent: each row says the result that would settle it within the trial's 28-day window,
    the summary counts them, and "Order missing labs" offers the panels that cover them."""
    shown = card_of("asps-missing-labs-needs-review")
    assert shown["summary"].startswith("AXIOM: needs review (ASPS cohort) — 9 labs missing or stale")
    unknown_rows = [line for line in shown["detail"].split("**Unknown — what would settle it:**\n")[1]
                    .split("\n\n")[0].splitlines()]
    assert len(unknown_rows) == 9
    for row in unknown_rows:
        assert "to settle: a new " in row and "(last 28 days)" in row, row
    assert "to settle: a new platelet count (last 28 days)" in shown["detail"]
    assert "to settle: a new serum creatinine (last 28 days)" in shown["detail"]
    (orders,) = [s for s in shown["suggestions"] if s["label"] == "Order missing labs"]
    assert len(orders["actions"]) == 2  # CBC and CMP
    assert CHECKLIST in shown["detail"], "the patient may be eligible: the checklist is shown"


def test_a_stale_value_is_shown_once() -> None:
    """A lab older than the window is unknown; its row shows the old value and date once, not twice."""
    detail = card_of("asps-stale-labs-needs-review")["detail"]
    row = next(line for line in detail.splitlines() if line.startswith("- **platelets:**"))
    assert row.count("245 K/µL") == 1 and row.count("2026\u201109\u201122") == 1, row


def test_the_gilbert_allowance_is_shown_exactly_once() -> None:
    """Bilirubin 2.5 x ULN passes only under the Gilbert allowance (<= 3 x ULN): a likely-eligible card
    shows that caveat once, next to the bilirubin value, and ratios with one precision."""
    shown = card_of("gilbert-bilirubin")
    assert shown["summary"] == "AXIOM: likely eligible — ASPS cohort"
    detail = shown["detail"]
    assert detail.count("Gilbert syndrome documented") == 1
    line = next(line for line in detail.splitlines() if "Gilbert syndrome documented" in line)
    assert line.startswith("- bilirubin 3 mg/dL") and "(2.50 × ULN)" in line and "limit 3 × ULN" in line
    assert "0.525" not in detail and "(0.53 × ULN)" in detail
    assert detail.count("liver metastases documented") == 1, "AST and ALT share one liver-metastasis caveat"
    assert CHECKLIST in detail


def test_other_caveats_behind_met_rows_reach_the_card() -> None:
    """Undetectable HIV viral load is met but asks to confirm effective ART; a creatinine above 1.5 x ULN
    passes on the Cockcroft-Gault branch, which the card names."""
    assert "confirm the patient is on effective ART" in card_of("hiv-undetectable")["detail"]
    assert "Cockcroft-Gault branch met" in card_of("renal-cg-branch")["detail"]


@pytest.mark.parametrize(("days", "said"), [(None, "30 days"), (1, "1 day"), (7, "7 days")])
def test_the_card_says_how_long_dismiss_hides_it(days: int | None, said: str) -> None:
    """Dismissing with a reason hides the card for the service's suppress_days (default 30)."""
    kw = {} if days is None else {"suppress_days": days}
    assert f"hides it for {said}, unless the verdict changes" in card_of("gilbert-bilirubin", **kw)["detail"]


def _child_hook() -> Json:
    """A 10-year-old with ASPS: not eligible on age (>= 12 years)."""
    patient = fhir.patient(PID, "2016-05-02", "female")
    conditions = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": asps()}]}
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": PID},
            "prefetch": {"patient": patient, "conditions": conditions}}


@pytest.mark.parametrize(("show", "cards"), [(True, 1), (False, 0)])
def test_whether_not_eligible_cards_are_shown_is_a_setting(tmp_path: Path, show: bool, cards: int) -> None:
    """Shown by default (the clinician learns why not and can correct the chart); off, no card."""
    with TestClient(create_app(service_settings(tmp_path, show_not_eligible=show))) as client:
        response = client.post("/cds-services/axiom-eligibility", json=_child_hook())
    assert response.status_code == 200
    shown = response.json()["cards"]
    assert len(shown) == cards
    if shown:
        assert shown[0]["summary"].startswith("AXIOM: not eligible — age 10 years (needs ≥ 12 years)")
        assert "hides it for 30 days" in shown[0]["detail"]


# --------------------------------------------------------------------------- the study team (site settings)

TEAM = {"name": "Sarcoma Research Team", "site": "Example Cancer Center, clinic 4", "phone": "+1 555 0100",
        "performer": "PractitionerRole/sarcoma-rn"}


def test_the_referral_names_the_configured_study_team_and_its_contact() -> None:
    """A likely-eligible patient: the referral goes to the site's study team (its PractitionerRole as the
    ServiceRequest's performer), and the card says whom to call and that the cohort and site enrol."""
    from adapter.report.referral import StudyTeam
    shown = card_of("asps-likely-eligible", team=StudyTeam(**TEAM))
    (referral,) = [s for s in shown["suggestions"] if s["label"].startswith("Refer")]
    assert referral["label"] == "Refer to the AXIOM study team (Sarcoma Research Team)"
    request = referral["actions"][0]["resource"]
    assert request["performer"] == [{"reference": "PractitionerRole/sarcoma-rn", "display": "Sarcoma Research Team"}]
    assert "+1 555 0100" in request["note"][0]["text"]
    line = next(x for x in shown["detail"].splitlines() if x.startswith("**Recruitment:**"))
    assert "ASPS cohort open in the trial record" in line and "recruiting at this site" in line
    assert "Example Cancer Center, clinic 4" in line and "+1 555 0100" in line


def test_the_cards_referral_carries_the_business_identifier_the_review_app_searches_by() -> None:
    """Accepted from the card, the EHR stores a referral the review app later finds (and does not make again):
    one identifier per trial and patient, its system from the trial file."""
    shown = card_of("asps-likely-eligible")
    (referral,) = [s for s in shown["suggestions"] if s["label"].startswith("Refer")]
    request = referral["actions"][0]["resource"]
    patient_id = request["subject"]["reference"].split("/")[-1]
    system = load_trial("axiom").card["referral"]["identifier_system"]
    assert system and request["identifier"] == [{"system": system, "value": f"axiom-{patient_id}"}]


def test_a_site_that_does_not_enrol_gets_no_referral_suggestion() -> None:
    """Enrolment suspended at this site: the card still shows the verdict and says so, but suggests no
    referral the team could not act on."""
    from adapter.report.referral import StudyTeam
    shown = card_of("asps-likely-eligible", team=StudyTeam(**TEAM, site_status="suspended"))
    assert not [s for s in shown.get("suggestions", []) if s["label"].startswith("Refer")]
    assert "enrolment suspended at this site" in shown["detail"]


def test_without_a_configured_team_the_card_points_to_the_trial_record() -> None:
    shown = card_of("asps-likely-eligible")
    assert "study team: not configured here — see the contacts on ClinicalTrials.gov" in shown["detail"]
    (referral,) = [s for s in shown["suggestions"] if s["label"].startswith("Refer")]
    assert "performer" not in referral["actions"][0]["resource"]


def test_configured_team_text_is_inert_markdown() -> None:
    """Site settings are text too: markup in them is shown, not rendered."""
    from adapter.report.referral import StudyTeam
    shown = card_of("asps-likely-eligible", team=StudyTeam(**{**TEAM, "name": "[Team](javascript:x) **A**"}))
    assert "\\[Team\\](javascript:x) \\*\\*A\\*\\*" in shown["detail"]


def test_a_bad_team_reference_stops_the_service_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from adapter.cds.settings import Settings
    monkeypatch.setenv("AXIOM_STUDY_TEAM", '{"name": "T", "site": "S", "performer": "https://evil.example/x"}')
    with pytest.raises(ValidationError, match="performer"):
        Settings()


# --------------------------------------------------------------------------- notation that renders whole


def test_the_clearance_unit_stays_on_its_values_line() -> None:
    """The CDS Hooks sandbox broke "mL/min/1.73 m2" over two lines at its spaces: the card writes m² and
    binds value and unit with no-break spaces."""
    detail = card_of("renal-cg-branch")["detail"]
    assert "mL/min/1.73\u00a0m²" in detail and "1.73 m2" not in detail
    assert "\u00a0mL/min" in detail


def test_notes_name_findings_not_resource_ids() -> None:
    """"Gilbert syndrome documented (Condition/…)" is an id for the review app's links, not for the card."""
    detail = card_of("gilbert-bilirubin")["detail"]
    assert "Gilbert" in detail and "(Condition/" not in detail


def test_large_counts_are_grouped_like_the_platelet_count() -> None:
    """A detectable HIV viral load reads "12,400 copies/mL", in the notation of "85,000/µL"."""
    detail = card_of("hiv-detectable-not-eligible")["detail"]
    assert "12,400 copies/mL" in detail and "12400" not in detail


def test_a_not_met_row_does_not_restate_its_limit() -> None:
    """"85 K/µL — below 100,000/µL — needs ≥ 100,000/µL" said the limit twice; the row keeps the requirement."""
    rows = decisive_rows(card_of("asps-low-platelets-not-eligible")["detail"])
    status, line = rows["platelets"]
    assert status == "not-met" and "needs ≥ 100,000/µL" in line and "below" not in line


@pytest.mark.parametrize(("text", "shown"), [
    ("12400 copies/mL", "12,400 copies/mL"),
    ("85000/uL", "85,000/µL"),
    ("platelets 150000 /uL", "platelets 150,000/µL"),
    # a port or a path segment is not a count: the server named in a note stays the one contacted
    ("the FHIR server at http://127.0.0.1:18091/fhir did not answer", "the FHIR server at http://127.0.0.1:18091/fhir"
                                                                       " did not answer"),
    ("https://fhir.example/r4/12345/Patient", "https://fhir.example/r4/12345/Patient"),
])
def test_long_counts_are_grouped_and_urls_left_as_they_are(text: str, shown: str) -> None:
    assert clinical(text) == shown
