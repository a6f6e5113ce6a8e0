"""The review app end to end over HTTP, as the clinician's browser and the EHR see it: the card's smart link →
the sandbox's launch-context call → launch → the EHR's authorize → callback → the page → checklist →
referral and lab orders written to the EHR and read back from sekmet. Every failure a clear HTML page.

The EHR is tests/mock_ehr.py (a SMART authorization server and a token-checking proxy) in front of the
real sekmet-fhir server; the service is the real one over uvicorn; the browser is an httpx client with
a cookie jar that follows nothing by itself, so every redirect is checked.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from typer.testing import CliRunner

from adapter.cli import app as cli
from adapter.logs import JsonFormatter
from adapter.review.config import review_config
from adapter.review.sessions import ReviewStore, review_sessions
from adapter.trials import load_trial
from tests.fhir_server import FhirTestServer
from tests.mock_ehr import (
    CLINICIAN,
    CLINICIAN_NAME,
    READ_SCOPES,
    IdTokenMode,
    MockEhr,
    MockEhrConfig,
    card_for,
    delete_drafts,
    launch_url,
    loaded_patients,
    renamed,
    running_mock_ehr,
    smart_link,
    with_review,
)
from tests.service_server import AS_OF, ServiceServer

pytestmark = pytest.mark.fhir_server

ELIGIBLE, MISSING_LABS, NOT_ELIGIBLE = "asps-likely-eligible", "asps-missing-labs-needs-review", \
    "asps-low-platelets-not-eligible"
TRIAL = load_trial("axiom")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def patients(fhir_server: FhirTestServer) -> Iterator[dict[str, str]]:
    with loaded_patients(fhir_server, (ELIGIBLE, MISSING_LABS, NOT_ELIGIBLE)) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def ehr(fhir_server: FhirTestServer) -> Iterator[MockEhr]:
    with running_mock_ehr(fhir_server.base_url) as running:
        yield running


@pytest.fixture
def knobs(ehr: MockEhr) -> Iterator[MockEhrConfig]:
    """The mock EHR's misbehaviour for one test, reset afterwards."""
    saved = MockEhrConfig(**vars(ehr.config))
    yield ehr.config
    ehr.config = saved


@pytest.fixture(scope="module")
def service(cds_service_factory: Callable[..., ServiceServer], ehr: MockEhr) -> ServiceServer:
    return with_review(cds_service_factory(), ehr)


@pytest.fixture
def browser(service: ServiceServer) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0, trust_env=False, follow_redirects=False) as client:
        yield client


# --------------------------------------------------------------------------- how a person gets there


class Page(HTMLParser):
    """What a test reads off a review page: verdicts, the forms' CSRF token, drafts shown, the text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.statuses: dict[str, str] = {}
        self.overall: str | None = None
        self.csrf: set[str] = set()
        self.drafts: dict[str, str] = {}  # ServiceRequest id → kind
        self.checked: set[str] = set()
        self.text_parts: list[str] = []
        self.feed(html)
        self.text = " ".join(" ".join(self.text_parts).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("data-criterion") and a.get("data-status"):
            self.statuses[str(a["data-criterion"])] = str(a["data-status"])
        if a.get("data-overall"):
            self.overall = a["data-overall"]
        if tag == "input" and a.get("name") == "csrf":
            self.csrf.add(str(a.get("value")))
        if tag == "input" and a.get("name") == "attestation" and "checked" in a:
            self.checked.add(str(a.get("value")))
        if a.get("data-service-request"):
            self.drafts[str(a["data-service-request"])] = str(a.get("data-kind"))

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)


def sign_in(browser: httpx.Client, service: ServiceServer, ehr: MockEhr, pid: str) -> httpx.Response:
    """Launch from the card, through the EHR's authorize, to the callback's answer (not followed)."""
    card = card_for(service, ehr, pid)
    launched = browser.get(launch_url(ehr, smart_link(card), pid))
    assert launched.status_code == 303, launched.text
    approved = browser.get(launched.headers["location"])
    assert approved.status_code == 302
    return browser.get(approved.headers["location"])


def open_app(browser: httpx.Client, service: ServiceServer, ehr: MockEhr, pid: str) -> Page:
    callback = sign_in(browser, service, ehr, pid)
    assert callback.status_code == 303 and callback.headers["location"] == "app", callback.text
    response = browser.get(f"{service.base_url}/review/app")
    assert response.status_code == 200, response.text
    return Page(response.text)


def cli_report(fhir_server: FhirTestServer, pid: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["evaluate", "--fhir-server", fhir_server.base_url, "--patient", pid,
                                      "--as-of", AS_OF.isoformat(), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def assert_problem_page(response: httpx.Response, status: int, *words: str) -> Page:
    """A clear HTML page with the status, the words, the security headers — never JSON or a stack trace."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = Page(response.text)
    for word in words:
        assert word.lower() in page.text.lower(), (word, page.text)
    assert "Traceback" not in response.text and "OperationOutcome" not in response.text
    return page


