"""What the service trusts from a FHIR server, attacked over real HTTP (issue 9, items 1, 2, 7, 10).

A hook names its `fhirServer`, and the service calls it with the EHR's bearer token; the allow-list
(`AXIOM_FHIR_SERVERS`) says which servers those may be. Each test below plays a FHIR server (a stub
on 127.0.0.1 answering from a script) or a caller that tries to get past one guarantee:
- a redirect, to another host or to a path outside the allowed base, is never followed (the data
  behind it never builds a card, the token never goes there), for searches, the Patient read and
  the Medication reads; `next` links stay within the base too;
- a Patient read answered with another patient is refused (412), never a card for the wrong person;
- credentials in a FHIR base URL are refused where the URL comes in (hook, CLI, allow-list), so they
  never reach a log, an audit row, or another caller through the shared circuit breaker;
- an absolute subject reference is this patient only on the FHIR server in use (the Bundle's own
  base for a file).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from adapter.cds.settings import Settings
from adapter.cli import app as cli_app
from adapter.fhir.breaker import CircuitBreaker
from adapter.fhir.client import same_server
from adapter.fhir.urls import base_url_problem, names, shown
from adapter.synth import fhir
from tests.helpers import AS_OF, CARD_SECTIONS, PID, SUBJECT, asps, lab
from tests.service_server import ServiceServer

Json = dict[str, Any]
TOKEN = "ehr-token-" + uuid.uuid4().hex  # unique: finding it in a request cannot be a coincidence
SECRET = "s3cret-" + uuid.uuid4().hex[:8]
LOW_PLATELETS = 40  # K/uL: far below the trial's 100 K/uL, so a platelet count used is never "unknown"


# --------------------------------------------------------------------------- a scripted FHIR server


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = None  # JSON; None: no body
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    path: str  # path and query, as received (not decoded)
    authorization: str | None


@dataclass
class StubFhir:
    """A FHIR server stand-in on 127.0.0.1: GETs are answered from `answers` by path (query ignored),
    anything else with an empty searchset; every request is recorded with its Authorization header."""

    prefix: str = "/fhir"
    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        assert self._server is not None, "the stub is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.origin + self.prefix

    @property
    def port(self) -> int:
        return int(self.origin.rsplit(":", 1)[1])

    def reset(self, answers: dict[str, Answer] | None = None) -> None:
        with self._lock:
            self.answers = dict(answers or {})
            self.requests.clear()

    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self.requests)

    @contextlib.contextmanager
    def running(self) -> Iterator[StubFhir]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with stub._lock:
                    stub.requests.append(Seen(self.path, self.headers.get("Authorization")))
                    answer = stub.answers.get(self.path.split("?", 1)[0],
                                              Answer(body={"resourceType": "Bundle", "type": "searchset"}))
                data = orjson.dumps(answer.body) if answer.body is not None else b""
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
                pass

        class QuietServer(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # the service opens one connection per parallel search

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        server = QuietServer(("127.0.0.1", 0), Handler)
        self._server = server
        thread = threading.Thread(target=server.serve_forever, name="stub-fhir", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)


def searchset(base: str, *resources: Json) -> Json:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
                       "search": {"mode": "match"}} for r in resources]}


def redirect(status: int, location: str) -> Answer:
    return Answer(status, None, {"Location": location})


def chart(base: str, prefix: str = "/fhir", *, patient: Json | None = None) -> dict[str, Answer]:
    """An ASPS patient (so the verdict is never "not applicable" and a card is made), no results."""
    return {f"{prefix}/Patient/{PID}": Answer(body=patient or fhir.patient(PID, "1990-05-02", "female")),
            f"{prefix}/Condition": Answer(body=searchset(base, asps()))}


def low_platelets(base: str, subject: str = SUBJECT) -> Json:
    obs = lab("777-3", LOW_PLATELETS, "K/uL", ago=3)
    obs["subject"] = {"reference": subject}
    return searchset(base, obs)


# --------------------------------------------------------------------------- the service and its callers


@pytest.fixture(scope="module")
def ehr() -> Iterator[StubFhir]:
    """The EHR's FHIR server: the one the allow-list names."""
    with StubFhir().running() as stub:
        yield stub


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[StubFhir]:
    """Another server on another port (not on the allow-list): where a redirect or a link may point."""
    with StubFhir().running() as stub:
        yield stub


@pytest.fixture
def stubs(ehr: StubFhir, elsewhere: StubFhir) -> tuple[StubFhir, StubFhir]:
    ehr.reset()
    elsewhere.reset()
    return ehr, elsewhere


