"""Trial definitions as typed, versioned data: validated at load, selected by --trial / AXIOM_TRIAL, and an
amendment or a second trial runs with no code change (DESIGN.md "Trial definitions and versions")."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from adapter.cli import app
from adapter.engine import evaluate_bundle
from adapter.synth import fhir
from adapter.trials import TrialFileError, load_trial
from tests.helpers import AS_OF, PID, asps, lab

FIXTURES = Path(__file__).parent / "fixtures"
TRIALS = FIXTURES / "trials"
AMENDED = str(TRIALS / "axiom-amended.yaml")
OTHER = str(TRIALS / "other-trial.yaml")
SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "contract" / "eligibility-report.schema.json"
runner = CliRunner()


def report_of(fixture: str, trial: str = "axiom") -> dict:  # type: ignore[type-arg]
    return evaluate_bundle((FIXTURES / fixture).read_bytes(), AS_OF, trial).to_json()


def status(report: dict, cid: str) -> str:  # type: ignore[type-arg]
    return next(c["status"] for c in report["criteria"] if c["id"] == cid)


def test_the_shipped_definition_lists_the_contracts_criterion_ids_in_order() -> None:
    schema = json.loads(SCHEMA.read_text())
    pinned = json.dumps(schema)
    trial = load_trial("axiom")
    assert len(trial.criterion_ids) == 17
    for cid in trial.criterion_ids:
        assert f'"{cid}"' in pinned, f"{cid} is not pinned by the contract"
    assert trial.version == "2022-older-record"


def test_the_amendment_runs_with_no_code_change_and_names_its_version() -> None:
    # asps-likely-eligible: ASPS, 34 years old, pembrolizumab then progression
    older = report_of("asps-likely-eligible.json")
    amended = report_of("asps-likely-eligible.json", AMENDED)
    assert older["overall"] == "likely-eligible"
    assert amended["trial"]["version"] == "test-amendment-icinaive"
    ids = [c["id"] for c in amended["criteria"]]
    assert "no-prior-ici" in ids and "prior-ici-progression" not in ids, "a changed rule gets a new id"
    assert status(amended, "no-prior-ici") == "not-met", "pembrolizumab is a prior checkpoint inhibitor"
    assert amended["overall"] == "not-eligible"


def test_amended_age_limit_is_18_and_an_empty_drug_history_is_met_with_a_note() -> None:
    # ASPS in a 16-year-old (born 2010-05-02, evaluated 2026-11-21) with no medication recorded
    bundle = orjson.dumps(fhir.bundle([fhir.patient(PID, "2010-05-02", "female"), asps()]))
    amended = evaluate_bundle(bundle, AS_OF, AMENDED)
    assert amended.criterion("age").status == "not-met", "16 is under the amendment's 18"
    assert evaluate_bundle(bundle, AS_OF).criterion("age").status == "met", "16 meets the older record's 12"
    no_ici = amended.criterion("no-prior-ici")
    assert no_ici.status == "met" and no_ici.note and "outside records" in no_ici.note
    # the safety run-in does not ask about prior therapy
    run_in = report_of("sts-safety-run-in-likely-eligible.json", AMENDED)
    assert run_in["cohort"] == "safety-run-in" and status(run_in, "no-prior-ici") == "not-applicable"


def test_a_second_trial_reuses_the_kinds_with_its_own_ids_and_thresholds() -> None:
    report = report_of("asps-likely-eligible.json", OTHER)
    assert report["trial"] == {"id": "lipo-test", "nct": "NCT00000000", "version": "test-1"}
    assert [c["id"] for c in report["criteria"]] == ["sarcoma-diagnosis", "adult", "platelets-150",
                                                     "neutrophils", "liver-ast"]
    assert report["cohort"] == "sarcoma"
    assert status(report, "platelets-150") == "met", "245 K/uL is >= 150,000 /uL"
    # 120 K/uL: enough for AXIOM (>= 100,000) but not for this trial (>= 150,000)
    bundle = orjson.dumps(fhir.bundle([fhir.patient(PID, "1980-01-01", "male"), asps(),
                                       lab("777-3", 120, "K/uL")]))
    assert evaluate_bundle(bundle, AS_OF).criterion("platelets").status == "met"
    other = evaluate_bundle(bundle, AS_OF, OTHER)
    assert other.criterion("platelets-150").status == "not-met" and other.overall == "not-eligible"
    # its ANC window is 7 days: an ANC of 10 days ago is stale here, current for AXIOM (28 days)
    bundle = orjson.dumps(fhir.bundle([fhir.patient(PID, "1980-01-01", "male"), asps(),
                                       lab("751-8", 2.0, "10*3/uL", ucum="10*3/uL", ago=10)]))
    assert evaluate_bundle(bundle, AS_OF).criterion("anc").status == "met"
    assert evaluate_bundle(bundle, AS_OF, OTHER).criterion("neutrophils").status == "unknown"
    assert report_of("breast-cancer-not-applicable.json", OTHER)["overall"] == "not-applicable"


def _broken(tmp_path: Path, mutate: object) -> str:
    data = yaml.safe_load((Path("mappings/trials/axiom.yaml")).read_text())
    assert callable(mutate)
    mutate(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(("mutate", "where", "why"), [
    (lambda d: d["criteria"][6].update(kind="lab-minimun"), "criteria[6] (anc).kind", "unknown kind"),
    (lambda d: d["criteria"][7].update(min="a lot"), "criteria[7] (platelets).min", "number"),
    (lambda d: d["criteria"][7].pop("min"), "criteria[7] (platelets).min", "required"),
    (lambda d: d["criteria"][7].update(minimum=5), "criteria[7] (platelets).minimum", "not permitted"),
    (lambda d: d["criteria"][7].update(input="thrombocytes"), "criteria[7] (platelets)", "unknown input"),
    (lambda d: d["criteria"][7].update(unit="g/dL"), "criteria[7] (platelets).unit", "canonical unit"),
    (lambda d: d["criteria"][3].update(cohorts=["asp"]), "criteria[3] (prior-ici-progression)", "unknown cohort"),
    (lambda d: d["criteria"][9]["modifier"].update(condition="gilberts"), "criteria[9] (total-bilirubin)",
     "unknown condition set"),
    (lambda d: d["criteria"][9]["default_uln"].update(unit="furlongs"), "default_uln.unit", "furlongs"),
    (lambda d: d["criteria"].append(dict(d["criteria"][7])), "criteria", "appears twice"),
    (lambda d: d.update(nct="5333458"), "nct", "pattern"),
    (lambda d: d.pop("cohorts"), "cohorts", "required"),
    # a source documents a parameter the criterion sets (a typo would leave the real one unsourced)
    (lambda d: d["criteria"][16]["sources"].update(hcg_positive=""), "criteria[16] (pregnancy-breastfeeding)",
     "'hcg_positive' is not a parameter this criterion sets"),
    (lambda d: d["criteria"][2]["sources"].update({"min_mm.ultrasound": ""}), "criteria[2] (measurable-disease)",
     "'min_mm.ultrasound' is not a parameter"),
])
def test_a_bad_trial_file_stops_the_tool_with_the_file_the_path_and_the_reason(
        tmp_path: Path, mutate: object, where: str, why: str) -> None:
    path = _broken(tmp_path, mutate)
    with pytest.raises(TrialFileError) as caught:
        load_trial(path)
    message = str(caught.value)
    assert path in message and where in message and why in message, message
    assert "\n" not in message


def test_cli_trial_option_takes_a_file_or_an_id_and_refuses_a_bad_one(tmp_path: Path) -> None:
    bundle = str(FIXTURES / "asps-likely-eligible.json")
    result = runner.invoke(app, ["evaluate", bundle, "--as-of", AS_OF.isoformat(), "--trial", AMENDED])
    assert result.exit_code == 0 and json.loads(result.stdout)["trial"]["version"] == "test-amendment-icinaive"
    result = runner.invoke(app, ["evaluate", bundle, "--as-of", AS_OF.isoformat(), "--trial", "axiom"])
    assert result.exit_code == 0 and json.loads(result.stdout)["trial"]["version"] == "2022-older-record"
    result = runner.invoke(app, ["evaluate", bundle, "--trial", "no-such-trial"])
    assert result.exit_code == 2 and "no trial definition 'no-such-trial'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    broken = _broken(tmp_path, lambda d: d["criteria"][7].update(min="a lot"))
    result = runner.invoke(app, ["evaluate", bundle, "--trial", broken])
    assert result.exit_code == 2 and "criteria[7] (platelets).min" in result.stderr


def test_the_service_uses_axiom_trial_and_names_its_version(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from adapter.cds.app import create_app
    from adapter.cds.settings import Settings

    settings = Settings(trial=AMENDED, auth_required=False, database_url=f"sqlite:///{tmp_path}/t.db")
    bundle = json.loads((FIXTURES / "asps-likely-eligible.json").read_text())
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"patientId": patient["id"], "userId": "Practitioner/1"},
            "prefetch": {"patient": patient, "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": [
                e for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition"]}}}
    with TestClient(create_app(settings)) as client:
        (service,) = client.get("/cds-services").json()["services"]
        assert "test-amendment-icinaive" in service["description"]
        (card,) = client.post("/cds-services/axiom-eligibility", json=body).json()["cards"]
    assert "test-amendment-icinaive" in card["detail"]
    # the amended criterion is on the card (by its id's words: the amendment names no label), the old one is not
    assert "no prior ici" in card["detail"] and "prior ici progression" not in card["detail"]


def test_the_service_refuses_to_start_with_a_bad_trial_definition(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from adapter.cds.app import create_app
    from adapter.cds.settings import Settings

    broken = _broken(tmp_path, lambda d: d["criteria"][7].update(min="a lot"))
    settings = Settings(trial=broken, auth_required=False, database_url=f"sqlite:///{tmp_path}/t.db")
    with pytest.raises(TrialFileError, match=r"criteria\[7\] \(platelets\)\.min"), TestClient(create_app(settings)):
        pass
