"""The running service against a hostile network client: header floods, slowloris, what reaches the logs,
the patient key, and which browser origins may call it (issue 9, items 4, 8, 9, 12 and CORS).

Most tests run `axiom-cds serve` as a subprocess, exactly as deployed: its uvicorn options, its JSON logs
on stderr (read back from a file) and its settings from the environment are what is tested. The patient
key tests use the in-process service (tests/service_server.py) and the real FHIR server, because they
read the service's database and restart the service on the same database.

Every network test stays on 127.0.0.1; counts and waits are bounded (a socket that is not answered or
closed within a generous bound fails the test; nothing asserts how fast something was).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import create_engine, text

from adapter.fhir_sandbox import free_port
from tests.fhir_server import FhirTestServer
from tests.serve_process import log_records, serve_environment, serve_process
from tests.service_server import AS_OF, ServiceServer, running_service, service_settings

ROOT = Path(__file__).resolve().parents[1]
ISS = "https://ehr.hospital.example"
KEY = ec.generate_private_key(ec.SECP384R1())
JWKS = {"keys": [{**json.loads(ECAlgorithm.to_jwk(KEY.public_key())), "kid": "k1", "alg": "ES384"}]}
HEADER_TIMEOUT_S = 1.0  # what the served service is configured with (AXIOM_HEADER_TIMEOUT_S)
BODY_TIMEOUT_S = 1.0  # AXIOM_BODY_TIMEOUT_S
MAX_HEADER_KB = 32  # AXIOM_MAX_HEADER_KB
CLOSE_BOUND_S = 20.0  # a connection the service should drop must be dropped well within this
LOG_VALUE_BOUND = 300  # no field of a log line is longer than this (with the note of what was cut)
LOG_MESSAGE_BOUND = 1100  # nor its message
SANDBOX = "https://sandbox.cds-hooks.org"


# --------------------------------------------------------------------------- `axiom-cds serve` as a process


@dataclass
class Served:
    base_url: str
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        return log_records(self.log_path)

    def wait_for_log(self, found: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first log record matching `found`; a log line is written just after the response is sent."""
        deadline = time.monotonic() + 10.0
        while True:
            for record in self.log_records():
                if found(record):
                    return record
            if time.monotonic() > deadline:
                raise AssertionError(f"no such log record; the log:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def token(self, path: str, **header: Any) -> str:
        now = int(time.time())
        claims = {"iss": ISS, "aud": self.base_url + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
        return jwt.encode(claims, KEY, algorithm="ES384", headers={"kid": "k1", "typ": "JWT", **header})


def serve_settings(workdir: Path, port: int, **extra: str) -> dict[str, str]:
    return serve_environment(port, AXIOM_DATABASE_URL=f"sqlite:///{workdir / 'cds.db'}",
                             AXIOM_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
                             AXIOM_TRUSTED_ISSUERS=json.dumps([{"iss": ISS, "jwks": JWKS}]),
                             AXIOM_FHIR_SERVERS=json.dumps(["https://fhir.hospital.example/r4"]), **extra)


@contextlib.contextmanager
def serving(workdir: Path, **extra: str) -> Iterator[Served]:
    port = free_port()
    served = Served(f"http://127.0.0.1:{port}", workdir / "serve.log")

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(served.base_url + "/healthz", timeout=1.0).status_code == 200
        return False

    with serve_process([], serve_settings(workdir, port, **extra), served.log_path, ready):
        yield served


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The production service: authentication on, one issuer, default CORS, short client timeouts."""
    with serving(tmp_path_factory.mktemp("serve"), AXIOM_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
                 AXIOM_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S), AXIOM_MAX_HEADER_KB=str(MAX_HEADER_KB)) as running:
        yield running


@pytest.fixture(scope="module", params=["serve", "h11"])
def limited(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served | ServiceServer]:
    """The head limits on each parser uvicorn may use: `serve` as installed here (httptools), and h11 —
    what uvicorn uses where httptools is not installed (the Docker image), run in-process."""
    if request.param == "serve":
        yield request.getfixturevalue("served")
        return
    from adapter.cds import protocol

    settings = service_settings(tmp_path_factory.mktemp("h11"), header_timeout_s=HEADER_TIMEOUT_S,
                                max_header_kb=MAX_HEADER_KB)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(protocol, "protocol_class", lambda: protocol.GuardedH11Protocol)
        with running_service(settings) as service:
            yield service


def healthz_answers(served: Served | ServiceServer) -> bool:
    response = httpx.get(served.base_url + "/healthz", timeout=5.0)
    return response.status_code == 200 and response.json()["status"] == "ok"


# --------------------------------------------------------------------------- raw sockets


def connect(served: Served | ServiceServer) -> socket.socket:
    port = int(served.base_url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=5.0)


def read_until_closed(sock: socket.socket, bound_s: float) -> tuple[bytes, bool]:
    """What the server sent, and whether it closed the connection within `bound_s`."""
    sock.settimeout(bound_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return received, False
    except ConnectionResetError:
        pass
    return received, True


def status_of(response: bytes) -> int | None:
    first = response.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[0].startswith(b"HTTP/") and first[1].isdigit() else None


# --------------------------------------------------------------------------- 4. header floods and slowloris


@pytest.mark.parametrize("size", [MAX_HEADER_KB * 1024 + 1, 1 << 20])
def test_a_header_over_the_limit_is_refused_and_the_service_keeps_answering(
        size: int, limited: Served | ServiceServer) -> None:
    """A request head past AXIOM_MAX_HEADER_KB (just past it, sent in one piece; or 1 MB) is refused —
    431, or 400 from the parser — and the connection closed, however much more the client sends;
    /healthz answers meanwhile."""
    served = limited
    sock = connect(served)
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: "
    head = start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == size

    def flood() -> None:
        with contextlib.suppress(OSError):  # the server closes while we are still sending: expected
            sock.sendall(head)

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    with sock:
        response, closed = read_until_closed(sock, CLOSE_BOUND_S)
    sender.join(CLOSE_BOUND_S)
    assert status_of(response) in (400, 431), response[:200]
    assert closed, "the connection stayed open after the refusal"
    assert healthz_answers(served)


def test_a_head_at_the_limit_is_answered(limited: Served | ServiceServer) -> None:
    """The limit is the whole head: one of exactly AXIOM_MAX_HEADER_KB is served (EHRs send a few KB)."""
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Large: "
    head = start + b"b" * (MAX_HEADER_KB * 1024 - len(start) - 4) + b"\r\n\r\n"
    with connect(limited) as sock:
        sock.sendall(head)
        sock.settimeout(10.0)
        assert status_of(sock.recv(65536)) == 200


def test_slow_and_silent_connections_are_closed_after_the_header_timeout(limited: Served | ServiceServer) -> None:
    """Slowloris: 200 connections that never finish their request head — 180 dribble a header byte
    every 0.2 s, 20 send nothing — are all closed by the service (AXIOM_HEADER_TIMEOUT_S), and
    /healthz answers while they are open."""
    served = limited
    socks = [connect(served) for _ in range(200)]
    dribbling = set(range(20, 200))
    for i in dribbling:
        socks[i].sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    selector = selectors.DefaultSelector()
    for i, sock in enumerate(socks):
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, i)
    try:
        assert healthz_answers(served), "a healthy client is answered while 200 heads are pending"
        open_ = set(range(200))
        statuses: dict[int, int | None] = {}
        deadline = time.monotonic() + CLOSE_BOUND_S
        while open_ and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.2):
                i = key.data
                try:
                    chunk = socks[i].recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionResetError:
                    chunk = b""
                if chunk and i not in statuses:
                    statuses[i] = status_of(chunk)
                if not chunk:
                    open_.discard(i)
                    selector.unregister(socks[i])
            for i in open_ & dribbling:
                with contextlib.suppress(OSError):
                    socks[i].send(b"a")
        assert not open_, f"{len(open_)} of 200 connections without a complete request head were never closed"
        assert set(statuses.values()) <= {408}, statuses  # if anything is said before closing: 408
    finally:
        selector.close()
        for sock in socks:
            sock.close()
    assert healthz_answers(served)


def test_a_connection_idle_after_a_response_is_closed_too(limited: Served | ServiceServer) -> None:
    """The timer starts again after each response: a kept-alive connection that then sends half a head
    is not kept for ever either."""
    with connect(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(10.0)
        assert status_of(sock.recv(65536)) == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        response, closed = read_until_closed(sock, CLOSE_BOUND_S)
    assert closed and status_of(response) in (None, 408), response[:200]


def test_a_body_that_never_arrives_is_answered_408(served: Served) -> None:
    """The same attack on the body: a POST that announces 1,000 bytes and sends 10 gets a 408 after
    AXIOM_BODY_TIMEOUT_S instead of holding the connection for ever."""
    with connect(served) as sock:
        sock.sendall(b"POST /cds-services/axiom-eligibility/feedback HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"feedback\"")
        response, closed = read_until_closed(sock, CLOSE_BOUND_S)
    assert status_of(response) == 408, response[:300]
    assert b"OperationOutcome" in response
    assert closed


# --------------------------------------------------------------------------- 8. the access log


def test_the_access_log_has_no_query_string_token_or_patient_id(served: Served) -> None:
    """One access line per request: method, path without the query, status, duration, request id."""
    secret = "eyJhbGciOiJFUzM4NCJ9.secret-access-token.signature"
    request_id = f"access-{uuid.uuid4().hex[:8]}"
    response = httpx.get(served.base_url + "/cds-services", params={"access_token": secret},
                         headers={"X-Request-ID": request_id}, timeout=5.0)
    assert response.status_code == 401
    path = "/cds-services/axiom-eligibility"
    hook_id = f"access-{uuid.uuid4().hex[:8]}"
    pid = "pid-do-not-log-7f3a"
    hook = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"patientId": pid, "userId": "Practitioner/1"}}
    refused = httpx.post(served.base_url + path + "?patient=" + pid, json=hook, timeout=10.0,
                         headers={"Authorization": f"Bearer {served.token(path)}", "X-Request-ID": hook_id})
    assert refused.status_code == 412  # no Patient prefetched and no fhirServer: authenticated, not evaluated

    line = served.wait_for_log(lambda r: r.get("request_id") == request_id and r["logger"] == "axiom_cds.access")
    assert (line["method"], line["path"], line["status"]) == ("GET", "/cds-services", 401), line
    assert isinstance(line["duration_ms"], int | float)
    hook_line = served.wait_for_log(lambda r: r.get("request_id") == hook_id and r["logger"] == "axiom_cds.access")
    assert (hook_line["method"], hook_line["path"], hook_line["status"]) == ("POST", path, 412), hook_line
    log = served.log_text()
    assert secret not in log and "access_token" not in log, "the query string reached the log"
    assert pid not in log, "the patient id reached the log"
    assert served.token(path).split(".")[0] not in log  # no JWT either


# --------------------------------------------------------------------------- 9. bounded log values


def test_an_attacker_supplied_kid_and_path_are_logged_bounded(served: Served) -> None:
    """A 16,000-character `kid` (unverified, attacker's choice) and a 10,000-character path are
    cut to a bounded length in every log line that carries them."""
    kid_marker = "kidflood"
    kid = kid_marker + "k" * 16_000
    path = "/cds-services"
    bad = httpx.get(served.base_url + path, headers={"Authorization": f"Bearer {served.token(path, kid=kid)}"},
                    timeout=5.0)
    assert bad.status_code == 401
    long_path = "/cds-services/" + "p" * 10_000
    assert httpx.get(served.base_url + long_path, timeout=5.0).status_code in (401, 404)
    served.wait_for_log(lambda r: kid_marker in json.dumps(r))
    served.wait_for_log(lambda r: "ppppp" in str(r.get("path", "")))
    for record in served.log_records():
        for name, value in record.items():
            bound = {"event": LOG_MESSAGE_BOUND, "exception": 10_000}.get(name, LOG_VALUE_BOUND)
            assert len(str(value)) <= bound, (name, str(value)[:200])
    assert "k" * 1000 not in served.log_text() and "p" * 1000 not in served.log_text()


def test_the_bounding_covers_every_formatter() -> None:
    """The bound is applied to the record (a handler filter), so the plain-text format and the
    sandbox's one-line format are bounded too — not only the JSON lines."""
    from adapter.logs import JsonFormatter, bound_values
    from adapter.sandbox import HookLine

    record = logging.LogRecord("axiom_cds", logging.INFO, __file__, 1, "auth refused %s", ("x" * 50_000,), None)
    record.__dict__.update({"reason": "r" * 50_000, "status": 401, "items": ["y" * 50_000]})
    assert bound_values().filter(record)
    for formatter in (JsonFormatter(), logging.Formatter("%(message)s %(reason)s"), HookLine()):
        line = formatter.format(record)
        assert len(line) < LOG_MESSAGE_BOUND + 3 * LOG_VALUE_BOUND + 200, (type(formatter).__name__, len(line))
    assert record.__dict__["status"] == 401, "numbers are left as they are"


# --------------------------------------------------------------------------- CORS: production and sandbox


def preflight(base_url: str, origin: str) -> httpx.Response:
    return httpx.options(base_url + "/cds-services/axiom-eligibility", timeout=5.0, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})


@pytest.mark.parametrize("origin", [SANDBOX, "http://localhost:3000", "http://127.0.0.1:8095", "https://evil.example"])
def test_production_serve_allows_no_browser_origin_by_default(origin: str, served: Served) -> None:
    """`serve` without AXIOM_CORS_ORIGINS: no page — not even the public sandbox, whose signing key is
    public, or a page on a localhost port — may call the service from a browser."""
    response = preflight(served.base_url, origin)
    assert "access-control-allow-origin" not in response.headers, response.headers
    assert response.status_code == 400
    real = httpx.get(served.base_url + "/healthz", headers={"Origin": origin}, timeout=5.0)
    assert "access-control-allow-origin" not in real.headers


def test_production_serve_allows_the_configured_origins_only(tmp_path: Path) -> None:
    """AXIOM_CORS_ORIGINS replaces the default (none); it does not add the sandbox's localhost pages."""
    ehr = "https://ehr.hospital.example"
    with serving(tmp_path, AXIOM_CORS_ORIGINS=json.dumps([ehr])) as running:
        assert preflight(running.base_url, ehr).headers.get("access-control-allow-origin") == ehr
        for other in (SANDBOX, "http://localhost:3000", "http://127.0.0.1:8080", "https://ehr.hospital.example.evil"):
            assert "access-control-allow-origin" not in preflight(running.base_url, other).headers, other


def test_a_configured_origin_pattern_matches_whole_origins_only(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, cors_origins=[], cors_origin_regex=r"https://[a-z]+\.apps\.hospital\.example")
    with running_service(settings) as service:
        app = "https://viewer.apps.hospital.example"
        assert preflight(service.base_url, app).headers.get("access-control-allow-origin") == app
        for other in ("https://viewer.apps.hospital.example.evil.example", "http://localhost:3000", SANDBOX):
            assert "access-control-allow-origin" not in preflight(service.base_url, other).headers, other


@pytest.mark.parametrize(("origin", "allowed"), [
    (SANDBOX, True),
    ("http://localhost:3000", True),
    ("http://127.0.0.1:8095", True),  # the CDS Hooks sandbox built and served on this machine
    ("http://127.0.0.1.evil.example", False),
    ("https://evil.example", False),
])
def test_the_sandbox_allows_the_public_sandbox_and_local_pages(origin: str, allowed: bool, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from adapter.sandbox import sandbox_settings

    for name in ("AXIOM_CONFIG", "AXIOM_CORS_ORIGINS", "AXIOM_CORS_ORIGIN_REGEX"):
        monkeypatch.delenv(name, raising=False)
    settings = sandbox_settings(port=0, as_of=AS_OF, auth_required=False, gc_tuning=False,
                                database_url=f"sqlite:///{tmp_path / 'cds.db'}")
    with running_service(settings) as service:
        response = preflight(service.base_url, origin)
    assert (response.headers.get("access-control-allow-origin") == origin) is allowed, response.headers


def test_the_sandbox_origins_can_be_replaced_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from adapter.sandbox import sandbox_settings

    monkeypatch.delenv("AXIOM_CONFIG", raising=False)
    monkeypatch.setenv("AXIOM_CORS_ORIGINS", '["https://my-sandbox.example"]')
    settings = sandbox_settings(port=0, as_of=AS_OF)
    assert settings.cors_origins == ["https://my-sandbox.example"]


# --------------------------------------------------------------------------- 12. the patient key


def fixture_bundle(name: str) -> dict[str, Any]:
    bundle: dict[str, Any] = json.loads((ROOT / "tests" / "fixtures" / f"{name}.json").read_text())
    return bundle


def patient_id(bundle: dict[str, Any]) -> str:
    (pid,) = [e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    return str(pid)


def renamed(bundle: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A copy of a fixture under other ids (patient and resources)."""
    copy: dict[str, Any] = json.loads(json.dumps(bundle).replace(old, new))
    return copy


def unsalted(fhir_server: str | None, pid: str) -> str:
    """The old key: anyone with a list of candidate ids could recompute it."""
    return hashlib.sha256(f"{fhir_server or '-'}|{pid}".encode()).hexdigest()[:32]


@pytest.fixture
def eligible_patient(fhir_server: FhirTestServer) -> Iterator[str]:
    """A likely-eligible ASPS patient of its own (a renamed fixture), so its suppression touches no other test."""
    old = patient_id(fixture_bundle("asps-likely-eligible"))
    new = f"sec-key-{uuid.uuid4().hex[:8]}"
    with fhir_server.loaded(renamed(fixture_bundle("asps-likely-eligible"), old, new)):
        yield new


def hook(pid: str, fhir_server: str) -> dict[str, Any]:
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir_server,
            "context": {"patientId": pid, "userId": "Practitioner/1"}}


def stored_keys(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text("SELECT patient_key FROM issued_cards"))]
    finally:
        engine.dispose()


def card_for(service: ServiceServer, pid: str, fhir_base: str) -> list[dict[str, Any]]:
    response = httpx.post(service.hook_url, json=hook(pid, fhir_base), timeout=30.0)
    assert response.status_code == 200, response.text[:300]
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


def test_the_stored_and_logged_patient_key_cannot_be_recomputed_from_the_id(
        tmp_path: Path, fhir_server: FhirTestServer, eligible_patient: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = service_settings(tmp_path)
    with caplog.at_level(logging.INFO, logger="axiom_cds"), running_service(settings) as service:
        assert len(card_for(service, eligible_patient, fhir_server.base_url)) == 1
        service.flush_writes()
    (key,) = stored_keys(settings.database_url)
    assert key != unsalted(fhir_server.base_url, eligible_patient)
    logged = [r.__dict__["patient_hash"] for r in caplog.records if "patient_hash" in r.__dict__]
    assert logged == [key], "the log carries the same keyed value as the database, and nothing else"


def test_each_deployment_has_its_own_key_and_keeps_it_across_restarts(
        tmp_path: Path, fhir_server: FhirTestServer, eligible_patient: str) -> None:
    """The secret is generated at first start and stored in the database: a restart (or another replica
    on the same database) keys the patient the same way, so a dismissed card stays dismissed; another
    deployment (another database) keys it differently."""
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    with running_service(service_settings(tmp_path / "a", database_url=database)) as first:
        (card,) = card_for(first, eligible_patient, fhir_server.base_url)
        first.flush_writes()
        feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                                  "outcomeTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                  "overrideReason": {"reason": card["overrideReasons"][0]}}]}
        assert httpx.post(first.feedback_url, json=feedback, timeout=10.0).status_code == 200
    with running_service(service_settings(tmp_path / "b", database_url=database)) as restarted:
        assert card_for(restarted, eligible_patient, fhir_server.base_url) == [], \
            "after a restart the overridden card came back: the key changed"
    (tmp_path / "c").mkdir()
    other = service_settings(tmp_path / "c")
    with running_service(other) as elsewhere:
        assert len(card_for(elsewhere, eligible_patient, fhir_server.base_url)) == 1
        elsewhere.flush_writes()
    assert stored_keys(other.database_url)[0] != stored_keys(database)[0]


def test_a_configured_secret_keys_replicas_alike(tmp_path: Path, fhir_server: FhirTestServer,
                                                 eligible_patient: str) -> None:
    """AXIOM_PATIENT_KEY_SECRET (from the hospital's secret store): two databases, one key; another
    secret, another key."""
    keys = []
    for name, secret in (("a", "correct horse battery staple 1"), ("b", "correct horse battery staple 1"),
                         ("c", "another deployment's long secret")):
        (tmp_path / name).mkdir()
        settings = service_settings(tmp_path / name, patient_key_secret=secret)
        with running_service(settings) as service:
            assert len(card_for(service, eligible_patient, fhir_server.base_url)) == 1
            service.flush_writes()
        keys.append(stored_keys(settings.database_url)[0])
    assert keys[0] == keys[1] != keys[2]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/cds-services/axiom-eligibility/"), ("GET", "/cds-services/"),
    ("POST", "/cds-services/axiom-eligibility/feedback/"),
])
def test_a_trailing_slash_is_not_redirected_to_the_host_header(served: Served, method: str, path: str) -> None:
    """Starlette would answer 307 to `http://<Host header>/cds-services/…`, before authentication: a client
    following it re-POSTs the prefetch (patient data) to whatever server the Host header named."""
    response = httpx.request(method, served.base_url + path, json={}, follow_redirects=False,
                             headers={"Host": "evil.example", "X-Forwarded-Proto": "https"})
    assert response.status_code in (401, 404), response.status_code
    assert "location" not in response.headers
    assert "evil.example" not in response.text
