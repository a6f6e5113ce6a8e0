"""Generated input never produces a server error: Hypothesis hook requests and prefetch Bundles, and a
bounded schemathesis run over the service's own OpenAPI description."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core import NOT_SET

from adapter.cds.app import create_app
from tests.service_server import service_settings

EXAMPLES = 60  # bounded for CI


def make_app(tmp: Path) -> FastAPI:
    return create_app(service_settings(tmp))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(make_app(tmp_path_factory.mktemp("fuzz")), raise_server_exceptions=False) as c:
        yield c


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=20)

hook_requests = st.fixed_dictionaries({}, optional={
    "hook": st.one_of(st.just("patient-view"), json_values),
    "hookInstance": st.one_of(st.just(str(uuid.uuid4())), json_values),
    "fhirServer": st.one_of(st.just("http://127.0.0.1:9/fhir"), json_values),
    "fhirAuthorization": st.one_of(st.fixed_dictionaries({"access_token": st.text(max_size=8),
                                                          "token_type": st.sampled_from(["Bearer", "MAC"])}),
                                   json_values),
    "context": st.one_of(st.fixed_dictionaries({"patientId": st.one_of(st.just("p1"), json_values)}), json_values),
    "prefetch": st.one_of(st.dictionaries(st.sampled_from(["patient", "labs", "conditions", "x"]), json_values,
                                          max_size=3), json_values),
})


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=hook_requests)
def test_generated_hook_requests_never_cause_a_server_error(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/cds-services/axiom-eligibility", json=body)
    assert response.status_code in (200, 400, 412), response.text
    if response.status_code != 200:
        assert response.json()["resourceType"] == "OperationOutcome"


codes = st.sampled_from(["777-3", "751-8", "718-7", "1975-2", "1920-8", "2160-0", "29463-7", "8302-2", "89247-1",
                         "20447-9", "29541-0", "21889-1", "97509-4", "82810-3", "9999-9"])
units = st.one_of(st.none(), st.sampled_from(["K/uL", "10*9/L", "mg/dL", "umol/L", "g/L", "%", "kelvin", "", "{x}",
                                              "mL/min/1.73.m2", "µmol/L", "U/L", "[IU]/L"]), st.text(max_size=6))
dates = st.one_of(st.none(), st.sampled_from(["2026-11-14", "2026-11", "2026", "2026-11-20T99:99", "garbage",
                                              "2026-11-14T08:00:00+05:00", "1900-01-01", "3000-01-01"]))
observations = st.builds(
    lambda code, value, unit, comparator, when, status, high: {
        "resourceType": "Observation", "id": str(uuid.uuid4())[:8], "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": "Patient/p1"},
        **({"effectiveDateTime": when} if when is not None else {}),
        **({"valueQuantity": {k: v for k, v in {"value": value, "unit": unit, "code": unit,
                                                "comparator": comparator}.items() if v is not None}}
           if value is not None else {}),
        **({"referenceRange": [{"high": {"value": high}}]} if high is not None else {}),
    },
    codes, st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 10**7),
                     st.text(max_size=4)),
    units, st.one_of(st.none(), st.sampled_from(["<", "<=", ">", ">=", "~", ""])), dates,
    st.sampled_from(["final", "preliminary", "entered-in-error", "amended", "bogus"]),
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.just(0)))
conditions = st.builds(
    lambda system, code, clinical: {
        "resourceType": "Condition", "id": str(uuid.uuid4())[:8], "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": system, "code": code}]},
        **({"clinicalStatus": {"coding": [{"code": clinical}]}} if clinical else {})},
    st.sampled_from(["http://terminology.hl7.org/CodeSystem/icd-o-3", "http://hl7.org/fhir/sid/icd-10-cm",
                     "http://snomed.info/sct"]),
    st.sampled_from(["9581/3", "9581", "8890/3", "C78.7", "E80.4", "86406008", "77386006", "", "x/y", "9581/9"]),
    st.sampled_from([None, "active", "resolved", "zzz"]))
birth_dates = st.sampled_from(["1990-05-02", "2014", "2014-11", "2026-12-01", "bad"])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(obs=st.lists(observations, max_size=12), conds=st.lists(conditions, max_size=4), birth=birth_dates,
       gender=st.sampled_from(["female", "male", "other", None]))
def test_generated_prefetch_bundles_never_cause_a_server_error(client: TestClient, obs: list[dict[str, Any]],
                                                               conds: list[dict[str, Any]], birth: str,
                                                               gender: str | None) -> None:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": "p1", "birthDate": birth}
    if gender:
        patient["gender"] = gender
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": "p1"},
            "prefetch": {"patient": patient,
                         "labs": {"resourceType": "Bundle", "type": "searchset",
                                  "entry": [{"resource": o} for o in obs]},
                         "conditions": {"resourceType": "Bundle", "type": "searchset",
                                        "entry": [{"resource": c} for c in conds]}}}
    response = client.post("/cds-services/axiom-eligibility", json=body)
    # 412 only for a Patient that is not valid FHIR (an unreadable birth date)
    assert response.status_code in (200, 412), response.text
    if response.status_code == 412:
        assert birth == "bad"


schema = schemathesis.openapi.from_asgi("/openapi.json", make_app(Path(tempfile.mkdtemp(prefix="axiom-openapi-"))))
schema.config.generation.update(max_examples=25)


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_openapi_operations_never_return_a_server_error(case: schemathesis.Case, client: TestClient) -> None:
    body = case.body if case.body is not NOT_SET else None
    response = client.request(case.method, case.formatted_path, headers=case.headers, params=case.query,
                              content=body if isinstance(body, bytes) else None,
                              json=body if body is not None and not isinstance(body, bytes) else None)
    assert response.status_code < 500, response.text
