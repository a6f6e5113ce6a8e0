"""`/metrics` and `/readyz` of the running service (issue 10, item 4), over HTTP against the real FHIR server.

What an SRE reads off `/metrics` must be true of the hooks just made: a likely-eligible patient whose
card was shown is counted under its verdict and `card`; the searches made on the allow-listed server are
counted under that server; prefetch keys are counted as the EHR sent them (prefetched), skipped them
(fetched) or sent them unusable (repaired). And nothing in it names a patient or carries a token.
`/readyz` answers for the database: a PostgreSQL database that is gone makes the service "not ready"
(503) while `/healthz` (liveness) stays 200 — PostgreSQL, because an open SQLite file cannot be taken
away from a process reliably (an unlinked file stays readable through its open descriptor).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.fhir_server import FhirTestServer
from tests.postgres_server import PostgresServer
from tests.service_server import ServiceServer

pytestmark = pytest.mark.fhir_server

Json = dict[str, Any]
FIXTURE = Path(__file__).parent / "fixtures" / "asps-likely-eligible.json"
TOKEN = "metrics-token-" + uuid.uuid4().hex
FAILED_SEARCH: Json = {"resourceType": "OperationOutcome", "issue": [
    {"severity": "error", "code": "timeout", "diagnostics": "search timed out"}]}
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


@pytest.fixture(scope="module")
def patient(fhir_server: FhirTestServer) -> Iterator[str]:
    """The likely-eligible ASPS fixture under a unique id, loaded in the FHIR server."""
    bundle: Json = json.loads(FIXTURE.read_text())
    (old,) = [e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    new = f"metrics-{uuid.uuid4().hex[:10]}"
    renamed: Json = json.loads(json.dumps(bundle).replace(old, new))
    with fhir_server.loaded(renamed):
        yield new


def hook(pid: str, fhir_server: str, prefetch: Json | None = None) -> Json:
    body: Json = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir_server,
                  "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                        "scope": "patient/*.read", "subject": "metrics-client"},
                  "context": {"patientId": pid, "userId": "Practitioner/metrics-dr"}}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def samples(text_: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The exposition's samples: (name, labels) → value."""
    out = {}
    for line in text_.splitlines():
        match = SAMPLE.match(line)
        if match is None:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        out[(match["name"], labels)] = float(match["value"])
    return out


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def scrape(http: httpx.Client, service: ServiceServer) -> str:
    response = http.get(f"{service.base_url}/metrics")  # no Authorization: scrapers are not EHRs
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return response.text


def test_a_hook_is_counted_with_its_verdict_its_fhir_requests_and_its_prefetch_sources(
        http: httpx.Client, cds_service_factory: Callable[..., ServiceServer], fhir_server: FhirTestServer,
        patient: str) -> None:
    """No prefetch: every key is fetched from the allow-listed server and a likely-eligible card is shown.
    Then the Patient prefetched and `labs` sent as the EHR's OperationOutcome: patient prefetched, labs
    repaired (sent, unusable, fetched)."""
    base = fhir_server.base_url.rstrip("/")
    service = cds_service_factory(fhir_servers=[base])
    before = samples(scrape(http, service))
    assert value(before, "axiom_hooks_total", verdict="likely-eligible", outcome="card") == 0

    response = http.post(service.hook_url, json=hook(patient, base))
    assert response.status_code == 200, response.text
    assert len(response.json()["cards"]) == 1
    after = samples(scrape(http, service))
    assert value(after, "axiom_hooks_total", verdict="likely-eligible", outcome="card") == 1
    assert value(after, "axiom_hook_seconds_count") == 1
    fetched_ok = value(after, "axiom_fhir_requests_total", server=base, outcome="ok")
    assert fetched_ok >= 2, "the Patient read and the searches on the allow-listed server"
    assert value(after, "axiom_fhir_requests_total", server=base, outcome="error") == 0
    assert value(after, "axiom_fhir_breaker_state", server=base, state="closed") == 1
    # authentication off (the test service): issuer `none`
    assert value(after, "axiom_prefetch_keys_total", issuer="none", key="patient", source="fetched") == 1
    assert value(after, "axiom_prefetch_keys_total", issuer="none", key="labs", source="fetched") == 1

    patient_resource = http.get(f"{base}/Patient/{patient}").json()
    prefetch = {"patient": patient_resource, "labs": FAILED_SEARCH}
    response = http.post(service.hook_url, json=hook(patient, base, prefetch))
    assert response.status_code == 200, response.text
    again = samples(scrape(http, service))
    assert value(again, "axiom_prefetch_keys_total", issuer="none", key="patient", source="prefetched") == 1
    assert value(again, "axiom_prefetch_keys_total", issuer="none", key="labs", source="repaired") == 1
    assert value(again, "axiom_hook_seconds_count") == 2


def test_a_missing_patient_is_counted_as_an_error_and_metrics_name_no_patient(
        http: httpx.Client, cds_service_factory: Callable[..., ServiceServer], fhir_server: FhirTestServer,
        patient: str) -> None:
    """A hook for a patient the server does not have is a 412, counted as `error-412` with a failed read;
    neither patient id nor the bearer token appears anywhere in the exposition."""
    base = fhir_server.base_url.rstrip("/")
    service = cds_service_factory(fhir_servers=[base])
    absent = f"metrics-absent-{uuid.uuid4().hex[:8]}"
    assert http.post(service.hook_url, json=hook(absent, base)).status_code == 412
    assert http.post(service.hook_url, json=hook(patient, base)).status_code == 200
    exposed = scrape(http, service)
    found = samples(exposed)
    assert value(found, "axiom_hooks_total", verdict="none", outcome="error-412") == 1
    assert value(found, "axiom_fhir_requests_total", server=base, outcome="error") >= 1
    for secret in (patient, absent, TOKEN):
        assert secret not in exposed


def test_an_unlisted_server_is_labelled_other_and_metrics_can_be_turned_off(
        http: httpx.Client, cds_service_factory: Callable[..., ServiceServer], fhir_server: FhirTestServer,
        patient: str) -> None:
    """Without an allow-list, the server label is `other` (a caller cannot create series by naming URLs);
    with AXIOM_METRICS_ENABLED=false there is no /metrics at all."""
    base = fhir_server.base_url.rstrip("/")
    service = cds_service_factory()
    assert http.post(service.hook_url, json=hook(patient, base)).status_code == 200
    found = samples(scrape(http, service))
    assert value(found, "axiom_fhir_requests_total", server="other", outcome="ok") >= 2
    assert not any(dict(labels).get("server") == base for _, labels in found)

    off = cds_service_factory(metrics_enabled=False)
    assert http.get(f"{off.base_url}/metrics").status_code == 404


def test_readyz_follows_the_database_and_healthz_stays_live(
        http: httpx.Client, cds_service_factory: Callable[..., ServiceServer],
        postgres_server: PostgresServer) -> None:
    """Ready while the PostgreSQL database answers; its database dropped under it: 503 with an
    OperationOutcome, while liveness stays 200 (a restart would not bring the database back)."""
    url = postgres_server.new_database()
    service = cds_service_factory(database_url=url)
    ready = http.get(f"{service.base_url}/readyz")
    assert ready.status_code == 200, ready.text

    admin = create_engine(postgres_server.url_for("postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{make_url(url).database}" WITH (FORCE)'))
    finally:
        admin.dispose()
    gone = http.get(f"{service.base_url}/readyz")
    assert gone.status_code == 503, gone.text
    body = gone.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error", body
    assert postgres_server.password not in gone.text
    assert http.get(f"{service.base_url}/healthz").status_code == 200