# --------------------------------------------------------------------------- the whole way


def test_card_link_to_referral_read_back_from_the_server(
        service: ServiceServer, ehr: MockEhr, fhir_server: FhirTestServer, patients: dict[str, str],
        browser: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    pid = patients[ELIGIBLE]
    visited: list[str] = []
    browser.event_hooks["request"] = [lambda request: visited.append(str(request.url))]
    with caplog.at_level(logging.INFO):
        card = card_for(service, ehr, pid)
        link = smart_link(card)
        assert link["label"] == "Review eligibility" and link["url"] == f"{service.base_url}/review/launch"
        assert json.loads(link["appContext"]) == {"trial": "axiom", "hookInstance": card["hookInstance"]}

        launched = browser.get(launch_url(ehr, link, pid))
        assert launched.status_code == 303
        cookie = launched.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/review" in cookie
        assert "secure" not in cookie  # http://127.0.0.1: a Secure cookie would never come back
        authorize = urlsplit(launched.headers["location"])
        query = {k: v[0] for k, v in parse_qs(authorize.query).items()}
        assert f"{authorize.scheme}://{authorize.netloc}{authorize.path}" == f"{ehr.base_url}/auth/authorize"
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        assert query["aud"] == ehr.fhir_base and query["redirect_uri"] == f"{service.base_url}/review/callback"
        assert set(query["scope"].split()) == {"launch", "openid", "fhirUser", *READ_SCOPES,
                                               "patient/ServiceRequest.crs"}
        assert "patient/Observation.rs" in READ_SCOPES and "patient/Patient.rs" in READ_SCOPES

        approved = browser.get(launched.headers["location"])
        callback = browser.get(approved.headers["location"])
        assert callback.status_code == 303 and callback.headers["location"] == "app"
        response = browser.get(f"{service.base_url}/review/app")
        assert response.status_code == 200
        page = Page(response.text)
        # the clinician, from the EHR's verified id_token (its name claim; its fhirUser is recorded)
        assert f"Signed in as {CLINICIAN_NAME}" in page.text

        # the one engine: the page's verdicts are the CLI's for the same patient on the same server
        report = cli_report(fhir_server, pid)
        assert page.overall == report["overall"] == "likely-eligible"
        assert page.statuses == {c["id"]: c["status"] for c in report["criteria"]}
        assert len(page.statuses) == 17
        # evidence as recorded: original units, dates, the ULN and where it came from, links to the server
        assert "Platelets" in page.text and "245 K/uL" in page.text and "2026-11-14" in page.text
        assert "the result's own reference range" in page.text
        assert f'href="{ehr.fhir_base}/Observation/{pid}-' in response.text
        headers = response.headers
        assert headers["content-security-policy"].startswith("default-src 'none'; style-src 'self'")
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["cache-control"] == "no-store" and headers["referrer-policy"] == "no-referrer"

        # the checklist, stored
        (csrf,) = page.csrf
        saved = browser.post(f"{service.base_url}/review/attestations",
                             data={"csrf": csrf, "attestation": ["informed-consent", "swallow-pills"]})
        assert saved.status_code == 303
        page = Page(browser.get(f"{service.base_url}/review/app").text)
        assert page.checked == {"informed-consent", "swallow-pills"}
        assert "Checklist saved: 2 of 4 confirmed." in page.text
        assert f"by {CLINICIAN}" in page.text
        assert {a.fhir_user for a in stored_answers(service, ehr, pid).values()} == {CLINICIAN}

        # the referral: written with the clinician's token, read back, shown with its id
        created = browser.post(f"{service.base_url}/review/referral", data={"csrf": csrf})
        assert created.status_code == 303
        page = Page(browser.get(f"{service.base_url}/review/app").text)
        (rid,) = [i for i, kind in page.drafts.items() if kind == "referral"]
        assert f"Referral created as drafts in the EHR: ServiceRequest/{rid}" in page.text
        stored = fhir_server.get(f"ServiceRequest/{rid}").json()
        assert stored["subject"]["reference"] == f"Patient/{pid}"
        assert stored["status"] == "draft" and stored["intent"] == "proposal"
        assert TRIAL.card["referral"]["code"] in stored["code"]["coding"]
        assert stored["requester"] == {"reference": CLINICIAN}  # the fhirUser, relative on this server
        assert stored["identifier"] == [{"system": TRIAL.card["referral"]["identifier_system"],
                                         "value": f"axiom-{pid}"}]
        posts = [s for s in ehr.seen if s.method == "POST" and s.path == "/fhir/ServiceRequest"]
        assert posts and all(s.token and s.status == 201 for s in posts)
        # once only: a second press creates nothing more
        browser.post(f"{service.base_url}/review/referral", data={"csrf": csrf})
        page = Page(browser.get(f"{service.base_url}/review/app").text)
        assert list(page.drafts) == [rid] and "Create referral" not in page.text

    # no patient id, token or code in a URL of the service after the callback; none in the logs
    tokens = [t for t, g in ehr.tokens.items() if g.patient == pid]
    service_urls = [u for u in visited if u.startswith(service.base_url)]
    assert service_urls and not any(pid in u for u in service_urls)
    assert not any(t in u for u in visited for t in tokens)
    # the service's own log lines (the mock EHR and the test's clients log in this process too)
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records if r.name.startswith("axiom_cds"))
    assert '"review evaluated"' in logged and '"review drafts created"' in logged
    id_tokens = [r for r in caplog.records if r.name.startswith("axiom_cds") and getattr(r, "id_token", False)]
    assert id_tokens and all(r.__dict__["fhir_user"] == CLINICIAN for r in id_tokens)  # an id: logged
    for secret in (pid, *tokens, "245 K/uL", "1992-07-07", "AspsLikelyEligible", CLINICIAN_NAME, "eyJ"):
        assert secret not in logged, secret


