"""CDS Hooks JWT authentication through HTTP: every endpoint guarded, bare 401s, CORS still answered.

The service runs as behind a reverse proxy: EHRs address it at PUBLIC (AXIOM_PUBLIC_BASE_URL, the base
of every token's aud) while the test reaches it on 127.0.0.1."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from adapter.cds.settings import IssuerConfig, Settings
from adapter.store import Store
from tests.service_server import ServiceServer, running_service, service_settings

ISS = "https://ehr.hospital.example"
PUBLIC = "https://cds.hospital.example"
KEY = ec.generate_private_key(ec.SECP384R1())
JWKS = {"keys": [{**json.loads(ECAlgorithm.to_jwk(KEY.public_key())), "kid": "k1", "alg": "ES384"}]}
HOOK = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"patientId": "nobody", "userId": "Practitioner/1"}}


def aud(path: str) -> str:
    return PUBLIC + path


def token(aud: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **claims}
    return jwt.encode(body, KEY, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceServer]:
    workdir: Path = tmp_path_factory.mktemp("auth")
    settings: Settings = service_settings(workdir, auth_required=True, public_base_url=PUBLIC,
                                          trusted_issuers=[IssuerConfig(iss=ISS, jwks=JWKS)],
                                          cors_origins=["https://sandbox.cds-hooks.org"])  # a browser EHR
    with running_service(settings) as server:
        yield server


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def test_every_cds_endpoint_refuses_a_call_without_a_token(service: ServiceServer) -> None:
    base = service.base_url
    for method, path, body in (("GET", "/cds-services", None), ("POST", "/cds-services/axiom-eligibility", HOOK),
                               ("POST", "/cds-services/axiom-eligibility/feedback", {"feedback": []})):
        response = httpx.request(method, base + path, json=body)
        assert response.status_code == 401, path
        assert response.content == b"", "a 401 says nothing about why"
    assert httpx.get(base + "/healthz").status_code == 200  # liveness stays open for orchestrators


def test_a_valid_token_for_the_exact_url_is_accepted(service: ServiceServer) -> None:
    url = service.base_url + "/cds-services"
    response = httpx.get(url, headers=bearer(token(aud("/cds-services"))))
    assert response.status_code == 200
    assert response.json()["services"][0]["id"] == "axiom-eligibility"


def test_a_token_for_another_endpoint_is_refused(service: ServiceServer) -> None:
    hook = service.base_url + "/cds-services/axiom-eligibility"
    assert httpx.post(hook, json=HOOK, headers=bearer(token(aud("/cds-services")))).status_code == 401


def test_a_replayed_token_is_refused(service: ServiceServer) -> None:
    url = service.base_url + "/cds-services"
    once = token(aud("/cds-services"))
    assert httpx.get(url, headers=bearer(once)).status_code == 200
    assert httpx.get(url, headers=bearer(once)).status_code == 401


def test_replay_protection_is_shared_through_the_database(service: ServiceServer, tmp_path: Path) -> None:
    """Another worker or replica sharing the database sees the same jti as already used."""
    url = service.base_url + "/cds-services"
    t = token(aud("/cds-services"))
    assert httpx.get(url, headers=bearer(t)).status_code == 200
    jti = jwt.decode(t, options={"verify_signature": False})["jti"]
    store = Store(service.settings.database_url)
    from datetime import UTC, datetime, timedelta
    assert store.remember_jti(ISS, jti, datetime.now(UTC) + timedelta(hours=1)) is False
    store.close()


def test_expired_and_foreign_tokens_are_refused(service: ServiceServer) -> None:
    url = service.base_url + "/cds-services"
    now = int(time.time())
    assert httpx.get(url, headers=bearer(token(aud("/cds-services"), iat=now - 3600, exp=now - 3000))).status_code \
        == 401
    assert httpx.get(url, headers=bearer(token(aud("/cds-services"), iss="https://evil.example"))).status_code == 401


def test_authenticated_hook_is_evaluated(service: ServiceServer) -> None:
    """Past authentication the hook is evaluated: with no Patient prefetched and no fhirServer there is
    nobody to advise on, and the 412 says so."""
    url = service.base_url + "/cds-services/axiom-eligibility"
    response = httpx.post(url, json=HOOK, headers=bearer(token(aud("/cds-services/axiom-eligibility"))))
    assert response.status_code == 412
    (issue,) = response.json()["issue"]
    assert response.json()["resourceType"] == "OperationOutcome"
    assert issue["severity"] == "error" and issue["code"] == "not-found"
    assert "Patient/nobody was not prefetched" in issue["diagnostics"]


def test_cors_preflight_needs_no_token_and_401s_carry_cors_headers(service: ServiceServer) -> None:
    origin = "https://sandbox.cds-hooks.org"
    url = service.base_url + "/cds-services/axiom-eligibility"
    preflight = httpx.options(url, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    refused = httpx.post(url, json=HOOK, headers={"Origin": origin})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == origin


def test_public_base_url_is_the_audience_behind_a_proxy(tmp_path: Path) -> None:
    public = "https://cds.hospital.example/axiom"
    settings = service_settings(tmp_path, auth_required=True, trusted_issuers=[IssuerConfig(iss=ISS, jwks=JWKS)],
                                public_base_url=public)
    with running_service(settings) as server:
        local = server.base_url + "/cds-services"
        assert httpx.get(local, headers=bearer(token(public + "/cds-services"))).status_code == 200
        assert httpx.get(local, headers=bearer(token(local))).status_code == 401


def test_service_refuses_to_start_with_auth_on_and_no_issuer(tmp_path: Path) -> None:
    from adapter.cds.app import create_app
    with pytest.raises(ValueError, match="no trusted issuer"):
        create_app(service_settings(tmp_path, auth_required=True))


async def test_concurrent_replay_checks_are_batched_and_a_duplicate_is_refused_once(tmp_path: Path) -> None:
    """64 requests at once, 8 of them replaying another's jti: 56 new, 8 refused, whatever the batching."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from adapter.cds.replay import ReplayGuard
    store = Store(f"sqlite:///{tmp_path / 'jti.db'}")
    guard = ReplayGuard(store)
    expires = datetime.now(UTC) + timedelta(hours=1)
    jtis = [f"jti-{i}" for i in range(56)] + [f"jti-{i}" for i in range(8)]
    results = await asyncio.gather(*(guard.is_new(ISS, j, expires) for j in jtis))
    assert sum(results) == 56
    assert await guard.is_new(ISS, "jti-3", expires) is False  # and later, still a replay
    store.close()


