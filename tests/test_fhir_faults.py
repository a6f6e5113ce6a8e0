"""FHIR faults: the service and the CLI against a FHIR server that misbehaves on purpose (issue 4).

An EHR's FHIR server is slow, rate-limits, restarts, sits behind proxies that answer with HTML, cuts
answers short, pages in loops. Whatever it does, the hook answers — a card whose affected criteria are
`unknown` with the reason, or 412 when the Patient cannot be had — never a 500 and never a wait past the
deadline. Each test scripts one fault at a real HTTP server on 127.0.0.1 (tests/faulty_server.py) in
front of sekmet-fhir and counts the requests that reached it: retries happened, and stopped at their
bound or at the deadline; an open circuit breaker spares the server entirely. No wall-clock asserts:
time only bounds retries and the breaker's cool-down, and the counts show what was sent.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from typer.testing import CliRunner

from adapter.cli import app as cli_app
from adapter.engine import fhir_wanted
from adapter.errors import FhirServerError
from adapter.fhir.breaker import BreakerOpenError, CircuitBreaker, Outcome
from adapter.fhir.client import MAX_PAGES, retry_after_seconds
from adapter.fhir.gather import merge_searches
from adapter.fhir.queries import searches
from adapter.fhir.sessions import SessionPool
from adapter.trials import load_trial as trial
from tests import faulty_server as fault
from tests.faulty_server import PAGE_ID, FaultyFhirServer
from tests.fhir_server import FhirTestServer
from tests.service_server import AS_OF, ServiceServer
from tests.test_service_e2e import (
    Json,
    assert_card_matches_report,
    assert_operation_outcome,
    card_rows,
    cli_report,
    fixture_bundle,
    hook_body,
    only_card,
    patient_id,
    post_hook,
    status,
)

pytestmark = pytest.mark.fhir_server

NAME = "asps-likely-eligible"
PID = patient_id(fixture_bundle(NAME))
SEARCHES = 1 + len(merge_searches(searches(PID, fhir_wanted(trial()), AS_OF)))  # the Patient read and 7 searches
MAX_MB = 1.0
MAX_ENTRIES = 200
RETRIES = 2
COOL_DOWN_S = 0.5
LABS = "date=ge"  # only the (merged) labs search has a date floor


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def patient(fhir_server: FhirTestServer) -> Iterator[str]:
    with fhir_server.loaded(fixture_bundle(NAME)):
        yield PID


@pytest.fixture
def faulty(fhir_server: FhirTestServer) -> Iterator[FaultyFhirServer]:
    """A new server (a new port) per test: a fresh circuit breaker in every service, no leftover scripts."""
    with FaultyFhirServer(fhir_server.base_url).running() as server:
        yield server


@pytest.fixture(scope="module")
def service(cds_service_factory: Callable[..., ServiceServer]) -> ServiceServer:
    return cds_service_factory(fhir_deadline_s=3.0, fhir_request_timeout_s=2.5, fhir_retries=RETRIES,
                               fhir_max_response_mb=MAX_MB, fhir_max_entries_per_page=MAX_ENTRIES)


@pytest.fixture(scope="module")
def breaker_service(cds_service_factory: Callable[..., ServiceServer]) -> ServiceServer:
    """Opens after 3 failures and stays open longer than any test here takes."""
    return cds_service_factory(fhir_breaker_failures=3, fhir_breaker_cooldown_s=60.0,
                               fhir_breaker_first_cooldown_s=60.0)


@pytest.fixture(scope="module")
def short_breaker_service(cds_service_factory: Callable[..., ServiceServer]) -> ServiceServer:
    return cds_service_factory(fhir_breaker_failures=3, fhir_breaker_cooldown_s=COOL_DOWN_S)


def hook(http: httpx.Client, service: ServiceServer, faulty: FaultyFhirServer, *,
         prefetch: Json | None = None) -> httpx.Response:
    """The hook with fhirServer pointing at the faulty server; 200 (a valid CDS Hooks body) or 412, never else."""
    response = post_hook(http, service, hook_body(PID, prefetch=prefetch, fhir_server=faulty.base_url,
                                                  token="fault-token"))
    assert response.status_code in (200, 412), response.text[:500]
    return response


def prefetched_patient(fhir_server: FhirTestServer) -> Json:
    response = fhir_server.get(f"Patient/{PID}")
    assert response.status_code == 200
    return {"patient": response.json()}


def diagnostics(response: httpx.Response) -> str:
    assert response.status_code == 412, response.text[:500]
    return str(assert_operation_outcome(response)["issue"][0]["diagnostics"])


def assert_only_conditions_unknown(card: Json, *words: str) -> str:
    """The Condition search failed: `diagnosis` is unknown with the reason, nothing fails, the rest is read."""
    rows = card_rows(card)
    assert not [cid for cid, (_, _, st) in rows.items() if st == "not-met"], rows
    st, cell = status(card, "diagnosis")
    assert st == "unknown", (st, cell)
    assert "'conditions'" in cell, cell
    for word in words:
        assert word in cell, (word, cell)
    assert status(card, "age")[0] == "met" and status(card, "platelets")[0] == "met"
    return cell


def assert_full_card(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text[:500]
    assert_card_matches_report(only_card(response.json()), cli_report(NAME))


# --------------------------------------------------------------------------- the faulty server itself


def test_without_a_script_the_faulty_server_is_a_transparent_proxy(
        http: httpx.Client, service: ServiceServer, patient: str, faulty: FaultyFhirServer) -> None:
    assert_full_card(hook(http, service, faulty))
    assert faulty.count() == SEARCHES, faulty.by_resource()


# --------------------------------------------------------------------------- retries


def test_503_is_retried_to_its_bound_and_then_only_its_criteria_are_unknown(
        http: httpx.Client, service: ServiceServer, patient: str, faulty: FaultyFhirServer) -> None:
    faulty.script("Condition", fault.status(503))
    card = only_card(hook(http, service, faulty).json())
    assert faulty.count("Condition") == 1 + RETRIES
    assert_only_conditions_unknown(card, "503", f"{1 + RETRIES} attempts")


def test_429_with_retry_after_is_honoured_and_the_retry_gets_the_data(
        http: httpx.Client, service: ServiceServer, patient: str, faulty: FaultyFhirServer) -> None:
    faulty.script("Condition", fault.status(429, retry_after="1"), times=1)
    assert_full_card(hook(http, service, faulty))
    assert faulty.count("Condition") == 2


def test_a_retry_after_beyond_the_deadline_is_not_waited_for(
        http: httpx.Client, service: ServiceServer, patient: str, faulty: FaultyFhirServer) -> None:
    faulty.script("Condition", fault.status(503, retry_after="30"))
    card = only_card(hook(http, service, faulty).json())
    assert faulty.count("Condition") == 1
    assert_only_conditions_unknown(card, "503", "Retry-After 30 s", "deadline")


def test_retries_stop_at_the_deadline_not_at_their_count(
        http: httpx.Client, cds_service_factory: Callable[..., ServiceServer], patient: str,
        faulty: FaultyFhirServer) -> None:
    """Ten retries allowed, one second apart, in a 2.5 s budget: the deadline decides, and the hook answers."""
    persistent = cds_service_factory(fhir_deadline_s=2.5, fhir_retries=10)
    faulty.script("Condition", fault.status(503, retry_after="1"))
    card = only_card(hook(http, persistent, faulty).json())
    assert 2 <= faulty.count("Condition") <= 3, faulty.count("Condition")
    assert_only_conditions_unknown(card, "503", "deadline")


def test_a_connection_reset_before_any_byte_is_retried(
        http: httpx.Client, service: ServiceServer, patient: str, faulty: FaultyFhirServer) -> None:
    faulty.script("Condition", fault.reset(), times=2)
    assert_full_card(hook(http, service, faulty))
    assert faulty.count("Condition") == 3  # two resets (whoever resent them), then the answer


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410, 500])
def test_other_error_statuses_are_never_retried(
        code: int, http: httpx.Client, service: ServiceServer, patient: str, faulty: FaultyFhirServer) -> None:
    faulty.script("Condition", fault.status(code))
    card = only_card(hook(http, service, faulty).json())
    assert faulty.count("Condition") == 1
    assert_only_conditions_unknown(card, str(code))


def test_a_timed_out_request_is_not_retried(
        http: httpx.Client, cds_service_factory: Callable[..., ServiceServer], patient: str,
        faulty: FaultyFhirServer) -> None:
    """A server that did not answer in time is not asked again within the same hook: that would only add load."""
    quick = cds_service_factory(fhir_deadline_s=3.0, fhir_request_timeout_s=0.5)
    faulty.script("Condition", fault.delay(5.0))
    card = only_card(hook(http, quick, faulty).json())
    assert faulty.count("Condition") == 1
    assert_only_conditions_unknown(card, "in time")


# --------------------------------------------------------------------------- what comes back is not FHIR


SEARCH_FAULTS: dict[str, tuple[fault.Behaviour, tuple[str, ...]]] = {
    "garbage bytes": (fault.garbage(), ("non-JSON",)),
    "HTML page with 200": (fault.html_page(200), ("HTML",)),
    "HTML error page": (fault.html_page(502), ("502",)),
    "truncated JSON": (fault.truncated(), ("truncated JSON",)),
    "JSON that is no FHIR resource": (fault.not_a_resource(), ("not a FHIR resource",)),
    "XML instead of JSON": (fault.raw(200, b'<Bundle xmlns="http://hl7.org/fhir"/>', "application/fhir+xml"),
                            ("XML",)),
    "empty body": (fault.raw(200, b""), ("empty answer",)),
    "an OperationOutcome with 200": (fault.raw(200, b'{"resourceType": "OperationOutcome", "issue": []}'),
                                     ("did not come back as a Bundle",)),
    "a Bundle whose entry is not a list": (fault.raw(200, b'{"resourceType": "Bundle", "entry": {}}'),
                                           ("malformed Bundle",)),
    "reset mid-response": (fault.reset_mid_response(), ("broke",)),
    "oversized, declared": (fault.oversized(2 * MAX_MB), (f"more than {MAX_MB:g} MB",)),
    "oversized, chunked": (fault.oversized(8 * MAX_MB, chunked=True), (f"more than {MAX_MB:g} MB",)),
    "too many entries in a page": (fault.many_entries(MAX_ENTRIES + 1), (f"{MAX_ENTRIES + 1} entries",)),
    "next link to itself": (fault.next_loop(), ("repeated a next link",)),
    "forbidden": (fault.status(403), ("refused access", "403")),
}


@pytest.mark.parametrize("case", list(SEARCH_FAULTS))
def test_a_broken_search_answer_makes_only_its_criteria_unknown(
        case: str, http: httpx.Client, service: ServiceServer, patient: str, faulty: FaultyFhirServer) -> None:
    behaviour, words = SEARCH_FAULTS[case]
    faulty.script("Condition", behaviour)
    card = only_card(hook(http, service, faulty).json())
    assert_only_conditions_unknown(card, *words)
    # none of these is transient: asked once (the self-looping next link: the page and its one repeat)
    assert faulty.count("Condition") == (2 if case == "next link to itself" else 1)


def test_endless_next_links_stop_at_the_page_cap(
        http: httpx.Client, service: ServiceServer, patient: str, faulty: FaultyFhirServer) -> None:
    faulty.script("Condition", fault.endless_pages())
    card = only_card(hook(http, service, faulty).json())
    assert_only_conditions_unknown(card, f"more than {MAX_PAGES} pages")
    assert faulty.count("Condition") == MAX_PAGES


PATIENT_FAULTS: dict[str, tuple[fault.Behaviour, str, str]] = {
    # the words of the diagnostics, and the issue-type code an integrator's retry logic reads
    "401": (fault.status(401), "refused access", "forbidden"),
    "403": (fault.status(403), "refused access", "forbidden"),
    "404": (fault.status(404), "not found", "not-found"),
    "500": (fault.status(500), "500", "transient"),
    "503 every time": (fault.status(503), f"{1 + RETRIES} attempts", "transient"),
    "429 every time": (fault.status(429, "0"), f"{1 + RETRIES} attempts", "throttled"),
    "HTML page": (fault.html_page(), "HTML", "invalid"),
    "garbage bytes": (fault.garbage(), "non-JSON", "invalid"),
    "truncated JSON": (fault.truncated(), "truncated JSON", "invalid"),
    "JSON that is no FHIR resource": (fault.not_a_resource(), "not a FHIR resource", "invalid"),
    "reset mid-response": (fault.reset_mid_response(), "broke", "transient"),
    "oversized": (fault.oversized(2 * MAX_MB), "MB", "too-costly"),
    "no answer in time": (fault.delay(10.0), "in time", "timeout"),
}


@pytest.mark.parametrize("case", list(PATIENT_FAULTS))
def test_a_patient_that_cannot_be_read_is_412_with_the_reason(
        case: str, http: httpx.Client, service: ServiceServer, patient: str, faulty: FaultyFhirServer) -> None:
    behaviour, words, issue = PATIENT_FAULTS[case]
    faulty.script("Patient", behaviour)
    response = hook(http, service, faulty)
    said = diagnostics(response)
    assert words in said, said
    assert response.json()["issue"][0]["code"] == issue, response.json()


# --------------------------------------------------------------------------- paging the HAPI way


@pytest.mark.parametrize("style", ["absolute", "relative"])
def test_hapi_getpages_next_links_are_followed(
        style: str, http: httpx.Client, service: ServiceServer, fhir_server: FhirTestServer, patient: str,
        faulty: FaultyFhirServer) -> None:
    """`{base}?_getpages=…` and `?_getpages=…` (relative to the base) both page on the same server."""
    (labs,) = [s for s in merge_searches(searches(PID, fhir_wanted(trial()), AS_OF))
              if "date" in s.params and s.resource_type == "Observation"]
    entries = len(fhir_server.get(labs.resource_type, labs.params).json().get("entry", []))
    size = 3
    assert entries > 2 * size, "the fixture's labs fit in two pages: the test would not show paging"
    faulty.script("Observation", fault.hapi_pages(size, style), query=LABS)
    assert_full_card(hook(http, service, faulty))
    assert faulty.count(PAGE_ID) == math.ceil(entries / size) - 1


# --------------------------------------------------------------------------- the circuit breaker


def test_the_breaker_opens_after_n_failures_and_later_hooks_do_not_call_the_server(
        http: httpx.Client, breaker_service: ServiceServer, fhir_server: FhirTestServer, patient: str,
        faulty: FaultyFhirServer) -> None:
    faulty.script("*", fault.status(500))
    assert "500" in diagnostics(hook(http, breaker_service, faulty))
    sent = faulty.count()
    assert sent == SEARCHES  # in parallel: all were on their way before the third failure came back

    said = diagnostics(hook(http, breaker_service, faulty))  # no Patient: 412 at once, saying why
    assert f"the FHIR server at {faulty.base_url} is failing" in said and "not called for" in said, said
    card = only_card(hook(http, breaker_service, faulty, prefetch=prefetched_patient(fhir_server)).json())
    assert status(card, "age")[0] == "met"  # the prefetched Patient; every search failed at once, saying why
    for cid in ("diagnosis", "platelets"):
        st, cell = status(card, cid)
        assert st == "unknown" and "is failing" in cell and "not called for" in cell, (cid, cell)
    assert faulty.count() == sent, "an open breaker let requests through"


def test_after_the_cool_down_one_trial_request_closes_the_breaker(
        http: httpx.Client, short_breaker_service: ServiceServer, patient: str, faulty: FaultyFhirServer) -> None:
    faulty.script("*", fault.status(500))
    hook(http, short_breaker_service, faulty)
    time.sleep(COOL_DOWN_S + 0.2)
    faulty.heal()
    faulty.clear()
    assert_full_card(hook(http, short_breaker_service, faulty))  # the other calls waited for the trial's outcome
    assert faulty.count() == SEARCHES


def test_a_failed_trial_request_opens_the_breaker_again(
        http: httpx.Client, short_breaker_service: ServiceServer, patient: str, faulty: FaultyFhirServer) -> None:
    faulty.script("*", fault.status(500))
    hook(http, short_breaker_service, faulty)
    time.sleep(COOL_DOWN_S + 0.2)
    faulty.clear()
    diagnostics(hook(http, short_breaker_service, faulty))
    assert faulty.count() == 1, faulty.seen()  # the trial, and nothing else
    assert "is failing" in diagnostics(hook(http, short_breaker_service, faulty))
    assert faulty.count() == 1


@pytest.mark.parametrize("code", [401, 403, 404])
def test_refusals_and_not_found_do_not_open_the_breaker(
        code: int, http: httpx.Client, breaker_service: ServiceServer, patient: str,
        faulty: FaultyFhirServer) -> None:
    """A server that says no is up: a wrong token must not make the service stop calling it."""
    faulty.script("*", fault.status(code))
    for _ in range(3):
        assert str(code) in diagnostics(hook(http, breaker_service, faulty))
    assert faulty.count() == 3 * SEARCHES


# --------------------------------------------------------------------------- the CLI


runner = CliRunner()


def cli(faulty: FaultyFhirServer) -> tuple[int, str, str]:
    result = runner.invoke(cli_app, ["evaluate", "--fhir-server", faulty.base_url, "--patient", PID, "--as-of",
                                     AS_OF.isoformat(), "--format", "json"])
    return result.exit_code, result.stdout, result.stderr


def test_cli_retries_a_busy_server_and_prints_the_same_report(patient: str, faulty: FaultyFhirServer) -> None:
    code, healthy, err = cli(faulty)
    assert code == 0, err
    before = faulty.count("Observation")
    faulty.script("Observation", fault.status(503, retry_after="0"), times=1)
    faulty.script("Condition", fault.reset(), times=1)
    code, out, err = cli(faulty)
    assert code == 0, err
    assert json.loads(out) == json.loads(healthy)
    assert faulty.count("Observation") == 2 * before + 1


@pytest.mark.parametrize(("behaviour", "words"), [(fault.garbage(), "non-JSON"), (fault.html_page(502), "502"),
                                                  (fault.oversized(60, chunked=True), "more than 50 MB")])
def test_cli_patient_fault_is_one_line_and_exit_2(behaviour: fault.Behaviour, words: str, patient: str,
                                                  faulty: FaultyFhirServer) -> None:
    faulty.script("Patient", behaviour)
    code, out, err = cli(faulty)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("axiom-cds: error:") and words in err, err


# --------------------------------------------------------------------------- the breaker on its own


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_breaker_counts_only_consecutive_failures() -> None:
    clock = Clock()
    breaker = CircuitBreaker("http://ehr.example/fhir", failures=3, cooldown_s=30, clock=clock, first_cooldown_s=30)
    for outcome in (Outcome.FAILED, Outcome.FAILED, Outcome.OK, Outcome.FAILED, Outcome.FAILED, Outcome.NEUTRAL):
        assert await breaker.admit() is False
        breaker.record(outcome, probe=False, reason="503")
    assert breaker.state == "closed"
    breaker.record(Outcome.FAILED, probe=False, reason="503")
    assert breaker.state == "open"
    with pytest.raises(BreakerOpenError, match=r"3 failures in a row, last: 503\); not called for 30 s"):
        await breaker.admit()
    clock.now += 29.95
    with pytest.raises(FhirServerError, match=r"not called for 0\.1 s"):
        await breaker.admit()


async def test_breaker_lets_one_trial_through_and_the_others_wait_for_its_outcome() -> None:
    clock = Clock()
    breaker = CircuitBreaker("http://ehr.example/fhir", failures=1, cooldown_s=5, clock=clock)
    breaker.record(Outcome.FAILED, probe=False, reason="timeout")
    clock.now += 5
    assert await breaker.admit() is True  # the trial
    waiting = [asyncio.ensure_future(breaker.admit()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiting) and breaker.state == "half-open"
    breaker.record(Outcome.OK, probe=True)
    assert await asyncio.gather(*waiting) == [False, False, False]
    assert breaker.state == "closed"


async def test_a_failed_trial_reopens_and_an_inconclusive_one_hands_the_trial_on() -> None:
    clock = Clock()
    breaker = CircuitBreaker("http://ehr.example/fhir", failures=1, cooldown_s=5, clock=clock)
    breaker.record(Outcome.FAILED, probe=False, reason="timeout")
    clock.now += 5
    assert await breaker.admit() is True
    waiter = asyncio.ensure_future(breaker.admit())
    await asyncio.sleep(0)
    breaker.record(Outcome.NEUTRAL, probe=True)  # e.g. cancelled by the hook's deadline: decides nothing
    assert await waiter is True  # the next caller is the trial
    breaker.record(Outcome.FAILED, probe=True, reason="500")
    assert breaker.state == "open"
    with pytest.raises(BreakerOpenError):
        await breaker.admit()


async def test_a_short_outage_costs_a_short_cool_down_and_a_long_one_backs_off() -> None:
    """A restarted server is tried again after 2 s; each failed trial doubles the wait, up to 30 s."""
    clock = Clock()
    breaker = CircuitBreaker("http://ehr.example/fhir", failures=1, cooldown_s=30, clock=clock, first_cooldown_s=2)
    breaker.record(Outcome.FAILED, probe=False, reason="connection refused")
    waits = []
    for _ in range(6):
        with pytest.raises(BreakerOpenError) as refused:
            await breaker.admit()
        waits.append(refused.value.args[0].rsplit("for ", 1)[1])
        clock.now += 60
        assert await breaker.admit() is True  # the trial fails again
        breaker.record(Outcome.FAILED, probe=True, reason="connection refused")
    assert waits == ["2 s", "4 s", "8 s", "16 s", "30 s", "30 s"]
    clock.now += 60
    assert await breaker.admit() is True
    breaker.record(Outcome.OK, probe=True)  # back: the next outage starts at 2 s again
    breaker.record(Outcome.FAILED, probe=False, reason="connection refused")
    with pytest.raises(BreakerOpenError, match="not called for 2 s"):
        await breaker.admit()


async def test_a_breaker_with_no_threshold_never_opens() -> None:
    breaker = CircuitBreaker("http://ehr.example/fhir", failures=0, cooldown_s=5)
    for _ in range(10):
        assert await breaker.admit() is False
        breaker.record(Outcome.FAILED, probe=False)
    assert breaker.state == "closed"


@pytest.mark.parametrize(("header", "seconds"), [("3", 3.0), ("0", 0.0), (None, None), ("soon", None),
                                                 ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after_is_read_as_seconds_or_a_date(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header) == seconds


async def test_a_pool_per_fhir_server_is_kept_for_the_most_recently_used_servers_only() -> None:
    """fhirServer is the caller's choice: naming many servers must not grow the service without bound."""
    pool = SessionPool(max_sessions=2)
    first = pool.get("http://127.0.0.1:9001/fhir")
    second = pool.get("http://127.0.0.1:9002/fhir")
    assert pool.get("http://127.0.0.1:9001/fhir/") is first, "one kept-alive pool per server, reused"
    pool.get("http://127.0.0.1:9003/fhir")  # a third server: the least recently used (9002) goes
    assert pool.session_count() == 2
    await asyncio.sleep(0)
    assert second.closed and not first.closed
    await pool.close()
    assert first.closed and pool.session_count() == 0