def stored_answers(service: ServiceServer, ehr: MockEhr, pid: str) -> dict[str, Any]:
    """The checklist as the service's database holds it for this patient (by its patient key)."""
    store = ReviewStore(service.settings.database_url)
    try:
        return store.attestations(service.app.state.service.patient_key(ehr.fhir_base, pid), TRIAL.version)
    finally:
        store.close()


def open_referrals(fhir_server: FhirTestServer, pid: str) -> list[dict[str, Any]]:
    """The patient's draft or active ServiceRequests with our referral identifier, on the server itself."""
    system = TRIAL.card["referral"]["identifier_system"]
    found = fhir_server.get("ServiceRequest", params={"subject": f"Patient/{pid}", "status": "draft,active",
                                                      "identifier": f"{system}|axiom-{pid}"}).json()
    return [e["resource"] for e in found.get("entry") or ()]


def test_a_second_review_finds_the_referral_and_creates_none(
        service: ServiceServer, ehr: MockEhr, fhir_server: FhirTestServer, patients: dict[str, str],
        browser: httpx.Client) -> None:
    pid = patients[ELIGIBLE]
    delete_drafts(fhir_server, pid)
    page = open_app(browser, service, ehr, pid)
    assert "Create referral" in page.text
    assert browser.post(f"{service.base_url}/review/referral", data={"csrf": next(iter(page.csrf))}).status_code == 303
    (first,) = open_referrals(fhir_server, pid)

    # another review of the same patient (a new launch, a new session): the open referral is shown, not offered
    page = open_app(browser, service, ehr, pid)
    assert f"A referral draft already exists in the EHR: ServiceRequest/{first['id']}" in page.text
    assert f"requested by {CLINICIAN}" in page.text and "no other is created from here" in page.text
    assert "Create referral" not in page.text and page.drafts == {}
    # a press anyway (an old page's form of this session): nothing is created
    response = browser.post(f"{service.base_url}/review/referral", data={"csrf": next(iter(page.csrf))})
    assert response.status_code == 303
    page = Page(browser.get(f"{service.base_url}/review/app").text)
    assert f"No referral was created: ServiceRequest/{first['id']} is open in the EHR already." in page.text
    assert [r["id"] for r in open_referrals(fhir_server, pid)] == [first["id"]]
    count = fhir_server.get("ServiceRequest", params={"subject": f"Patient/{pid}", "_summary": "count"}).json()
    assert count["total"] == 1  # exactly one ServiceRequest for the patient on the server

    # once it is no longer open (the team completed it), a new referral can be made
    done = httpx.put(f"{fhir_server.base_url}/ServiceRequest/{first['id']}", json={**first, "status": "completed"},
                     trust_env=False, timeout=30.0)
    assert done.status_code == 200, done.text
    page = open_app(browser, service, ehr, pid)
    assert "Create referral" in page.text and "already exists" not in page.text


