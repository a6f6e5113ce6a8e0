"""Privacy (logs and the audit trail) and hostile input at the HTTP boundary."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from adapter.cds.request import parse_hook_request
from adapter.cli import app as cli_app
from adapter.errors import InputError
from adapter.logs import JsonFormatter
from adapter.synth import fhir
from adapter.synth.fhir import ICDO3
from tests.fhir_server import FhirTestServer
from tests.helpers import decisive_rows
from tests.service_server import ServiceServer, running_service, service_settings

PID = "privacy-p1"
SUBJECT = f"Patient/{PID}"
TOKEN = "s3cr3t-ehr-access-token-" + uuid.uuid4().hex
PLATELETS = 87654  # a value distinctive enough to find in any log line


def patient_bundle() -> dict[str, Any]:
    return fhir.bundle([
        fhir.patient(PID, "1988-03-04", "female", name="Privacytest"),
        fhir.condition("privacy-dx", SUBJECT, ICDO3, "9581/3", "Alveolar soft part sarcoma"),
        fhir.observation("privacy-plt", SUBJECT, "26515-7", "2026-11-14", value=PLATELETS, unit="/uL", ucum="/uL"),
    ])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceServer]:
    with running_service(service_settings(tmp_path_factory.mktemp("privacy"))) as server:
        yield server


def hook(pid: str = PID, **extra: Any) -> dict[str, Any]:
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": pid}, **extra}


def test_logs_carry_ids_and_verdicts_never_the_token_or_clinical_values(
        service: ServiceServer, fhir_server: FhirTestServer, caplog: pytest.LogCaptureFixture) -> None:
    body = hook(fhirServer=fhir_server.base_url,
                fhirAuthorization={"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                   "scope": "patient/*.read", "subject": "x"})
    with fhir_server.loaded(patient_bundle()), caplog.at_level(logging.DEBUG):
        response = httpx.post(service.hook_url, json=body, headers={"X-Request-ID": "req-123"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-123"
    card = response.json()["cards"][0]
    assert "not eligible" in card["summary"]  # 87,654 /uL < 100,000: the platelet value did reach the card
    lines = [JsonFormatter().format(r) for r in caplog.records]
    text = "\n".join(lines)
    for secret in (TOKEN, str(PLATELETS), "87,654", PID, "Privacytest", "1988-03-04"):
        assert secret not in text, f"{secret!r} appeared in the logs"
    evaluated = [json.loads(line) for line in lines if '"hook evaluated"' in line]
    assert len(evaluated) == 1
    event = evaluated[0]
    assert event["hook_instance"] == body["hookInstance"] and event["verdict"] == "not-eligible"
    assert event["request_id"] == "req-123"
    assert len(event["patient_hash"]) == 32 and event["fhir_calls"] >= 1 and "total_ms" in event


def test_every_evaluation_leaves_an_audit_row_that_can_be_exported(
        service: ServiceServer, fhir_server: FhirTestServer) -> None:
    body = hook(fhirServer=fhir_server.base_url)
    with fhir_server.loaded(patient_bundle()):
        assert httpx.post(service.hook_url, json=body).status_code == 200
    service.flush_writes()
    result = CliRunner().invoke(cli_app, ["audit", "export", "--database-url", service.settings.database_url])
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    row = next(r for r in rows if r["hook_instance"] == body["hookInstance"])
    assert row["patient_id"] == PID and row["verdict"] == "not-eligible" and row["cohort"] == "asps"
    assert row["statuses"]["platelets"] == "not-met" and len(row["statuses"]) == 17
    assert row["trial_version"] and row["as_of"] == "2026-11-21" and row["card_shown"] is True
    assert row["issuer"] is None  # authentication is off in this test service
    csv_out = CliRunner().invoke(cli_app, ["audit", "export", "--database-url", service.settings.database_url,
                                           "--format", "csv"])
    assert csv_out.exit_code == 0 and "platelets=not-met" in csv_out.stdout


# ------------------------------------------------------------------ hostile input

@pytest.mark.parametrize(("content", "headers", "status"), [
    (b"{}", {"Content-Type": "text/plain"}, 415),
    (b"hook=patient-view", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    (b"\xff\xfe\xfd not utf-8", {"Content-Type": "application/json"}, 400),
    (b"[" * 5000 + b"]" * 5000, {"Content-Type": "application/json"}, 400),
    (b'{"hook": "patient-view"', {"Content-Type": "application/json"}, 400),
    (b'"just a string"', {"Content-Type": "application/json; charset=utf-8"}, 400),
    (b'{"hook": "patient-view", "hookInstance": "' + b"x" * 100 + b'"}', {"Content-Type": "application/fhir+json"},
     400),
])
def test_hostile_bodies_get_a_clear_4xx_with_an_operation_outcome(
        service: ServiceServer, content: bytes, headers: dict[str, str], status: int) -> None:
    response = httpx.post(service.hook_url, content=content, headers=headers)
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"


GOOD_UUID = "12345678-1234-5678-1234-567812345678"


@pytest.mark.parametrize("instance", [
    "{" + GOOD_UUID + "}", "urn:uuid:" + GOOD_UUID, GOOD_UUID.replace("-", ""), GOOD_UUID + "\n", " " + GOOD_UUID,
])
def test_a_hook_instance_is_a_uuid_as_rfc_4122_writes_it(instance: str) -> None:
    # Python's uuid.UUID takes these too; the value as sent goes into logs and audit rows
    with pytest.raises(InputError, match="hookInstance must be a UUID"):
        parse_hook_request({"hook": "patient-view", "hookInstance": instance, "context": {"patientId": PID}})
    upper = {"hook": "patient-view", "hookInstance": GOOD_UUID.upper(), "context": {"patientId": PID}}
    parsed = parse_hook_request(upper)
    assert parsed.hook_instance == GOOD_UUID.upper()


@pytest.mark.parametrize("server", [
    "http://127.0.0.1:8090/fhir\r\nX-Evil: 1", "http://127.0.0.1:8090/fh ir", " http://127.0.0.1:8090/fhir",
    "http://127.0.0.1:8090/fhir\t", "http://127.0.0.1:8090/f\x00hir",
])
def test_a_fhir_server_with_spaces_or_control_characters_is_refused(server: str) -> None:
    body = {"hook": "patient-view", "hookInstance": GOOD_UUID, "context": {"patientId": PID}, "fhirServer": server}
    with pytest.raises(InputError, match="fhirServer must not hold spaces or control characters"):
        parse_hook_request(body)


def test_request_over_the_size_limit_is_413_even_when_chunked(tmp_path: Path) -> None:
    with running_service(service_settings(tmp_path, max_request_mb=0.01)) as server:
        big = orjson.dumps(hook(prefetch={"labs": {"resourceType": "Bundle", "entry": [{"x": "y" * 20_000}]}}))
        declared = httpx.post(server.hook_url, content=big, headers={"Content-Type": "application/json"})
        assert declared.status_code == 413

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(big), 1000):
                yield big[i:i + 1000]
        chunked = httpx.post(server.hook_url, content=chunks(), headers={"Content-Type": "application/json"})
        assert chunked.status_code == 413
        assert chunked.json()["resourceType"] == "OperationOutcome"


def test_prefetch_of_the_wrong_types_or_another_patient_is_not_used(service: ServiceServer) -> None:
    other = fhir.observation("x-plt", "Patient/someone-else", "26515-7", "2026-11-14", value=20000, unit="/uL")
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished", "subject": {"reference": SUBJECT}}
    bundle = patient_bundle()
    prefetch = {
        "patient": bundle["entry"][0]["resource"],
        "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": [bundle["entry"][1]]},
        "labs": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": other},
                                                                            {"resource": encounter}]},
        "performance": {"resourceType": "Patient", "id": PID},  # the wrong resource type altogether
    }
    response = httpx.post(service.hook_url, json=hook(prefetch=prefetch))
    assert response.status_code == 200
    card = response.json()["cards"][0]
    # the other patient's 20,000 /uL is not this patient's platelet count
    assert decisive_rows(card["detail"])["platelets"][0] == "unknown" and "20,000" not in card["detail"]
    assert "another patient" in card["detail"]
    assert "'performance' came back as Patient, not a Bundle" in card["detail"]


# The prefetch is decoded lazily (adapter/fhir/wire.py): what it skips must still be checked, and a value
# it cannot decode lazily must still be reported as precisely as before.

def _labs_bundle_bytes(resource: bytes) -> bytes:
    body = orjson.dumps(hook(prefetch={"labs": "LABS"}))
    return body.replace(b'"LABS"', b'{"resourceType":"Bundle","type":"searchset","entry":[{"resource":' + resource
                        + b"}]}")


@pytest.mark.parametrize("resource", [
    b'{"resourceType":"Observation","id":"\xff\xfe"}',  # not UTF-8, inside a resource the decoder skips
    b"[" * 3000 + b"]" * 3000,  # nested past any sane depth
    b'{"resourceType":"Observation",}',  # broken JSON deep inside the prefetch
])
def test_broken_json_inside_a_prefetched_resource_is_a_400(service: ServiceServer, resource: bytes) -> None:
    response = httpx.post(service.hook_url, content=_labs_bundle_bytes(resource),
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(("labs", "said"), [
    ("a string", "'labs' came back as str, not a Bundle"),
    ({"resourceType": "Bundle", "entry": {"resource": {}}}, "malformed Bundle (not a FHIR Bundle (entry is not a list"),
    ({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing",
                                                     "diagnostics": "labs system down"}]},
     "'labs' came back as an OperationOutcome (labs system down)"),
])
def test_an_unusable_prefetch_search_makes_its_criteria_unknown_with_the_reason(
        service: ServiceServer, labs: Any, said: str) -> None:
    bundle = patient_bundle()
    prefetch = {"patient": bundle["entry"][0]["resource"], "labs": labs, "not-a-template-of-ours": [1, {"x": None}],
                "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": [bundle["entry"][1]]}}
    response = httpx.post(service.hook_url, json=hook(prefetch=prefetch))
    assert response.status_code == 200
    detail = response.json()["cards"][0]["detail"]
    assert said in detail
    # no platelet count could be read, so the criterion is unknown, never not-met
    status, row = decisive_rows(detail)["platelets"]
    assert status == "unknown" and "data could not be obtained" in row


@pytest.mark.parametrize("young_first", [True, False])
def test_two_versions_of_the_patient_in_her_prefetch_are_not_decided_by_their_order(
        service: ServiceServer, young_first: bool) -> None:
    """A `patient` prefetch sent as a search Bundle holding two different Patient/{id}: born 2020 she is
    not eligible, born 1988 she may be — the order of the entries must not choose. Without a FHIR server to
    read her from, the service cannot supply the data: 412."""
    bundle = patient_bundle()
    real = bundle["entry"][0]["resource"]
    versions = [{**real, "birthDate": "2020-01-01"}, real]
    searchset = {"resourceType": "Bundle", "type": "searchset",
                 "entry": [{"resource": r} for r in (versions if young_first else versions[::-1])]}
    prefetch = {"patient": searchset,
                "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": [bundle["entry"][1]]}}
    response = httpx.post(service.hook_url, json=hook(prefetch=prefetch))
    assert response.status_code == 412, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