# --------------------------------------------------------------------------- connections in flight


async def test_a_read_waiting_for_a_busy_connection_is_told_so_and_the_server_is_not_blamed(
        patient: str, faulty: FaultyFhirServer) -> None:
    """One connection to the server: hook A's search holds it (a slow server) while hook B's Patient read
    waits past B's deadline. B's error says so — not "the server did not answer", since it was never
    asked — and the server's circuit breaker, opening at one failure, is not told of it."""
    import threading

    from adapter.fhir.client import SessionClient, read_patient

    pool = SessionPool(limit_per_host=1)
    breaker = pool.breaker(faulty.base_url, failures=1, cooldown_s=60.0)
    gate = threading.Event()
    faulty.script("Condition", fault.held(gate))

    def client(deadline_s: float) -> SessionClient:
        return SessionClient(faulty.base_url, pool.get(faulty.base_url), None, 30.0, breaker=breaker,
                             deadline=time.monotonic() + deadline_s, slots=pool.slots(faulty.base_url))
    try:
        slow = asyncio.ensure_future(client(30.0).get_json("Condition", {"patient": patient}))
        while faulty.count("Condition") == 0:
            await asyncio.sleep(0.02)
        with pytest.raises(FhirServerError) as refused:
            await read_patient(client(0.3), patient)
        said = str(refused.value)
        assert "all 1 connections this service keeps to the FHIR server" in said, said
        assert f"Patient/{patient} was not sent" in said and "did not answer" not in said
        assert faulty.count("Patient") == 0  # never sent
        gate.set()
        assert (await slow).resourceType == "Bundle"
        assert breaker.idle  # nothing counted against the server
        assert (await read_patient(client(5.0), patient))["id"] == patient
    finally:
        gate.set()
        await pool.close()