def test_without_the_search_scope_no_referral_is_offered(service: ServiceServer, ehr: MockEhr,
                                                          knobs: MockEhrConfig, patients: dict[str, str],
                                                          browser: httpx.Client) -> None:
    """The app cannot tell whether a referral exists: it says so and offers none (it never makes two)."""
    knobs.drop_scopes = {"patient/ServiceRequest.crs"}
    page = open_app(browser, service, ehr, patients[ELIGIBLE])
    assert "No referral is offered: The EHR did not grant it the right to search ServiceRequests" in page.text
    assert "Create referral" not in page.text


@pytest.mark.parametrize(("mode", "words"), [
    ("bad-signature", "signature does not match the EHR's published keys"),
    ("wrong-aud", "issued for another app"),
    ("expired", "has expired"),
])
def test_an_invalid_id_token_is_refused(service: ServiceServer, ehr: MockEhr, knobs: MockEhrConfig,
                                        patients: dict[str, str], browser: httpx.Client, mode: IdTokenMode,
                                        words: str) -> None:
    knobs.id_token = mode
    response = sign_in(browser, service, ehr, patients[ELIGIBLE])
    assert_problem_page(response, 401, "sign-in could not be verified", words, "Nothing was stored")
    # no session: the cookie opens nothing, the page is closed
    store = ReviewStore(service.settings.database_url)
    try:
        assert store.load(browser.cookies.get("axiom_review")) is None
    finally:
        store.close()
    assert_problem_page(browser.get(f"{service.base_url}/review/app"), 401, "The review session has ended")


def test_without_an_id_token_the_clinician_is_not_identified(
        service: ServiceServer, ehr: MockEhr, knobs: MockEhrConfig, fhir_server: FhirTestServer,
        patients: dict[str, str], browser: httpx.Client) -> None:
    knobs.id_token = "none"
    pid = patients[MISSING_LABS]
    delete_drafts(fhir_server, pid)
    page = open_app(browser, service, ehr, pid)
    assert "Signed in: clinician not identified by the EHR" in page.text
    (csrf,) = page.csrf
    assert browser.post(f"{service.base_url}/review/attestations",
                        data={"csrf": csrf, "attestation": "swallow-pills"}).status_code == 303
    page = Page(browser.get(f"{service.base_url}/review/app").text)
    assert "by a clinician the EHR did not identify" in page.text
    assert {a.fhir_user for a in stored_answers(service, ehr, pid).values()} == {None}
    assert browser.post(f"{service.base_url}/review/lab-orders", data={"csrf": csrf}).status_code == 303
    orders = [i for i, kind in Page(browser.get(f"{service.base_url}/review/app").text).drafts.items()
              if kind == "lab-order"]
    assert orders and all("requester" not in fhir_server.get(f"ServiceRequest/{rid}").json() for rid in orders)


