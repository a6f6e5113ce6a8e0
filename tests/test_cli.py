"""The command line: formats, the report contract, and every bad-input path (one line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest
from typer.testing import CliRunner

from adapter.cli import app
from adapter.synth import fhir
from tests.card_validator import assert_valid_response
from tests.helpers import AS_OF, SUBJECT, asps, decisive_rows, lab

SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "contract" / "eligibility-report.schema.json"
runner = CliRunner()


def write(tmp_path: Path, body: object, name: str = "b.json") -> Path:
    path = tmp_path / name
    path.write_bytes(body if isinstance(body, bytes) else orjson.dumps(body))
    return path


def patient_bundle() -> dict:  # type: ignore[type-arg]
    return fhir.bundle([fhir.patient("p1"), asps(), lab("777-3", 85, "K/uL")])


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_json_report_matches_the_contract(tmp_path: Path) -> None:
    code, out, _ = run("evaluate", str(write(tmp_path, patient_bundle())), "--as-of", AS_OF.isoformat())
    assert code == 0
    report = json.loads(out)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    assert report["patient"] == SUBJECT and report["asOf"] == "2026-11-21"
    assert report["overall"] == "not-eligible"
    platelets = next(c for c in report["criteria"] if c["id"] == "platelets")
    assert platelets["status"] == "not-met" and platelets["evidence"]


def test_card_format_is_a_valid_cds_hooks_response(tmp_path: Path) -> None:
    code, out, _ = run("evaluate", str(write(tmp_path, patient_bundle())), "--as-of", "2026-11-21",
                       "--format", "card")
    assert code == 0
    body = json.loads(out)
    assert_valid_response(body)
    card = body["cards"][0]
    assert "not eligible" in card["summary"] and "platelets" in card["summary"]
    # the failing row leads; a not-eligible patient is not asked to attest anything
    assert decisive_rows(card["detail"])["platelets"][0] == "not-met" and "- [ ]" not in card["detail"]
    assert card["links"][0]["url"].endswith("NCT05333458")


def test_no_card_when_the_patient_has_no_sarcoma(tmp_path: Path) -> None:
    bundle = fhir.bundle([fhir.patient("p1")])
    code, out, _ = run("evaluate", str(write(tmp_path, bundle)), "--format", "card")
    assert code == 0 and json.loads(out) == {"cards": []}


def test_text_format_is_a_readable_table(tmp_path: Path) -> None:
    code, out, _ = run("evaluate", str(write(tmp_path, patient_bundle())), "--as-of", "2026-11-21",
                       "--format", "text")
    assert code == 0
    assert "Overall: NOT-ELIGIBLE" in out
    assert "platelets" in out and "NOT MET" in out and "85,000 /uL" in out


def test_urn_uuid_references_are_resolved_and_cited(tmp_path: Path) -> None:
    urn = "urn:uuid:0f1e2d3c-4b5a-4968-8776-655443322110"
    obs = lab("777-3", 85, "K/uL")
    obs["subject"] = {"reference": urn}
    del obs["id"]
    bundle = fhir.bundle([fhir.patient("p1"), asps(), obs], full_urls=[urn, "urn:uuid:" + "1" * 8 + "-1111-1111-1111-"
                                                                        + "1" * 12, "urn:uuid:" + "2" * 8 +
                                                                        "-2222-2222-2222-" + "2" * 12])
    code, out, _ = run("evaluate", str(write(tmp_path, bundle)), "--as-of", "2026-11-21")
    assert code == 0
    report = json.loads(out)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    platelets = next(c for c in report["criteria"] if c["id"] == "platelets")
    assert platelets["status"] == "not-met"
    assert platelets["evidence"] == ["urn:uuid:" + "2" * 8 + "-2222-2222-2222-" + "2" * 12]


def test_absolute_url_subject_references_are_the_same_patient(tmp_path: Path) -> None:
    """On the Patient's own base (her fullUrl): an absolute URL elsewhere is another server's patient."""
    obs = lab("777-3", 85, "K/uL")
    obs["subject"] = {"reference": "https://ehr.example.org/fhir/Patient/p1"}
    bundle = fhir.bundle([fhir.patient("p1"), asps(), obs])
    bundle["entry"][0]["fullUrl"] = "https://ehr.example.org/fhir/Patient/p1"
    code, out, _ = run("evaluate", str(write(tmp_path, bundle)), "--as-of", "2026-11-21")
    assert code == 0
    assert next(c for c in json.loads(out)["criteria"] if c["id"] == "platelets")["status"] == "not-met"


def test_another_patients_resources_are_never_mixed_in(tmp_path: Path) -> None:
    foreign = lab("777-3", 10, "K/uL")
    foreign["subject"] = {"reference": "Patient/someone-else"}
    code, out, _ = run("evaluate", str(write(tmp_path, fhir.bundle([fhir.patient("p1"), asps(), foreign]))),
                       "--as-of", "2026-11-21")
    assert code == 0
    report = json.loads(out)
    assert next(c for c in report["criteria"] if c["id"] == "platelets")["status"] == "unknown"
    assert any("another patient" in n for n in report["dataNotes"])


def test_bundle_from_stdin(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "-", "--as-of", "2026-11-21"], input=orjson.dumps(patient_bundle()))
    assert result.exit_code == 0 and json.loads(result.stdout)["overall"] == "not-eligible"


@pytest.mark.parametrize(("content", "message"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a FHIR Bundle"),
    (orjson.dumps({"resourceType": "Patient", "id": "p1"}), "not a FHIR Bundle"),
    (orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": "x"}), "not a FHIR Bundle"),
    (orjson.dumps(fhir.bundle([asps()])), "no Patient"),
    (orjson.dumps(fhir.bundle([fhir.patient("a"), fhir.patient("b")])), "2 Patients"),
    # the same id twice with different birth dates: aged 6 or 34 would be the Bundle's order deciding
    (orjson.dumps(fhir.bundle([fhir.patient("p1", "2020-01-01"), fhir.patient("p1", "1992-07-07"), asps()])),
     "two different Patient resources as Patient/p1"),
    (orjson.dumps(fhir.bundle([{"resourceType": "Patient", "id": "p1", "birthDate": "not-a-date"}])),
     "not valid FHIR R4"),
    (b"\xff\xfe garbage", "not JSON"),
    # a death sent as the string "true": read as alive it would have been referred
    (orjson.dumps(fhir.bundle([{**fhir.patient("p1"), "deceasedBoolean": "true"}, asps()])), "deceasedBoolean"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(tmp_path: Path, content: bytes, message: str) -> None:
    code, out, err = run("evaluate", str(write(tmp_path, content)))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_unreadable_file_and_bad_options_exit_2(tmp_path: Path) -> None:
    code, _, err = run("evaluate", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in err and err.count("\n") == 1
    code, _, err = run("evaluate", str(write(tmp_path, patient_bundle())), "--as-of", "21/11/2026")
    assert code == 2 and "--as-of" in err
    code, _, err = run("evaluate")
    assert code == 2 and err.count("\n") == 1
    code, _, err = run("evaluate", "--fhir-server", "http://127.0.0.1:9/fhir")
    assert code == 2 and "--patient" in err


def test_same_patient_listed_twice_is_one_patient(tmp_path: Path) -> None:
    bundle = fhir.bundle([fhir.patient("p1"), fhir.patient("p1"), asps()])
    code, _, _ = run("evaluate", str(write(tmp_path, bundle)))
    assert code == 0


def test_patient_id_that_is_not_a_fhir_id_is_refused_before_any_request() -> None:
    code, out, err = run("evaluate", "--fhir-server", "http://127.0.0.1:9/fhir", "--patient", "../metadata")
    assert code == 2 and out == "" and "not a FHIR id" in err


def test_card_suggests_ordering_only_the_panels_whose_labs_are_missing_or_stale(tmp_path: Path) -> None:
    # CBC analytes present and recent; chemistry absent → only the metabolic panel is suggested
    bundle = fhir.bundle([fhir.patient("p1"), asps(), lab("751-8", 3.0, "K/uL"), lab("777-3", 200, "K/uL"),
                          lab("718-7", 12.0, "g/dL", ucum="g/dL")])
    code, out, _ = run("evaluate", str(write(tmp_path, bundle)), "--as-of", "2026-11-21", "--format", "card")
    assert code == 0
    card = json.loads(out)["cards"][0]
    orders = next(s for s in card["suggestions"] if s["label"] == "Order missing labs")
    codes = [a["resource"]["code"]["coding"][0]["code"] for a in orders["actions"]]
    assert codes == ["24323-8"]