def test_an_issuers_own_fhir_server_list_holds_its_hooks(tmp_path: Path) -> None:
    """Each EHR may name only its own FHIR servers; an issuer without a list falls back to the
    service-wide one (here: none, so anything)."""
    other_iss = "https://other-ehr.example"
    unreachable = "http://127.0.0.1:9/fhir"  # the discard port: a call there fails at once
    settings = service_settings(tmp_path, auth_required=True, public_base_url=PUBLIC, trusted_issuers=[
        IssuerConfig(iss=ISS, jwks=JWKS, fhir_servers=["https://fhir.hospital.example/r4"]),
        IssuerConfig(iss=other_iss, jwks=JWKS)])
    with running_service(settings) as server:
        url = server.base_url + "/cds-services/axiom-eligibility"
        body = {**HOOK, "fhirServer": unreachable}
        held = httpx.post(url, json=body, headers=bearer(token(aud("/cds-services/axiom-eligibility"))))
        assert held.status_code == 412
        assert "not one this service is allowed to call" in held.json()["issue"][0]["diagnostics"]
        tried = httpx.post(url, json=body, headers=bearer(token(aud("/cds-services/axiom-eligibility"),
                                                                iss=other_iss)))
        assert tried.status_code == 412  # called, and could not reach it
        assert "cannot reach the FHIR server" in tried.json()["issue"][0]["diagnostics"]