def test_the_key_set_from_the_issuers_openid_configuration(service: ServiceServer, ehr: MockEhr,
                                                           knobs: MockEhrConfig, patients: dict[str, str],
                                                           browser: httpx.Client) -> None:
    """An EHR whose smart-configuration lists no jwks_uri: the issuer's OpenID configuration names it."""
    knobs.list_jwks = False
    page = open_app(browser, service, ehr, patients[NOT_ELIGIBLE])
    assert f"Signed in as {CLINICIAN_NAME}" in page.text


def test_missing_labs_are_ordered_as_drafts(service: ServiceServer, ehr: MockEhr, fhir_server: FhirTestServer,
                                            patients: dict[str, str], browser: httpx.Client) -> None:
    pid = patients[MISSING_LABS]
    page = open_app(browser, service, ehr, pid)
    assert page.overall == cli_report(fhir_server, pid)["overall"] == "needs-review"
    assert "Order missing labs" in page.text
    (csrf,) = page.csrf
    assert browser.post(f"{service.base_url}/review/lab-orders", data={"csrf": csrf}).status_code == 303
    page = Page(browser.get(f"{service.base_url}/review/app").text)
    orders = [i for i, kind in page.drafts.items() if kind == "lab-order"]
    assert orders and "Order missing labs" not in page.text
    for rid in orders:
        stored = fhir_server.get(f"ServiceRequest/{rid}").json()
        assert stored["subject"]["reference"] == f"Patient/{pid}" and stored["status"] == "draft"
        assert stored["category"][0]["coding"][0] == TRIAL.card["lab_order_category"]


def test_a_double_press_creates_one_referral(service: ServiceServer, ehr: MockEhr, fhir_server: FhirTestServer,
                                             patients: dict[str, str], browser: httpx.Client) -> None:
    pid = patients[ELIGIBLE]
    delete_drafts(fhir_server, pid)
    page = open_app(browser, service, ehr, pid)
    count = {"subject": f"Patient/{pid}", "_summary": "count"}
    before = fhir_server.get("ServiceRequest", params=count).json()["total"]
    presses = [httpx.Client(timeout=30.0, trust_env=False, cookies=browser.cookies) for _ in range(3)]
    with ThreadPoolExecutor(len(presses)) as pool:
        answers = list(pool.map(lambda c: c.post(f"{service.base_url}/review/referral",
                                                 data={"csrf": next(iter(page.csrf))}), presses))
    for client in presses:
        client.close()
    assert [a.status_code for a in answers] == [303] * len(presses)
    assert fhir_server.get("ServiceRequest", params=count).json()["total"] == before + 1
    assert list(Page(browser.get(f"{service.base_url}/review/app").text).drafts.values()) == ["referral"]


def test_not_eligible_shows_why_and_offers_no_referral(service: ServiceServer, ehr: MockEhr,
                                                        fhir_server: FhirTestServer, patients: dict[str, str],
                                                        browser: httpx.Client) -> None:
    pid = patients[NOT_ELIGIBLE]
    page = open_app(browser, service, ehr, pid)
    report = cli_report(fhir_server, pid)
    assert page.overall == report["overall"] == "not-eligible"
    assert page.statuses == {c["id"]: c["status"] for c in report["criteria"]}
    assert page.statuses["platelets"] == "not-met" and "85 K/uL" in page.text
    assert "Create referral" not in page.text and "Checklist" not in page.text
    assert "No referral is offered: the patient does not meet a criterion" in page.text


# --------------------------------------------------------------------------- what goes wrong


def test_unknown_iss_is_refused(service: ServiceServer, browser: httpx.Client) -> None:
    response = browser.get(f"{service.base_url}/review/launch",
                           params={"iss": "https://evil.example/fhir", "launch": "x"})
    assert_problem_page(response, 403, "This EHR may not open the review", "AXIOM_REVIEW_ALLOWED_ISSUERS")
    assert "set-cookie" not in response.headers


def test_launch_without_parameters_is_refused(service: ServiceServer, browser: httpx.Client) -> None:
    assert_problem_page(browser.get(f"{service.base_url}/review/launch"), 400, "did not start the review properly")