@pytest.fixture(scope="module")
def service(cds_service_factory: Callable[..., ServiceServer], ehr: StubFhir) -> ServiceServer:
    """The service, allowed to call the EHR's server only."""
    return cds_service_factory(fhir_servers=[ehr.base_url])


def hook(fhir_server: str | None, *, prefetch: Json | None = None, token: str | None = TOKEN) -> Json:
    body: Json = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": PID}}
    if fhir_server is not None:
        body["fhirServer"] = fhir_server
        if token is not None:
            body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "scope": "patient/*.read"}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def post(http: httpx.Client, service: ServiceServer, body: Json) -> httpx.Response:
    return http.post(service.hook_url, json=body)


def card_of(response: httpx.Response) -> Json:
    assert response.status_code == 200, response.text[:500]
    (card,) = response.json()["cards"]
    assert isinstance(card, dict)
    return card


def row(card: Json, criterion: str) -> str:
    """The card's line of one decisive criterion (its value and what it needs), as text."""
    detail: str = card["detail"]
    (line,) = [line for line in detail.splitlines() if line.startswith(f"- **{criterion}:**")]
    return line


def status_in_card(card: Json, criterion: str) -> str:
    """The status of a decisive criterion: the section its line is in."""
    section = ""
    for line in card["detail"].splitlines():
        if line.startswith("**"):
            section = {"not-met": "not met", "unknown": "unknown"}.get(CARD_SECTIONS.get(line, ""), "")
        elif line.startswith(f"- **{criterion}:**"):
            return section
    raise AssertionError(f"{criterion} is not a decisive row of the card")


def audit_rows(service: ServiceServer) -> list[Json]:
    service.flush_writes()
    with service.store() as store:
        return list(store.audit_rows())


def audited(service: ServiceServer, body: Json) -> list[Json]:
    return [r for r in audit_rows(service) if r["hook_instance"] == body["hookInstance"]]


