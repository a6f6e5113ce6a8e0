"""SMART Backend Services (adapter/bulk/auth.py): a private-key JWT for a bearer token, cached, never logged.

The real exchanges run against a test-only authorization server on 127.0.0.1 (tests/smart_auth_server.py)
that verifies each assertion against the registered public key as the spec says an EHR must, and
against sekmet-fhir with its own SMART token endpoint guarding a real `$export`. respx scripts the
answers those servers do not give.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapter.bulk import BackendServicesConfig, afetch_population, public_jwks
from adapter.bulk.auth import ASSERTION_TYPE, REFRESH_MARGIN_S, BackendServicesAuth
from adapter.bulk.errors import AuthError
from adapter.bulk.state import STATE_NAME
from adapter.fhir_sandbox import SekmetServer, running_server
from tests.bulk_servers import BASE, CAPABILITY, FILE, PATIENTS, STATUS, Waits, load, manifest, population
from tests.smart_auth_server import SmartAuthServer

CLIENT = "axiom-screen"


def write_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("keys")
    return {"RS384": write_key(where / "rsa.pem", rsa.generate_private_key(65537, 2048)),
            "ES384": write_key(where / "ec.pem", ec.generate_private_key(ec.SECP384R1())),
            "P-256": write_key(where / "p256.pem", ec.generate_private_key(ec.SECP256R1())),
            "RSA-1024": write_key(where / "rsa1024.pem", rsa.generate_private_key(65537, 1024))}


@pytest.fixture
def auth_server(keys: dict[str, Path]) -> Iterator[SmartAuthServer]:
    clients = {CLIENT: {"keys": [*public_jwks(keys["RS384"])["keys"], *public_jwks(keys["ES384"])["keys"]]}}
    with SmartAuthServer(clients).running() as server:
        yield server


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
async def test_the_assertion_is_what_the_spec_asks_and_the_server_verifies_it(
        auth_server: SmartAuthServer, keys: dict[str, Path], alg: str) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        auth = BackendServicesAuth(BackendServicesConfig(CLIENT, keys[alg]), auth_server.base_url, client)
        token = await auth.token()

    assert token == auth_server.issued[-1]
    sent = auth_server.requests[-1]
    assert sent.error is None and sent.header is not None and sent.claims is not None
    assert sent.header["alg"] == alg and sent.header["kid"] == public_jwks(keys[alg])["keys"][0]["kid"]
    assert sent.claims["iss"] == sent.claims["sub"] == CLIENT and sent.claims["aud"] == auth_server.token_url
    assert 0 < sent.claims["exp"] - sent.claims["iat"] <= 300 and len(sent.claims["jti"]) >= 16
    assert sent.form["grant_type"] == "client_credentials" and sent.form["client_assertion_type"] == ASSERTION_TYPE
    assert sent.form["scope"] == "system/*.rs"


async def test_the_token_is_cached_and_renewed_before_it_expires(auth_server: SmartAuthServer,
                                                                 keys: dict[str, Path]) -> None:
    import time

    clock = Clock(time.time())
    async with httpx.AsyncClient(trust_env=False) as client:
        auth = BackendServicesAuth(BackendServicesConfig(CLIENT, keys["ES384"]), auth_server.base_url, client, clock)
        first = await auth.token()
        assert await auth.token() == first and auth.requests == 1
        clock.now += auth_server.expires_in - REFRESH_MARGIN_S - 1  # still good for a minute and a bit
        assert await auth.token() == first and auth.requests == 1
        clock.now += 2  # within the margin: a long download gets a fresh one before it fails
        second = await auth.token()
        assert second != first and auth.requests == 2
        auth.invalidate()  # after a 401
        assert await auth.token() not in (first, second) and auth.requests == 3
    assert len({r.claims["jti"] for r in auth_server.requests if r.claims}) == 3  # never replayed


async def test_v1_scopes_for_a_server_that_offers_only_v1(keys: dict[str, Path]) -> None:
    clients = {CLIENT: public_jwks(keys["RS384"])}
    with SmartAuthServer(clients, capabilities=("permission-v1",), granted=("system/*.read",)).running() as server:
        async with httpx.AsyncClient(trust_env=False) as client:
            await BackendServicesAuth(BackendServicesConfig(CLIENT, keys["RS384"]), server.base_url, client).token()
    assert [r.form["scope"] for r in server.requests] == ["system/*.read"]


async def test_a_server_refusing_v2_scopes_is_asked_again_with_v1(keys: dict[str, Path]) -> None:
    clients = {CLIENT: public_jwks(keys["RS384"])}
    with SmartAuthServer(clients, granted=("system/*.read",)).running() as server:
        async with httpx.AsyncClient(trust_env=False) as client:
            token = await BackendServicesAuth(BackendServicesConfig(CLIENT, keys["RS384"]), server.base_url,
                                              client).token()
    assert [(r.form["scope"], r.error) for r in server.requests] == [("system/*.rs", "invalid_scope"),
                                                                    ("system/*.read", None)]
    assert token == server.issued[0]


async def test_an_unregistered_key_is_refused_as_invalid_client(keys: dict[str, Path], tmp_path: Path) -> None:
    other = write_key(tmp_path / "other.pem", rsa.generate_private_key(65537, 2048))
    with SmartAuthServer({CLIENT: public_jwks(keys["RS384"])}).running() as server:
        async with httpx.AsyncClient(trust_env=False) as client:
            auth = BackendServicesAuth(BackendServicesConfig(CLIENT, other), server.base_url, client)
            with pytest.raises(AuthError, match=r"refused the client \(401, invalid_client\): no registered key"):
                await auth.token()


async def test_an_alg_the_server_does_not_list_is_not_sent(keys: dict[str, Path]) -> None:
    with SmartAuthServer({CLIENT: public_jwks(keys["ES384"])}, algs=("RS384",)).running() as server:
        async with httpx.AsyncClient(trust_env=False) as client:
            auth = BackendServicesAuth(BackendServicesConfig(CLIENT, keys["ES384"]), server.base_url, client)
            with pytest.raises(AuthError, match="does not accept ES384 assertions"):
                await auth.token()
    assert server.requests == []


@pytest.mark.parametrize(("name", "why"), [("P-256", "ES384 needs P-384"), ("RSA-1024", "at least 2048"),
                                           ("missing", "cannot read the private key")])
def test_unusable_keys_are_refused_before_any_request(keys: dict[str, Path], tmp_path: Path, name: str,
                                                      why: str) -> None:
    path = keys.get(name, tmp_path / "missing.pem")
    with pytest.raises(AuthError, match=why):
        BackendServicesAuth(BackendServicesConfig(CLIENT, path), "https://ehr.example.org/fhir", httpx.AsyncClient())


def test_an_alg_that_does_not_fit_the_key_is_refused(keys: dict[str, Path]) -> None:
    with pytest.raises(AuthError, match="alg ES384 does not fit the key"):
        BackendServicesAuth(BackendServicesConfig(CLIENT, keys["RS384"], alg="ES384"), "https://ehr.example.org/fhir",
                            httpx.AsyncClient())


TOKEN_URL = "https://auth.ehr.example.org/oauth2/token"


@pytest.mark.parametrize(("answer", "why"), [
    (httpx.Response(401, json={"error": "invalid_client", "error_description": "unknown kid"}),
     r"refused the client \(401, invalid_client\): unknown kid"),
    (httpx.Response(200, json={"access_token": "abc", "token_type": "mac"}), "not a bearer token"),
    (httpx.Response(200, json={"token_type": "bearer"}), "no access_token"),
    (httpx.Response(502, text="<html>Bad gateway</html>"), r"refused the client \(502\)"),
])
async def test_token_endpoint_refusals_are_one_line(keys: dict[str, Path], answer: httpx.Response, why: str) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{BASE}/.well-known/smart-configuration").respond(200, json={"token_endpoint": TOKEN_URL})
        mock.post(TOKEN_URL).mock(return_value=answer)
        async with httpx.AsyncClient() as client:
            with pytest.raises(AuthError, match=why):
                await BackendServicesAuth(BackendServicesConfig(CLIENT, keys["RS384"]), BASE, client).token()


@pytest.mark.parametrize(("config", "why"), [
    (httpx.Response(404), "may not offer SMART Backend Services"),
    (httpx.Response(200, json={"authorization_endpoint": "x"}), "names no token_endpoint"),
    (httpx.Response(200, json={"token_endpoint": "http://auth.ehr.example.org/token"}), "must be https"),
    (httpx.Response(200, json={"token_endpoint": TOKEN_URL, "token_endpoint_auth_methods_supported":
                               ["client_secret_basic"]}), "does not accept private_key_jwt"),
])
async def test_discovery_problems_are_said(keys: dict[str, Path], config: httpx.Response, why: str) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{BASE}/.well-known/smart-configuration").mock(return_value=config)
        token = mock.post(url__startswith="http").respond(200, json={"access_token": "x", "token_type": "bearer"})
        async with httpx.AsyncClient() as client:
            with pytest.raises(AuthError, match=why):
                await BackendServicesAuth(BackendServicesConfig(CLIENT, keys["RS384"]), BASE, client).token()
    assert not token.called


async def test_a_401_on_a_file_gets_one_retry_with_a_fresh_token(keys: dict[str, Path], tmp_path: Path) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{BASE}/.well-known/smart-configuration").respond(200, json={"token_endpoint": TOKEN_URL})
        tokens = mock.post(TOKEN_URL).mock(side_effect=[
            httpx.Response(200, json={"access_token": f"token-{i}", "token_type": "bearer", "expires_in": 3600})
            for i in range(3)])
        mock.get(f"{BASE}/metadata").respond(200, json=CAPABILITY)
        mock.get(f"{BASE}/$export").respond(202, headers={"Content-Location": STATUS})
        mock.get(STATUS).respond(200, json=manifest())
        mock.delete(STATUS).respond(202)
        files = mock.get(FILE).mock(side_effect=[httpx.Response(401), httpx.Response(200, content=PATIENTS)])
        download = await afetch_population(BASE, tmp_path, auth=BackendServicesConfig(CLIENT, keys["RS384"]),
                                           sleep=Waits())
    assert download.patients == 2 and tokens.call_count == 2
    assert [c.request.headers["authorization"] for c in files.calls] == ["Bearer token-0", "Bearer token-1"]


# --------------------------------------------------------------------------- a real export behind SMART


@pytest.fixture(scope="module")
def smart_sekmet(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]) -> Iterator[SekmetServer]:
    public = tmp_path_factory.mktemp("public") / "client.pub.pem"
    private = serialization.load_pem_private_key(keys["ES384"].read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    public.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    settings = {"server_auth": {"types": ["smart", "bearer"], "tokens": ["loader-token"], "enforce_scopes": True,
                                "smart_clients": [{"client_id": CLIENT, "public_key_path": str(public),
                                                   "scopes": "system/*.rs"}]}}
    with running_server(tmp_path_factory.mktemp("smart-sekmet"), settings=settings) as sekmet:
        load(sekmet, [bundle for bundle, _ in list(population().values())[:6]], token="loader-token")
        yield sekmet


@pytest.mark.fhir_server
async def test_an_export_behind_smart_backend_services_never_logs_the_token(
        smart_sekmet: SekmetServer, keys: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(trust_env=False) as client:
        auth = BackendServicesAuth(BackendServicesConfig(CLIENT, keys["ES384"]), smart_sekmet.base_url, client)
        download = await afetch_population(smart_sekmet.base_url, tmp_path, auth=auth, client=client)
        token = await auth.token()  # the one cached and used
        assert auth.requests == 1

    assert download.method == "export" and download.patients == 6
    state = (tmp_path / STATE_NAME).read_text()
    assert '"requiresAccessToken": true' in state  # the files were fetched with the token
    assert token not in caplog.text and token not in state
    assert "access token obtained" in caplog.text
    with httpx.Client(trust_env=False) as http:  # and without it the server refuses: the token did the work
        assert http.get(f"{smart_sekmet.base_url}/Patient").status_code == 401