@pytest.mark.parametrize("methods", [["plain"], None], ids=["plain-only", "not-listed"])
def test_server_without_s256_is_refused(service: ServiceServer, ehr: MockEhr, knobs: MockEhrConfig,
                                        patients: dict[str, str], browser: httpx.Client,
                                        methods: list[str] | None) -> None:
    knobs.code_challenge_methods = methods
    pid = patients[ELIGIBLE]
    response = browser.get(launch_url(ehr, smart_link(card_for(service, ehr, pid)), pid))
    page = assert_problem_page(response, 502, "does not support PKCE with S256")
    assert ("lists only: plain" in page.text) == (methods == ["plain"])


def test_reused_code_is_refused(service: ServiceServer, ehr: MockEhr, patients: dict[str, str],
                                browser: httpx.Client) -> None:
    pid = patients[ELIGIBLE]
    first = sign_in(browser, service, ehr, pid)
    assert first.status_code == 303
    used = parse_qs(urlsplit(str(first.request.url)).query)["code"][0]
    # a new launch in the same browser, whose callback carries the code already exchanged
    launched = browser.get(launch_url(ehr, smart_link(card_for(service, ehr, pid)), pid))
    approved = browser.get(launched.headers["location"])
    state = parse_qs(urlsplit(approved.headers["location"]).query)["state"][0]
    response = browser.get(f"{service.base_url}/review/callback", params={"code": used, "state": state})
    assert_problem_page(response, 400, "The EHR did not accept the sign-in", "invalid_grant", "used already")
    # the failed sign-in left nothing behind: the page is not reachable
    assert_problem_page(browser.get(f"{service.base_url}/review/app"), 401, "The review session has ended")


def test_state_mismatch_is_refused(service: ServiceServer, ehr: MockEhr, patients: dict[str, str],
                                   browser: httpx.Client) -> None:
    pid = patients[ELIGIBLE]
    launched = browser.get(launch_url(ehr, smart_link(card_for(service, ehr, pid)), pid))
    approved = browser.get(launched.headers["location"])
    code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
    response = browser.get(f"{service.base_url}/review/callback", params={"code": code, "state": "forged"})
    assert_problem_page(response, 400, "does not match this browser's launch")
    assert not ehr.codes[code]["used"]  # refused before the code was exchanged


def test_callback_without_a_launch_in_this_browser(service: ServiceServer, browser: httpx.Client) -> None:
    response = browser.get(f"{service.base_url}/review/callback", params={"code": "c", "state": "s"})
    assert_problem_page(response, 400, "cannot be matched to a launch", "cookies are blocked")


def test_missing_scope_is_refused(service: ServiceServer, ehr: MockEhr, knobs: MockEhrConfig,
                                  patients: dict[str, str], browser: httpx.Client) -> None:
    knobs.drop_scopes = {"patient/Observation.rs"}
    response = sign_in(browser, service, ehr, patients[ELIGIBLE])
    assert_problem_page(response, 403, "did not grant the access the review needs", "patient/Observation.rs")


def test_missing_patient_is_refused(service: ServiceServer, ehr: MockEhr, knobs: MockEhrConfig,
                                    patients: dict[str, str], browser: httpx.Client) -> None:
    knobs.omit_patient = True
    response = sign_in(browser, service, ehr, patients[ELIGIBLE])
    assert_problem_page(response, 502, "did not say which patient", "no patient in context")


def test_access_denied_at_the_ehr(service: ServiceServer, ehr: MockEhr, patients: dict[str, str],
                                  browser: httpx.Client) -> None:
    pid = patients[ELIGIBLE]
    launched = browser.get(launch_url(ehr, smart_link(card_for(service, ehr, pid)), pid))
    state = parse_qs(urlsplit(launched.headers["location"]).query)["state"][0]
    response = browser.get(f"{service.base_url}/review/callback", params={"error": "access_denied", "state": state})
    assert_problem_page(response, 403, "did not authorize the review")