def operation_outcome(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error", body
    diagnostics: str = body["issue"][0]["diagnostics"]
    return diagnostics


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- 1. redirects are not followed


@pytest.mark.parametrize("status", [302, 307])
def test_a_search_redirected_to_another_host_is_not_followed_and_its_data_never_reaches_the_card(
        http: httpx.Client, service: ServiceServer, stubs: tuple[StubFhir, StubFhir], status: int) -> None:
    """The other host holds a platelet count of 40 K/uL for this patient: followed, it would make her
    not eligible on data from a server nobody allowed. Not followed, platelets are unknown, and why."""
    ehr, elsewhere = stubs
    ehr.reset({**chart(ehr.base_url), "/fhir/Observation": redirect(status, f"{elsewhere.base_url}/Observation")})
    elsewhere.reset({"/fhir/Observation": Answer(body=low_platelets(elsewhere.base_url))})
    body = hook(ehr.base_url)
    card = card_of(post(http, service, body))
    assert elsewhere.seen() == [], "the redirect was followed to a server outside the allow-list"
    assert status_in_card(card, "platelets") == "unknown"
    assert "redirect" in row(card, "platelets") and "not followed" in row(card, "platelets")
    (audit,) = audited(service, body)
    assert audit["statuses"]["platelets"] == "unknown" and audit["verdict"] == "needs-review"


def test_a_redirect_to_a_path_outside_the_allowed_base_on_the_same_host_gets_no_request_and_no_token(
        http: httpx.Client, service: ServiceServer, stubs: tuple[StubFhir, StubFhir]) -> None:
    """Same scheme, host and port, but /admin is not the FHIR base the EHR's token was given for."""
    ehr, _ = stubs
    ehr.reset({**chart(ehr.base_url),
               "/fhir/Observation": redirect(307, f"{ehr.origin}/admin/Observation"),
               "/admin/Observation": Answer(body=low_platelets(ehr.origin + "/admin"))})
    card = card_of(post(http, service, hook(ehr.base_url)))
    outside = [r for r in ehr.seen() if not r.path.startswith("/fhir/")]
    assert outside == [], f"requests outside the FHIR base: {outside}"
    assert all(TOKEN in (r.authorization or "") for r in ehr.seen())  # the token went to the base, only there
    assert status_in_card(card, "platelets") == "unknown"


def test_a_redirected_patient_read_is_a_412_operation_outcome_and_the_other_host_is_never_called(
        http: httpx.Client, service: ServiceServer, stubs: tuple[StubFhir, StubFhir]) -> None:
    ehr, elsewhere = stubs
    ehr.reset({**chart(ehr.base_url), f"/fhir/Patient/{PID}": redirect(302, f"{elsewhere.base_url}/Patient/{PID}")})
    elsewhere.reset(chart(elsewhere.base_url))
    body = hook(ehr.base_url)
    reason = operation_outcome(post(http, service, body), 412)
    assert "redirect" in reason and "not followed" in reason, reason
    assert elsewhere.seen() == []
    assert audited(service, body) == []  # no evaluation, nothing audited as if there had been one


def test_a_redirected_medication_read_is_not_followed(
        http: httpx.Client, service: ServiceServer, stubs: tuple[StubFhir, StubFhir]) -> None:
    """Medications named by reference are read one by one after the searches: the same rule holds."""
    ehr, elsewhere = stubs
    request = fhir.medication_request("mr1", SUBJECT, None, "see medication", "2025-06-01")
    del request["medicationCodeableConcept"]
    request["medicationReference"] = {"reference": "Medication/m1"}
    pembrolizumab = {"resourceType": "Medication", "id": "m1",
                     "code": {"coding": [{"system": fhir.RXNORM, "code": "1547545"}]}}
    ehr.reset({**chart(ehr.base_url), "/fhir/MedicationRequest": Answer(body=searchset(ehr.base_url, request)),
               "/fhir/Medication/m1": redirect(302, f"{elsewhere.base_url}/Medication/m1")})
    elsewhere.reset({"/fhir/Medication/m1": Answer(body=pembrolizumab)})
    card = card_of(post(http, service, hook(ehr.base_url)))
    assert [r.path for r in ehr.seen() if r.path.startswith("/fhir/Medication/")] == ["/fhir/Medication/m1"]
    assert elsewhere.seen() == []
    assert "Medication/m1" in card["detail"]  # the data notes say it could not be read


@pytest.mark.parametrize(("key", "link"), [
    ("MedicationStatement", "{origin}/admin/MedicationStatement?page=2"),  # same host, outside the base
    ("MedicationRequest", "{base}/..%2Fadmin/MedicationRequest?page=2"),  # an encoded way out of the base
    ("MedicationAdministration", "{base}/%2e%2e/admin/MedicationAdministration?page=2"),
    ("DiagnosticReport", "http://user:pw@127.0.0.1:{port}/fhir/DiagnosticReport?page=2"),
])
def test_a_next_link_that_leaves_the_fhir_base_is_never_fetched(
        http: httpx.Client, service: ServiceServer, stubs: tuple[StubFhir, StubFhir], key: str, link: str) -> None:
    ehr, _ = stubs
    url = link.format(origin=ehr.origin, base=ehr.base_url, port=ehr.port)
    page = {"resourceType": "Bundle", "type": "searchset", "link": [{"relation": "next", "url": url}]}
    ehr.reset({**chart(ehr.base_url), f"/fhir/{key}": Answer(body=page)})
    card_of(post(http, service, hook(ehr.base_url)))
    followed = [r.path for r in ehr.seen() if "page=2" in r.path]
    assert followed == [], f"the next link {url} was fetched"


# --------------------------------------------------------------------------- 2. the Patient asked for


def test_a_patient_read_answered_with_another_patient_is_a_412_never_a_card(
        http: httpx.Client, service: ServiceServer, stubs: tuple[StubFhir, StubFhir]) -> None:
    """The server (a bug, a cache, a wrong proxy route) sends patient p2: whatever the searches found,
    no card may say anything about p1 on the strength of p2's demographics."""
    ehr, _ = stubs
    ehr.reset(chart(ehr.base_url, patient=fhir.patient("p2", "1990-05-02", "female")))
    body = hook(ehr.base_url)
    reason = operation_outcome(post(http, service, body), 412)
    assert f"Patient/{PID}" in reason and "another patient" in reason, reason
    assert "p2" not in reason  # the other patient's id is not shown to this caller
    assert audited(service, body) == []


def test_a_patient_read_answered_with_a_patient_without_an_id_is_a_412(
        http: httpx.Client, service: ServiceServer, stubs: tuple[StubFhir, StubFhir]) -> None:
    ehr, _ = stubs
    anonymous = fhir.patient(PID, "1990-05-02", "female")
    del anonymous["id"]
    ehr.reset(chart(ehr.base_url, patient=anonymous))
    reason = operation_outcome(post(http, service, hook(ehr.base_url)), 412)
    assert f"Patient/{PID}" in reason and "without an id" in reason, reason


# --------------------------------------------------------------------------- 7. credentials in URLs


def test_a_fhir_server_url_with_a_password_is_refused_and_never_called_logged_or_audited(
        http: httpx.Client, service: ServiceServer, stubs: tuple[StubFhir, StubFhir]) -> None:
    ehr, _ = stubs
    ehr.reset(chart(ehr.base_url))
    with_password = ehr.base_url.replace("http://", f"http://alice:{SECRET}@")
    reason = operation_outcome(post(http, service, hook(with_password)), 400)
    assert "fhirServer" in reason and "password" in reason and SECRET not in reason, reason
    assert ehr.seen() == []
    assert not [r for r in audit_rows(service) if SECRET in json.dumps(r)]


@pytest.mark.parametrize("suffix", [f"?api_key={SECRET}", f"#{SECRET}"])
def test_a_fhir_server_url_with_a_query_string_or_fragment_is_refused(
        http: httpx.Client, service: ServiceServer, stubs: tuple[StubFhir, StubFhir], suffix: str) -> None:
    """A FHIR base URL is http(s)://server{/path} (FHIR R4 RESTful API): what follows would be sent,
    logged and stored with every request."""
    ehr, _ = stubs
    ehr.reset(chart(ehr.base_url))
    reason = operation_outcome(post(http, service, hook(ehr.base_url + suffix)), 400)
    assert "fhirServer" in reason and SECRET not in reason, reason
    assert ehr.seen() == []


def test_credentials_never_reach_another_caller_through_the_shared_circuit_breaker(
        http: httpx.Client, cds_service_factory: Callable[..., ServiceServer]) -> None:
    """Two callers name the same dead server, one with a password in the URL: the breaker both share
    opens, and its message is what the second caller reads."""
    open_service = cds_service_factory(fhir_breaker_failures=1, fhir_retries=0)  # no allow-list: any server
    dead = f"http://127.0.0.1:{free_port()}/fhir"
    first = post(http, open_service, hook(dead.replace("http://", f"http://alice:{SECRET}@")))
    assert first.status_code == 400 and SECRET not in first.text
    for _ in range(3):
        second = post(http, open_service, hook(dead))
        assert second.status_code == 412 and SECRET not in second.text, second.text
    assert not [r for r in audit_rows(open_service) if SECRET in json.dumps(r)]


def test_the_cli_refuses_a_fhir_server_url_with_a_password_in_one_line(stubs: tuple[StubFhir, StubFhir]) -> None:
    ehr, _ = stubs
    ehr.reset(chart(ehr.base_url))
    result = CliRunner().invoke(cli_app, ["evaluate", "--fhir-server", ehr.base_url.replace(
        "http://", f"http://alice:{SECRET}@"), "--patient", PID, "--as-of", AS_OF.isoformat()])
    assert result.exit_code == 2, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1 and "password" in result.stderr, result.stderr
    assert SECRET not in result.stderr
    assert ehr.seen() == []


def test_the_service_does_not_start_with_a_password_in_the_fhir_server_allow_list(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AXIOM_CONFIG", raising=False)
    monkeypatch.setenv("AXIOM_FHIR_SERVERS", json.dumps([f"https://alice:{SECRET}@fhir.hospital.example/r4"]))
    monkeypatch.setenv("AXIOM_PORT", "8080")  # serve writes its options into the environment: undone after
    result = CliRunner().invoke(cli_app, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "fhir_servers" in result.stderr and "password" in result.stderr, result.stderr
    assert SECRET not in result.stderr
    monkeypatch.setenv("AXIOM_FHIR_SERVERS", json.dumps(["https://fhir.hospital.example/r4?tenant=a"]))
    with pytest.raises(ValidationError, match="query string"):
        Settings()


def test_urls_shown_in_messages_logs_and_audit_rows_carry_no_secret() -> None:
    """Defence in depth behind the refusals above: what a message or a row shows of a URL."""
    assert shown(f"https://alice:{SECRET}@fhir.example/r4?key={SECRET}#{SECRET}") == "https://fhir.example/r4"
    assert SECRET not in CircuitBreaker(f"https://alice:{SECRET}@fhir.example/r4", 1, 5.0)._open_message(1.0)
    assert base_url_problem("https://fhir.example/r4") is None
    assert base_url_problem(f"https://{SECRET}@fhir.example/r4") is not None
    assert not same_server(f"https://u:{SECRET}@fhir.example/r4/Observation", "https://fhir.example/r4")


# --------------------------------------------------------------------------- 10. absolute references


def test_an_absolute_subject_on_another_server_is_not_this_patient_from_the_fhir_server(
        http: httpx.Client, service: ServiceServer, stubs: tuple[StubFhir, StubFhir]) -> None:
    """`https://other.example/fhir/Patient/p1` is patient p1 of another server; `{fhirServer}/Patient/p1`
    and `Patient/p1` are ours."""
    ehr, _ = stubs
    foreign = lab("777-3", LOW_PLATELETS, "K/uL", ago=3)
    foreign["subject"] = {"reference": f"https://other.example/fhir/Patient/{PID}"}
    hgb = lab("718-7", 8.1, "g/dL", ucum="g/dL", ago=3)  # below the trial's 9 g/dL: not met when used
    hgb["subject"] = {"reference": f"{ehr.base_url}/Patient/{PID}"}
    anc = lab("751-8", 0.9, "10*3/uL", ucum="10*3/uL", ago=3)  # below 1.5 × 10^3/µL: not met when used
    ehr.reset({**chart(ehr.base_url), "/fhir/Observation": Answer(body=searchset(ehr.base_url, foreign, hgb, anc))})
    body = hook(ehr.base_url)
    card_of(post(http, service, body))
    (audit,) = audited(service, body)
    assert audit["statuses"]["platelets"] == "unknown"  # the other server's p1 is not her
    assert audit["statuses"]["hemoglobin"] == "not-met"  # her own server, absolute
    assert audit["statuses"]["anc"] == "not-met"  # relative


def test_an_absolute_subject_on_another_server_is_not_this_patient_in_a_prefetch(
        http: httpx.Client, service: ServiceServer, stubs: tuple[StubFhir, StubFhir]) -> None:
    ehr, _ = stubs
    prefetch = {"patient": fhir.patient(PID, "1990-05-02", "female"), "conditions": searchset(ehr.base_url, asps()),
                "labs": low_platelets(ehr.base_url, f"https://other.example/fhir/Patient/{PID}")}
    body = hook(ehr.base_url, prefetch=prefetch)
    card = card_of(post(http, service, body))
    assert status_in_card(card, "platelets") == "unknown"
    assert "another patient" in card["detail"]


def test_an_absolute_reference_names_a_resource_only_at_its_base_type_and_id() -> None:
    """The rule behind attribution and the Medication reads: `{base}/{Type}/{id}`, nothing looser."""
    base = "https://ehr.example/fhir"
    assert names("HTTPS://EHR.example:443/fhir/Patient/p1/_history/3", base, "Patient/p1")
    assert not names("https://other.example/fhir/Patient/p1", base, "Patient/p1")
    assert not names("https://ehr.example/fhir/tenant-b/Patient/p1", base, "Patient/p1")
    assert not names("https://ehr.example/Patient/p1", base, "Patient/p1")
    assert not names("https://ehr.example/fhir/Patient/p1?_format=json", base, "Patient/p1")
    assert not names("https://mallory@ehr.example/fhir/Patient/p1", base, "Patient/p1")


def run_file(tmp_path: Path, bundle: Json) -> Json:
    path = tmp_path / "bundle.json"
    path.write_bytes(orjson.dumps(bundle))
    result = CliRunner().invoke(cli_app, ["evaluate", str(path), "--as-of", AS_OF.isoformat(), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    report: Json = json.loads(result.stdout)
    return report


def platelets(report: Json) -> str:
    status: str = next(c for c in report["criteria"] if c["id"] == "platelets")["status"]
    return status


PATIENT_URN = "urn:uuid:" + "1" * 8 + "-1111-1111-1111-" + "1" * 12


@pytest.mark.parametrize(("patient_full_url", "subject", "hers"), [
    (PATIENT_URN, f"https://other.example/fhir/Patient/{PID}", False),  # no base of hers: not shown to be her
    (None, f"https://other.example/fhir/Patient/{PID}", False),
    (f"https://ehr.example/fhir/Patient/{PID}", f"https://other.example/fhir/Patient/{PID}", False),
    (f"https://ehr.example/fhir/Patient/{PID}", f"https://ehr.example/fhir/Patient/{PID}", True),
    (PATIENT_URN, PATIENT_URN, True),
    (PATIENT_URN, SUBJECT, True),
    (None, SUBJECT, True),
])
def test_an_absolute_subject_in_a_bundle_file_counts_only_on_the_bundles_own_base(
        tmp_path: Path, patient_full_url: str | None, subject: str, hers: bool) -> None:
    bundle = fhir.bundle([fhir.patient(PID, "1990-05-02", "female"), asps(), lab("777-3", LOW_PLATELETS, "K/uL")])
    bundle["entry"][2]["resource"]["subject"] = {"reference": subject}
    if patient_full_url is not None:
        bundle["entry"][0]["fullUrl"] = patient_full_url
    assert platelets(run_file(tmp_path, bundle)) == ("not-met" if hers else "unknown")
