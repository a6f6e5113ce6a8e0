"""Authentication guarantees of the running service (issue 9), each attacked through real HTTP.

The JWT audience comes from configuration, never from the caller's Host header; an `exp` past year
9999 (or infinite) is a bare 401, not a 500; a token may not live longer than AXIOM_JWT_MAX_LIFETIME_S;
the `Bearer` scheme is case-insensitive (RFC 7235); the issuer example of docs/security.md, loaded as
written, accepts the CDS Hooks sandbox's tokens (which carry a `jku`) from its `jwks_url` and never
fetches a `jku`; trusting the public sandbox preset is announced loudly at start.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm
from typer.testing import CliRunner

from adapter.cds.settings import IssuerConfig, Settings
from tests.service_server import ServiceServer, running_service, service_settings

ROOT = Path(__file__).parents[1]
ISS = "https://ehr.hospital.example"
PUBLIC = "https://cds.hospital.example"  # AXIOM_PUBLIC_BASE_URL: where EHRs reach the service (a proxy)
DISCOVERY = "/cds-services"
KEY = ec.generate_private_key(ec.SECP384R1())
ATTACKER_KEY = ec.generate_private_key(ec.SECP384R1())


def jwks(private: Any, kid: str = "k1") -> dict[str, Any]:
    return {"keys": [{**json.loads(ECAlgorithm.to_jwk(private.public_key())), "kid": kid, "alg": "ES384"}]}


def token(aud: str = PUBLIC + DISCOVERY, *, key: Any = KEY, headers: dict[str, Any] | None = None,
          **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **claims}
    return jwt.encode(body, key, algorithm="ES384", headers={"kid": "k1", "typ": "JWT", **(headers or {})})


def raw_token(payload_json: str) -> str:
    """A token signed by the trusted key whose payload is this exact JSON text (e.g. a number json.dumps
    cannot write, such as 1e999 — which Python's JSON parser reads as infinity)."""
    return jwt.api_jws.encode(payload_json.encode(), KEY, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})


def bearer(t: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {t}"}


def auth_settings(workdir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"auth_required": True, "public_base_url": PUBLIC,
                              "trusted_issuers": [IssuerConfig(iss=ISS, jwks=jwks(KEY))]}
    return service_settings(workdir, **{**values, **overrides})


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceServer]:
    with running_service(auth_settings(tmp_path_factory.mktemp("security-auth"))) as server:
        yield server