def test_fhir_failure_is_a_page(service: ServiceServer, ehr: MockEhr, knobs: MockEhrConfig,
                                patients: dict[str, str], browser: httpx.Client) -> None:
    callback = sign_in(browser, service, ehr, patients[ELIGIBLE])
    assert callback.status_code == 303
    knobs.fail_patient_read = True
    response = browser.get(f"{service.base_url}/review/app")
    assert_problem_page(response, 502, "The patient's chart could not be read", "503")


def test_expired_session_and_sessions_at_rest(service: ServiceServer, ehr: MockEhr, patients: dict[str, str],
                                             browser: httpx.Client) -> None:
    pid = patients[ELIGIBLE]
    open_app(browser, service, ehr, pid)
    secret = browser.cookies["axiom_review"]
    store = ReviewStore(service.settings.database_url)
    try:
        # at rest the row holds neither the EHR's token nor the patient (encrypted under the cookie's secret)
        with store._engine.connect() as conn:
            rows = conn.execute(select(review_sessions.c.id, review_sessions.c.data)).all()
        tokens = [t for t, grant in ehr.tokens.items() if grant.patient == pid]
        assert rows and not any(t in row.data or t in row.id for row in rows for t in tokens)
        assert not any(pid in row.data or secret in row.id for row in rows)
        session = store.load(secret)
        assert session is not None and session.patient == pid and session.access_token in tokens
        assert store.load(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
        session.expires_at = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        store.save(secret, session)
    finally:
        store.close()
    assert_problem_page(browser.get(f"{service.base_url}/review/app"), 401, "The review session has ended",
                        "at most 30 minutes")


def test_confidential_client(service: ServiceServer, ehr: MockEhr, knobs: MockEhrConfig, patients: dict[str, str],
                             browser: httpx.Client) -> None:
    """With a client secret, the code is exchanged with HTTP Basic (the EHR refuses it without)."""
    knobs.client_secret = "s3cret-of-the-review-app"
    public = service.app.state.review
    try:
        service.app.state.review = review_config(public.settings.model_copy(update={
            "client_secret": SecretStr("s3cret-of-the-review-app")}), service.settings)
        assert open_app(browser, service, ehr, patients[ELIGIBLE]).overall == "likely-eligible"
        service.app.state.review = public  # the public client's exchange is refused by this EHR
        response = sign_in(browser, service, ehr, patients[ELIGIBLE])
        assert_problem_page(response, 400, "The EHR did not accept the sign-in", "invalid_client")
    finally:
        service.app.state.review = public


def test_without_a_session_the_page_and_forms_are_closed(service: ServiceServer, browser: httpx.Client) -> None:
    assert_problem_page(browser.get(f"{service.base_url}/review/app"), 401, "The review session has ended")
    browser.cookies.set("axiom_review", "not-a-session", domain="127.0.0.1", path="/review")
    assert_problem_page(browser.get(f"{service.base_url}/review/app"), 401, "The review session has ended")
    assert_problem_page(browser.post(f"{service.base_url}/review/referral", data={"csrf": "x"}), 401,
                        "The review session has ended")


def test_forms_need_the_sessions_csrf_token(service: ServiceServer, ehr: MockEhr, patients: dict[str, str],
                                            fhir_server: FhirTestServer, browser: httpx.Client) -> None:
    pid = patients[MISSING_LABS]
    old = open_app(browser, service, ehr, pid)
    assert_problem_page(browser.post(f"{service.base_url}/review/attestations", data={"attestation": "x"}), 403,
                        "does not belong to the current review")
    # a page of an earlier review in this browser: its forms no longer act (the review was replaced)
    new = open_app(browser, service, ehr, pid)
    assert new.csrf != old.csrf
    before = fhir_server.get("ServiceRequest", params={"subject": f"Patient/{pid}", "_summary": "count"}).json()
    response = browser.post(f"{service.base_url}/review/lab-orders", data={"csrf": next(iter(old.csrf))})
    assert_problem_page(response, 403, "does not belong to the current review")
    after = fhir_server.get("ServiceRequest", params={"subject": f"Patient/{pid}", "_summary": "count"}).json()
    assert after["total"] == before["total"]


def test_end_review_discards_the_session(service: ServiceServer, ehr: MockEhr, patients: dict[str, str],
                                         browser: httpx.Client) -> None:
    page = open_app(browser, service, ehr, patients[ELIGIBLE])
    ended = browser.post(f"{service.base_url}/review/end", data={"csrf": next(iter(page.csrf))})
    assert ended.status_code == 200 and "Review ended" in ended.text
    assert_problem_page(browser.get(f"{service.base_url}/review/app"), 401, "The review session has ended")


def test_chart_text_is_escaped(service: ServiceServer, ehr: MockEhr, fhir_server: FhirTestServer,
                               browser: httpx.Client) -> None:
    pid, bundle = renamed(ELIGIBLE)
    pid, bundle = "review-xss", orjson.loads(orjson.dumps(bundle).replace(pid.encode(), b"review-xss"))
    payload = '<img src=x onerror=alert(1)><script>alert(2)</script>'
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Condition":
            resource["code"]["text"] = payload
        if resource["resourceType"] == "Patient":
            resource["name"] = [{"text": payload}]
    with fhir_server.loaded(bundle):
        callback = sign_in(browser, service, ehr, pid)
        assert callback.status_code == 303
        response = browser.get(f"{service.base_url}/review/app")
    assert response.status_code == 200
    assert "<img" not in response.text and "<script" not in response.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in response.text


def test_review_off_without_configuration(cds_service_factory: Callable[..., ServiceServer], ehr: MockEhr,
                                          patients: dict[str, str]) -> None:
    """Not configured: the card carries no link to the app, and a launch says it is not set up."""
    server = cds_service_factory()
    assert [link["type"] for link in card_for(server, ehr, patients[ELIGIBLE])["links"]] == ["absolute"]
    response = httpx.get(f"{server.base_url}/review/launch", params={"iss": "x", "launch": "y"}, trust_env=False)
    assert_problem_page(response, 503, "not set up")


def test_static_stylesheet_is_served(service: ServiceServer, browser: httpx.Client) -> None:
    response = browser.get(f"{service.base_url}/review/static/review.css")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/css")
    assert re.search(r":focus-visible\s*\{[^}]*outline", response.text)


def test_an_open_referral_on_a_later_page_is_found_when_the_ehr_ignores_the_identifier(
        service: ServiceServer, ehr: MockEhr, knobs: MockEhrConfig, fhir_server: FhirTestServer,
        patients: dict[str, str], browser: httpx.Client) -> None:
    """A server without the `identifier` search parameter answers with all the patient's open
    ServiceRequests, a page at a time: the referral is on the last page, and is still found — no second
    referral."""
    pid = patients[ELIGIBLE]
    delete_drafts(fhir_server, pid)
    for k in range(3):  # the patient's other open orders, older than the referral: listed before it
        other = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                 "subject": {"reference": f"Patient/{pid}"}, "code": {"text": f"physiotherapy {k}"},
                 "identifier": [{"system": "urn:example:orders", "value": f"order-{pid}-{k}"}]}
        made = httpx.post(f"{fhir_server.base_url}/ServiceRequest", json=other, trust_env=False, timeout=30.0)
        assert made.status_code == 201, made.text
    page = open_app(browser, service, ehr, pid)
    assert browser.post(f"{service.base_url}/review/referral", data={"csrf": next(iter(page.csrf))}).status_code == 303
    (first,) = open_referrals(fhir_server, pid)

    knobs.ignored_search_params = {"identifier"}
    knobs.page_size = 1
    searches = len([s for s in ehr.seen if s.method == "GET" and s.path == "/fhir/ServiceRequest"])
    page = open_app(browser, service, ehr, pid)
    assert f"A referral draft already exists in the EHR: ServiceRequest/{first['id']}" in page.text
    assert "Create referral" not in page.text and page.drafts == {}
    assert [r["id"] for r in open_referrals(fhir_server, pid)] == [first["id"]]
    pages = len([s for s in ehr.seen if s.method == "GET" and s.path == "/fhir/ServiceRequest"]) - searches
    assert pages == 4  # three other orders and the referral, one a page: every page read
    delete_drafts(fhir_server, pid)