def get_discovery(service: ServiceServer, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(service.base_url + DISCOVERY, headers=headers)


def assert_bare_401(response: httpx.Response) -> None:
    assert response.status_code == 401, (response.status_code, response.text[:300])
    assert response.content == b"", "a 401 says nothing about why"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No AXIOM_* setting from the developer's shell leaks into a test that builds Settings from the
    environment. `serve` writes its options into os.environ itself: setting then deleting each such name
    here makes monkeypatch restore it (absent) afterwards, so no later test sees them."""
    for name in [n for n in os.environ if n.startswith("AXIOM_")]:
        monkeypatch.delenv(name)
    for name in ("AXIOM_HOST", "AXIOM_PORT", "AXIOM_WORKERS", "AXIOM_AUTH_REQUIRED"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def no_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """`serve` checks the configuration, then hands over to uvicorn: record that hand-over instead."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("adapter.cds.shutdown.serve_until_stopped", lambda config: calls.append(vars(config)))
    return calls


# --------------------------------------------------------------------------- aud: from configuration only


def test_a_token_for_another_cds_service_is_refused_whatever_host_the_caller_claims(service: ServiceServer) -> None:
    """The attack: a token an EHR issued to another CDS service, replayed here with that service's name
    as Host. The audience is the configured public URL, so the Host header cannot make it fit."""
    other = "https://other-cds.example"
    assert_bare_401(get_discovery(service, {**bearer(token(other + DISCOVERY)), "Host": "other-cds.example"}))
    # and the token for this service's public URL is accepted whatever the Host (the proxy may rewrite it)
    assert get_discovery(service, {**bearer(token()), "Host": "other-cds.example"}).status_code == 200
    local = service.base_url + DISCOVERY  # the address the request really reached is not the audience either
    assert_bare_401(get_discovery(service, bearer(token(local))))


def test_auth_on_without_a_public_base_url_does_not_start(tmp_path: Path) -> None:
    from adapter.cds.app import create_app
    with pytest.raises(ValueError, match="AXIOM_PUBLIC_BASE_URL"):
        create_app(auth_settings(tmp_path, public_base_url=None))


def test_serve_without_a_public_base_url_exits_2_with_one_line(clean_env: pytest.MonkeyPatch,
                                                               no_uvicorn: list[dict[str, Any]]) -> None:
    from adapter.cli import app
    clean_env.setenv("AXIOM_TRUSTED_ISSUERS", json.dumps([{"iss": ISS, "jwks": jwks(KEY)}]))
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2, result.output
    assert not no_uvicorn, "the service must not start"
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("axiom-cds: error:") and "AXIOM_PUBLIC_BASE_URL" in line


def test_serve_with_no_auth_needs_no_public_base_url(clean_env: pytest.MonkeyPatch,
                                                     no_uvicorn: list[dict[str, Any]]) -> None:
    from adapter.cli import app
    result = CliRunner().invoke(app, ["serve", "--no-auth"])
    assert result.exit_code == 0, result.output
    assert len(no_uvicorn) == 1, "the local sandbox mode starts as before"


def test_a_public_base_url_that_is_not_an_absolute_http_url_stops_the_service(clean_env: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError
    for typo in ("cds.hospital.example", "ftp://cds.hospital.example", "https://cds.hospital.example/?x=1"):
        clean_env.setenv("AXIOM_PUBLIC_BASE_URL", typo)
        with pytest.raises(ValidationError, match="public_base_url"):
            Settings()
    clean_env.setenv("AXIOM_PUBLIC_BASE_URL", "https://cds.hospital.example/axiom/")
    assert Settings().public_base_url == "https://cds.hospital.example/axiom"


# --------------------------------------------------------------------------- exp and token lifetime


@pytest.mark.parametrize("exp", ["253402300800", "100000000000000000000", "1e999", "-1e999"])
def test_an_exp_past_year_9999_is_a_bare_401_not_a_500(service: ServiceServer, exp: str) -> None:
    """253402300800 is 10000-01-01T00:00:00Z; 1e999 is read as infinity."""
    payload = (f'{{"iss": "{ISS}", "aud": "{PUBLIC}{DISCOVERY}", "iat": {int(time.time())}, "exp": {exp}, '
               f'"jti": "{uuid.uuid4()}"}}')
    assert_bare_401(get_discovery(service, bearer(raw_token(payload))))
    assert httpx.get(service.base_url + "/healthz").status_code == 200


def test_a_token_living_longer_than_the_default_maximum_is_refused(service: ServiceServer) -> None:
    """Default AXIOM_JWT_MAX_LIFETIME_S = 3600: an hour is accepted, a second more is not, and neither is
    a token valid for a century (a stolen one would otherwise be good until then)."""
    now = int(time.time())
    assert get_discovery(service, bearer(token(iat=now, exp=now + 3600))).status_code == 200
    assert_bare_401(get_discovery(service, bearer(token(iat=now, exp=now + 3601))))
    assert_bare_401(get_discovery(service, bearer(token(iat=now, exp=now + 100 * 365 * 86400))))
    # the lifetime is exp − iat: an iat set back in time does not make a long token short
    assert_bare_401(get_discovery(service, bearer(token(iat=now - 3000, exp=now + 1000))))


def test_the_maximum_token_lifetime_is_a_setting(tmp_path: Path) -> None:
    now = int(time.time())
    with running_service(auth_settings(tmp_path, jwt_max_lifetime_s=300)) as strict:
        assert get_discovery(strict, bearer(token(iat=now, exp=now + 300))).status_code == 200  # the spec's 5 min
        assert_bare_401(get_discovery(strict, bearer(token(iat=now, exp=now + 600))))


# --------------------------------------------------------------------------- the Bearer scheme


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(service: ServiceServer, scheme: str) -> None:
    assert get_discovery(service, bearer(token(), scheme)).status_code == 200


@pytest.mark.parametrize("header", ["Basic {t}", "Bearer{t}", "Bearer", "{t}", "Bearers {t}"])
def test_anything_but_the_bearer_scheme_and_a_token_is_refused(service: ServiceServer, header: str) -> None:
    assert_bare_401(get_discovery(service, {"Authorization": header.format(t=token())}))


# --------------------------------------------------------------------------- the documented issuer example


def documented_config() -> str:
    """The YAML example of docs/security.md ("Configuring issuers"), exactly as written."""
    text = (ROOT / "docs" / "security.md").read_text()
    blocks: list[str] = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    (block,) = [b for b in blocks if "trusted_issuers:" in b]
    return block


def test_the_documented_issuer_example_accepts_sandbox_style_tokens_from_its_jwks_url(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CDS Hooks sandbox sends a `jku` header naming its own key set. With the issuer configured as
    the docs show (a jwks_url), the configured key set is authoritative: the token verifies against it,
    whatever its jku says, and a jku is never fetched — an attacker's jku with the attacker's key set
    gets a 401 and no request."""
    config_text = documented_config()
    config = yaml.safe_load(config_text)
    ehr = config["trusted_issuers"][0]
    assert "allowed_jku" not in ehr or ehr["allowed_jku"] == [], "the example's first issuer relies on jwks_url"
    (tmp_path / "axiom.yaml").write_text(config_text)
    monkeypatch.setenv("AXIOM_CONFIG", str(tmp_path / "axiom.yaml"))
    settings = service_settings(tmp_path, auth_required=True)  # test-only: database, date, log level
    assert settings.trusted_issuers[0].jwks_url == ehr["jwks_url"]  # the service reads the example

    public = config["public_base_url"].rstrip("/")
    attacker_jku = "https://attacker.example/jwks.json"

    def signed(jku: str, key: Any = KEY) -> dict[str, str]:
        now = int(time.time())
        claims = {"iss": ehr["iss"], "aud": public + DISCOVERY, "iat": now, "exp": now + 300,
                  "jti": str(uuid.uuid4()), "tenant": ehr.get("tenant"), "sub": ehr.get("client_id")}
        return bearer(jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1", "typ": "JWT", "jku": jku}))

    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()  # the test's own calls to the running service
        ehr_keys = mock.get(ehr["jwks_url"]).mock(return_value=httpx.Response(200, json=jwks(KEY)))
        attacker_keys = mock.get(attacker_jku).mock(return_value=httpx.Response(200, json=jwks(ATTACKER_KEY)))
        with running_service(settings) as server:
            url = server.base_url + DISCOVERY
            assert httpx.get(url, headers=signed(ehr["jwks_url"])).status_code == 200  # the sandbox's way
            assert httpx.get(url, headers=signed(attacker_jku)).status_code == 200  # jku ignored, not refused
            assert_bare_401(httpx.get(url, headers=signed(attacker_jku, ATTACKER_KEY)))
        assert ehr_keys.called
        assert not attacker_keys.called, "a token's jku must never be fetched when a key set is configured"


def test_an_issuer_with_a_key_set_and_a_jku_allow_list_does_not_start(tmp_path: Path) -> None:
    """Two sources of keys for one issuer would need a rule nobody reads; one is refused at start."""
    from adapter.cds.app import create_app
    both = IssuerConfig(iss=ISS, jwks_url="https://ehr.hospital.example/jwks.json",
                        allowed_jku=["https://ehr.hospital.example/jwks.json"])
    with pytest.raises(ValueError, match="allowed_jku"):
        create_app(auth_settings(tmp_path, trusted_issuers=[both]))


# --------------------------------------------------------------------------- the public sandbox preset


def test_trusting_the_public_sandbox_preset_warns_loudly_at_start(tmp_path: Path) -> None:
    """`axiom-cds serve` for real: a plain warning on stderr before start, and a warning in the log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AXIOM_")}
    env.update({"AXIOM_TRUST_PRESETS": '["cds-hooks-sandbox"]', "AXIOM_PUBLIC_BASE_URL": "http://127.0.0.1:8080",
                "AXIOM_DATABASE_URL": f"sqlite:///{tmp_path / 'cds.db'}", "AXIOM_PORT": "0",
                "AXIOM_GC_TUNING": "false"})
    proc = subprocess.Popen([sys.executable, "-m", "adapter.cli", "serve"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if "Application startup complete" in line:
                started.set()
        started.set()  # the process ended

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        started.wait(60)
    finally:
        proc.terminate()
        proc.wait(10)
        reader.join(10)
    assert any("Application startup complete" in line for line in lines), lines
    plain = [line for line in lines if line.startswith("WARNING:") and "cds-hooks-sandbox" in line]
    assert plain and "private key" in plain[0] and "never" in plain[0].lower(), lines
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(r["level"] == "warning" and "cds-hooks-sandbox" in r["event"] for r in logged), logged


# --------------------------------------------------------------------------- one visible auth dependency


def test_every_cds_route_requires_a_caller_and_tests_can_stand_in_for_one(tmp_path: Path) -> None:
    """Authentication is one dependency, `require_caller`, on every CDS Hooks route (health stays open);
    overriding it is how a test calls a route as a verified EHR without minting tokens."""
    from adapter.cds.app import create_app
    from adapter.cds.deps import Caller, require_caller
    app = create_app(auth_settings(tmp_path))
    cds = [(method.upper(), path) for path, operations in app.openapi()["paths"].items()
           for method in operations if path.startswith("/cds-services")]
    assert sorted(cds) == [("GET", "/cds-services"), ("POST", "/cds-services/axiom-eligibility"),
                           ("POST", "/cds-services/axiom-eligibility/feedback")]
    with TestClient(app) as client:
        for method, path in cds:
            assert client.request(method, path, json={}).status_code == 401, path
        assert client.get("/healthz").status_code == 200
        app.dependency_overrides[require_caller] = lambda: Caller(ISS, ())
        assert client.get(DISCOVERY).json()["services"][0]["id"] == "axiom-eligibility"
        for method, path in cds[1:]:
            assert client.request(method, path, json={}).status_code == 400, path  # past auth: the body is checked
