"""The CDS Hooks service end to end, over HTTP, against a real FHIR server — as an EHR would use it.

Each test plays one part of an EHR integration: discovery, a prefetch built by running the service's
own templates against the FHIR server, no prefetch (the service fetches with the EHR's bearer token),
partial and broken prefetch, paging, an unreachable or slow server, bad requests, feedback and
suppression, and a browser's CORS preflight. Verdicts and per-criterion statuses are checked against
`axiom-cds evaluate` of the same fixture, so the card a clinician sees says what the report says.
Every hook response body goes through `assert_valid_response` (CDS Hooks card conformance).
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from adapter.cds.hook import may_call
from adapter.cli import app as cli_app
from adapter.engine import fhir_wanted
from adapter.fhir.gather import merge_searches
from adapter.fhir.queries import searches
from adapter.report.card import clinical, criterion_label
from adapter.synth import fhir
from adapter.trials import load_trial as trial
from tests.card_validator import assert_valid_response
from tests.fhir_server import FhirTestServer
from tests.helpers import CARD_SECTIONS
from tests.service_server import AS_OF, ProxiedRequest, RecordingProxy, ServiceServer

pytestmark = pytest.mark.fhir_server

Json = dict[str, Any]
FIXTURE_DIR = Path(__file__).parent / "fixtures"
FIXTURES = sorted(FIXTURE_DIR.glob("*.json"))
SANDBOX = "https://sandbox.cds-hooks.org"
TOKEN = "e2e-token-" + uuid.uuid4().hex  # unique, so finding it in a request cannot be a coincidence
PREFETCH_KEYS = {"patient", "labs", "performance", "history", "conditions", "medicationStatement",
                 "medicationRequest", "medicationAdministration", "diagnosticReports"}
LAB_CRITERIA = ("anc", "platelets", "hemoglobin", "total-bilirubin", "ast", "alt", "renal-function", "albumin",
                "sodium")
VERDICT_TEXT = {"likely-eligible": "likely eligible", "not-eligible": "not eligible", "needs-review": "needs review"}
# The card's decisive sections (a list each: "- **label:** patient — needs requirement[; to settle: …]").
SECTIONS = CARD_SECTIONS
# tests/fixtures/README.md: the verdict each hand-designed scenario was built to produce
DESIGNED_VERDICT = {
    "asps-likely-eligible": "likely-eligible", "asps-si-units-likely-eligible": "likely-eligible",
    "asps-ici-by-name-likely-eligible": "likely-eligible", "sts-safety-run-in-likely-eligible": "likely-eligible",
    "asps-low-platelets-not-eligible": "not-eligible", "asps-missing-labs-needs-review": "needs-review",
    "asps-stale-labs-needs-review": "needs-review", "asps-entered-in-error": "likely-eligible",
    "gilbert-bilirubin": "likely-eligible", "liver-mets-ast": "likely-eligible", "hiv-undetectable": "likely-eligible",
    "hiv-detectable-not-eligible": "not-eligible", "pregnant-not-eligible": "not-eligible",
    "breastfeeding-not-eligible": "not-eligible", "child-age-11-not-eligible": "not-eligible",
    "partial-birthdate-age-unknown": "needs-review", "breast-cancer-not-applicable": "not-applicable",
    "renal-cg-branch": "likely-eligible", "tumor-no-method-needs-review": "needs-review",
    "karnofsky-60-not-eligible": "not-eligible", "seed7-005-asps": "not-eligible",
}
OPERATION_OUTCOME = {"resourceType": "OperationOutcome",
                     "issue": [{"severity": "error", "code": "forbidden", "diagnostics": "access denied"}]}


# --------------------------------------------------------------------------- fixtures and data


@cache
def fixture_bundle(name: str) -> Json:
    bundle: Json = json.loads((FIXTURE_DIR / f"{name}.json").read_text())
    return bundle


def patient_id(bundle: Json) -> str:
    (pid,) = [e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    return str(pid)


@cache
def cli_report(name: str) -> Json:
    """`axiom-cds evaluate FIXTURE --as-of 2026-11-21 --format json`: the reference the card must agree with."""
    result = CliRunner().invoke(cli_app, ["evaluate", str(FIXTURE_DIR / f"{name}.json"), "--as-of",
                                          AS_OF.isoformat(), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    report: Json = json.loads(result.stdout)
    return report


def renamed(bundle: Json, old: str, new: str) -> Json:
    """A copy of a fixture under other ids (patient and resources), for tests that change or silence it."""
    copy: Json = json.loads(json.dumps(bundle).replace(old, new))
    return copy


@pytest.fixture(scope="module")
def loaded(fhir_server: FhirTestServer) -> Iterator[None]:
    """Every fixture patient in the FHIR server at once (once per module), so searches have others to skip."""
    bundles = [fixture_bundle(p.stem) for p in FIXTURES]
    for bundle in bundles:
        fhir_server.load(bundle)
    yield
    for bundle in bundles:
        fhir_server.unload(bundle)


@pytest.fixture(scope="module")
def proxy(fhir_server: FhirTestServer) -> Iterator[RecordingProxy]:
    """The FHIR server as the service sees it, with every request's Authorization recorded."""
    with RecordingProxy(fhir_server.base_url).running() as running:
        yield running


@pytest.fixture(scope="module")
def templates(http: httpx.Client, cds_service: ServiceServer) -> dict[str, str]:
    response = http.get(f"{cds_service.base_url}/cds-services")
    assert response.status_code == 200
    (service,) = [s for s in response.json()["services"] if s["id"] == "axiom-eligibility"]
    prefetch: dict[str, str] = service["prefetch"]
    return prefetch


# --------------------------------------------------------------------------- acting like an EHR


def fill(template: str, pid: str) -> str:
    return template.replace("{{context.patientId}}", pid)


def ehr_prefetch(http: httpx.Client, base_url: str, templates: dict[str, str], pid: str,
                 keys: set[str] | None = None, page_size: dict[str, int] | None = None) -> Json:
    """What an EHR puts in `prefetch`: each template, filled in and run against its FHIR server, as is."""
    out: Json = {}
    for key, template in templates.items():
        if keys is not None and key not in keys:
            continue
        query = fill(template, pid)
        if page_size and key in page_size:
            query = re.sub(r"_count=\d+", f"_count={page_size[key]}", query)
        response = http.get(f"{base_url}/{query}")
        assert response.status_code == 200, (key, response.text[:300])
        out[key] = response.json()
    return out


def hook_body(pid: str, *, prefetch: Json | None = None, fhir_server: str | None = None,
              token: str | None = None) -> Json:
    body: Json = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                  "context": {"patientId": pid, "userId": "Practitioner/e2e-dr"}}
    if fhir_server is not None:
        body["fhirServer"] = fhir_server
    if token is not None:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "e2e-client", "patient": pid}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def assert_operation_outcome(response: httpx.Response) -> Json:
    assert response.headers["content-type"].startswith("application/fhir+json"), response.headers
    body: Json = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"] and body["issue"][0]["severity"] == "error" and body["issue"][0]["diagnostics"], body
    return body


def post_hook(http: httpx.Client, service: ServiceServer, body: Json | bytes,
              headers: dict[str, str] | None = None) -> httpx.Response:
    """POST the hook; every success body is checked for CDS Hooks conformance, every error for an OperationOutcome."""
    if isinstance(body, bytes):
        response = http.post(service.hook_url, content=body,
                             headers={"Content-Type": "application/json", **(headers or {})})
    else:
        response = http.post(service.hook_url, json=body, headers=headers)
    if response.status_code == 200:
        assert_valid_response(response.json())
    else:
        assert_operation_outcome(response)
    return response


def call_hook(http: httpx.Client, service: ServiceServer, body: Json) -> Json:
    response = post_hook(http, service, body)
    assert response.status_code == 200, response.text[:500]
    cards: Json = response.json()
    return cards


def only_card(response: Json) -> Json:
    assert len(response["cards"]) == 1, response
    card: Json = response["cards"][0]
    return card


def without_uuids(card: Json) -> Json:
    """The card minus what is random per response (card and suggestion uuids)."""
    copy: Json = json.loads(json.dumps(card))
    copy.pop("uuid", None)
    for suggestion in copy.get("suggestions", []):
        suggestion.pop("uuid", None)
    return copy


def _shown(text: str) -> str:
    """The text a renderer shows: Markdown backslash escapes (chart text is escaped) removed."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text.strip())


def card_rows(card: Json) -> dict[str, tuple[str, str, str]]:
    """Every criterion on the card: id → (requirement, patient text, status). The decisive lists (not
    met, unknown) carry all three; a met criterion with a note is a list item (its value and note); the plain
    met and the not-applicable criteria are named on one line each (their label only)."""
    labels = {criterion_label(trial(), cid): cid for cid in trial().criterion_ids}
    rows: dict[str, tuple[str, str, str]] = {}

    def add(cid: str, row: tuple[str, str, str]) -> None:
        assert cid not in rows, f"criterion {cid} appears twice in the card"
        rows[cid] = row

    section = None
    for line in card["detail"].splitlines():
        if line in SECTIONS:
            section = SECTIONS[line]
            continue
        decisive = re.fullmatch(r"- \*\*(.+?):\*\* (.*) — needs (.*?)(?:; to settle: .*)?", line)
        if section and decisive:
            name, patient, requirement = (_shown(g) for g in decisive.groups())
            add(labels[name], (requirement, patient, section))
        elif not line.startswith("- "):
            section = None
        if section is None and line.startswith("- ") and not line.startswith("- [ ]") and " — " in line:
            for name, cid in labels.items():  # "- AST 24 U/L …, ALT 21 U/L … — the note they share"
                if re.search(rf"(^- |, ){re.escape(name)} ", line):
                    add(cid, ("", _shown(line[2:]), "met"))
        for head, st in (("**Also met:** ", "met"), ("**Not applicable:** ", "not-applicable")):
            if line.startswith(head):
                for name, cid in labels.items():
                    if re.search(rf"(^|, ){re.escape(name)}( \(|,|\.\s*$)", line[len(head):]):
                        add(cid, ("", "", st))
    return rows


def verdict_of(card: Json) -> str:
    found = [v for v, text in VERDICT_TEXT.items() if text in card["summary"]]
    assert len(found) == 1, card["summary"]
    return found[0]


def assert_card_matches_report(card: Json, report: Json) -> None:
    """The card says what `axiom-cds evaluate` says: the verdict, and each criterion's status and value."""
    assert verdict_of(card) == report["overall"]
    rows = card_rows(card)
    assert set(rows) == {c["id"] for c in report["criteria"]}, "the card's criteria differ from the report's"
    for c in report["criteria"]:
        requirement, patient, status = rows[c["id"]]
        assert status == c["status"], f"{c['id']}: card {status!r}, report {c['status']!r}"
        if c["status"] in ("not-met", "unknown"):  # a decisive row: the requirement and what the chart has
            assert requirement == clinical(c["requirement"])
            shown = clinical(c.get("note") or "") if c.get("observed") and c["observed"] in (c.get("note") or "") \
                else clinical(c.get("observed") or "")
            assert shown in patient, f"{c['id']}: {shown!r} not in the card's {patient!r}"
        elif c["status"] == "met" and c.get("note") and report["overall"] != "not-eligible":
            assert clinical(c["note"]) in patient, f"{c['id']}: its note is not on the card: {patient!r}"
    suggestions = card.get("suggestions", [])
    for action in (a for s in suggestions for a in s["actions"]):  # every order is for this patient
        assert action["resource"]["subject"] == {"reference": report["patient"]}, action
    referrals = [s for s in suggestions if s["label"].startswith("Refer")]
    if report["overall"] == "not-eligible":
        assert not referrals, "a patient who fails a criterion is not referred"
    else:
        (referral,) = referrals
        assert referral.get("isRecommended", False) is (report["overall"] == "likely-eligible")


def status(card: Json, cid: str) -> tuple[str, str]:
    """(status, patient cell) of one criterion in the card."""
    _, patient, st = card_rows(card)[cid]
    return st, patient


def prefetch_card(http: httpx.Client, service: ServiceServer, fhir_server: FhirTestServer,
                  templates: dict[str, str], name: str) -> Json:
    pid = patient_id(fixture_bundle(name))
    return only_card(call_hook(http, service, hook_body(pid, prefetch=ehr_prefetch(
        http, fhir_server.base_url, templates, pid))))


def fhir_paths(requests: list[ProxiedRequest]) -> Counter[str]:
    """Requests by what they asked for: `Patient/{id}` reads, else the searched resource type."""
    out: Counter[str] = Counter()
    for r in requests:
        path = urlsplit(r.path).path.removeprefix("/fhir/")
        out[f"{r.method} {path}"] += 1
    return out


def expected_pages(fhir_server: FhirTestServer, pid: str) -> int:
    """How many pages the service's own searches (with their date floor, labs and performance status
    merged into one request) take on this server."""
    pages = 0
    for search in merge_searches(searches(pid, fhir_wanted(trial()), AS_OF)):
        response = fhir_server.get(search.resource_type, search.params)
        while True:
            assert response.status_code == 200
            pages += 1
            nxt = [link["url"] for link in response.json().get("link", []) if link["relation"] == "next"]
            if not nxt:
                break
            response = fhir_server.get(nxt[0])
    return pages


# --------------------------------------------------------------------------- 1. discovery


def test_discovery_lists_the_service_and_templates_that_run_on_a_real_fhir_server(
        http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None) -> None:
    """An EHR runs the prefetch templates itself: they must be searches a FHIR server accepts, for this patient."""
    response = http.get(f"{cds_service.base_url}/cds-services")
    assert response.status_code == 200
    (service,) = response.json()["services"]
    assert service["id"] == "axiom-eligibility" and service["hook"] == "patient-view"
    assert service["description"] and service["title"]
    assert set(service["prefetch"]) == PREFETCH_KEYS
    pid = patient_id(fixture_bundle("asps-likely-eligible"))
    strict = {"Prefer": "handling=strict"}  # a parameter the server does not understand is a 400, not ignored
    for key, template in service["prefetch"].items():
        assert "{{context.patientId}}" in template, key
        result = http.get(f"{fhir_server.base_url}/{fill(template, pid)}", headers=strict)
        assert result.status_code == 200, (key, result.text[:300])
        body = result.json()
        if key == "patient":
            assert body["resourceType"] == "Patient" and body["id"] == pid
            continue
        assert body["resourceType"] == "Bundle" and body["type"] == "searchset", key
        for entry in body.get("entry", []):
            resource = entry["resource"]
            if entry.get("search", {}).get("mode") == "include":
                assert resource["resourceType"] == "Medication"
                continue
            assert resource["subject"]["reference"] == f"Patient/{pid}", f"{key} returned another patient's data"
    # and they find the data: the labs template's code list matches this patient's labs
    assert any(e["resource"]["resourceType"] == "Observation" for e in http.get(
        f"{fhir_server.base_url}/{fill(service['prefetch']['labs'], pid)}").json().get("entry", []))


# --------------------------------------------------------------------------- 2. prefetch only


@pytest.mark.parametrize("name", [p.stem for p in FIXTURES])
def test_prefetch_only_card_agrees_with_the_cli_report(
        name: str, http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str]) -> None:
    """No fhirServer: everything comes from the prefetch, and the card says what `axiom-cds evaluate` says."""
    report = cli_report(name)
    assert report["overall"] == DESIGNED_VERDICT.get(name, report["overall"]), "the fixture changed its verdict"
    pid = patient_id(fixture_bundle(name))
    response = call_hook(http, cds_service, hook_body(pid, prefetch=ehr_prefetch(
        http, fhir_server.base_url, templates, pid)))
    if report["overall"] == "not-applicable":
        assert response == {"cards": []}, "a patient without a sarcoma must get no card"
        return
    assert_card_matches_report(only_card(response), report)


# --------------------------------------------------------------------------- 3. no prefetch: fetched with the token


@pytest.mark.parametrize("name", [p.stem for p in FIXTURES])
def test_without_prefetch_the_service_fetches_with_the_ehr_token(
        name: str, http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str], proxy: RecordingProxy) -> None:
    """Same card as from the prefetch; every FHIR request carried the EHR's bearer token; nothing fetched twice."""
    pid = patient_id(fixture_bundle(name))
    proxy.clear()
    response = call_hook(http, cds_service, hook_body(pid, fhir_server=proxy.base_url, token=TOKEN))
    seen = proxy.seen()
    assert seen, "the service did not call the FHIR server"
    assert {r.authorization for r in seen} == {f"Bearer {TOKEN}"}, "a FHIR request went without the EHR's token"
    plan = merge_searches(searches(pid, fhir_wanted(trial()), AS_OF))
    assert len(plan) == 7  # labs + performance in one request; history, conditions, 3 medication types, reports
    assert len(seen) == 1 + expected_pages(fhir_server, pid), fhir_paths(seen)  # the Patient read + every page
    assert fhir_paths(seen) >= Counter({f"GET Patient/{pid}": 1, **Counter(f"GET {s.resource_type}" for s in plan)})
    if cli_report(name)["overall"] == "not-applicable":
        assert response == {"cards": []}
        return
    card = only_card(response)
    assert_card_matches_report(card, cli_report(name))
    assert without_uuids(card) == without_uuids(prefetch_card(http, cds_service, fhir_server, templates, name))


# --------------------------------------------------------------------------- 4. partial prefetch


@pytest.mark.parametrize("name", ["asps-likely-eligible", "asps-low-platelets-not-eligible",
                                  "sts-safety-run-in-likely-eligible"])
def test_partial_prefetch_fetches_only_the_rest(
        name: str, http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str], proxy: RecordingProxy) -> None:
    """Patient and conditions prefetched: the service uses them and fetches exactly the other searches."""
    pid = patient_id(fixture_bundle(name))
    prefetch = ehr_prefetch(http, fhir_server.base_url, templates, pid, keys={"patient", "conditions"})
    proxy.clear()
    card = only_card(call_hook(http, cds_service, hook_body(pid, prefetch=prefetch, fhir_server=proxy.base_url,
                                                            token=TOKEN)))
    fetched = fhir_paths(proxy.seen())
    assert f"GET Patient/{pid}" not in fetched and "GET Condition" not in fetched, "prefetched data fetched again"
    # Observation twice: labs + performance status merged into one request, and history
    assert fetched == Counter({"GET Observation": 2, "GET DiagnosticReport": 1, "GET MedicationStatement": 1,
                               "GET MedicationRequest": 1, "GET MedicationAdministration": 1})
    assert without_uuids(card) == without_uuids(prefetch_card(http, cds_service, fhir_server, templates, name))
    assert_card_matches_report(card, cli_report(name))


# --------------------------------------------------------------------------- 5. null and OperationOutcome prefetch


def broken_prefetch(http: httpx.Client, fhir_server: FhirTestServer, templates: dict[str, str], pid: str) -> Json:
    """A full prefetch where two searches came back empty-handed (null) and one as an error."""
    prefetch = ehr_prefetch(http, fhir_server.base_url, templates, pid)
    prefetch["labs"] = None
    prefetch["history"] = None
    prefetch["medicationRequest"] = OPERATION_OUTCOME
    return prefetch


def test_null_and_error_prefetch_keys_are_fetched_from_the_server(
        http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str], proxy: RecordingProxy) -> None:
    name = "asps-likely-eligible"
    pid = patient_id(fixture_bundle(name))
    proxy.clear()
    card = only_card(call_hook(http, cds_service, hook_body(
        pid, prefetch=broken_prefetch(http, fhir_server, templates, pid), fhir_server=proxy.base_url, token=TOKEN)))
    assert fhir_paths(proxy.seen()) == Counter({"GET Observation": 2, "GET MedicationRequest": 1})
    assert without_uuids(card) == without_uuids(prefetch_card(http, cds_service, fhir_server, templates, name))


def test_null_and_error_prefetch_without_a_server_is_unknown_never_not_met(
        http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str]) -> None:
    """Data that could not be had must not fail the patient: the card comes back, needing review, saying why."""
    pid = patient_id(fixture_bundle("asps-likely-eligible"))
    card = only_card(call_hook(http, cds_service, hook_body(
        pid, prefetch=broken_prefetch(http, fhir_server, templates, pid))))
    rows = card_rows(card)
    assert verdict_of(card) == "needs-review"
    assert not [cid for cid, (_, _, st) in rows.items() if st == "not-met"], rows
    for cid in (*LAB_CRITERIA, "prior-ici-progression"):
        st, patient = status(card, cid)
        assert st == "unknown", (cid, st)
        assert "could not be obtained" in patient, (cid, patient)
    for cid in ("diagnosis", "advanced-disease", "age"):  # Patient and Conditions were prefetched
        assert status(card, cid)[0] == "met", cid


def test_a_failed_search_affects_only_the_criteria_that_need_it(
        http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str]) -> None:
    """Disease status (`history`) failing leaves the ICI criterion open, not the platelet count read from `labs`."""
    pid = patient_id(fixture_bundle("asps-likely-eligible"))
    prefetch = ehr_prefetch(http, fhir_server.base_url, templates, pid)
    prefetch["history"] = OPERATION_OUTCOME
    card = only_card(call_hook(http, cds_service, hook_body(pid, prefetch=prefetch)))
    assert status(card, "prior-ici-progression")[0] == "unknown"
    for cid in LAB_CRITERIA:
        assert status(card, cid)[0] == "met", (cid, status(card, cid))


def test_the_unknown_reason_names_the_search_that_was_missing(
        http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str]) -> None:
    """A coordinator told 'history was missing' for a platelet count goes looking in the wrong place."""
    pid = patient_id(fixture_bundle("asps-likely-eligible"))
    prefetch = ehr_prefetch(http, fhir_server.base_url, templates, pid)
    prefetch["labs"] = None
    prefetch["history"] = OPERATION_OUTCOME
    card = only_card(call_hook(http, cds_service, hook_body(pid, prefetch=prefetch)))
    st, patient = status(card, "platelets")
    assert st == "unknown" and "'labs'" in patient, patient


def test_labs_that_could_not_be_fetched_are_not_ordered(
        http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str]) -> None:
    """'Order missing labs' is for labs that are absent or stale, not for labs the service could not read."""
    pid = patient_id(fixture_bundle("asps-likely-eligible"))
    card = only_card(call_hook(http, cds_service, hook_body(
        pid, prefetch=broken_prefetch(http, fhir_server, templates, pid))))
    assert status(card, "platelets")[0] == "unknown"
    suggestions = card.get("suggestions", [])
    assert [s["label"] for s in suggestions if "lab" in s["label"].lower()] == [], suggestions


# --------------------------------------------------------------------------- 6. paginated prefetch

PAGE = 5  # the fixture has 13 lab results: three pages


def test_paginated_prefetch_is_followed_on_the_fhir_server(
        http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str], proxy: RecordingProxy) -> None:
    """A `labs` Bundle of 5 per page: the later pages come from fhirServer, and the card equals the unpaged one."""
    name = "asps-likely-eligible"
    pid = patient_id(fixture_bundle(name))
    # built through the proxy, so its next links point where fhirServer points
    prefetch = ehr_prefetch(http, proxy.base_url, templates, pid, page_size={"labs": PAGE})
    first_page = prefetch["labs"]
    assert any(link["relation"] == "next" for link in first_page["link"]), "the labs search fits one page"
    labs = len(ehr_prefetch(http, fhir_server.base_url, templates, pid, keys={"labs"})["labs"]["entry"])
    proxy.clear()
    card = only_card(call_hook(http, cds_service, hook_body(pid, prefetch=prefetch, fhir_server=proxy.base_url,
                                                            token=TOKEN)))
    seen = proxy.seen()
    # each later page of labs, and nothing else, was fetched — with the token
    assert {r.authorization for r in seen} == {f"Bearer {TOKEN}"}
    assert fhir_paths(seen) == Counter({"GET Observation": (labs - 1) // PAGE})
    offsets = sorted(int(parse_qs(urlsplit(r.path).query)["_offset"][0]) for r in seen)
    assert offsets == list(range(PAGE, labs, PAGE)), offsets
    assert without_uuids(card) == without_uuids(prefetch_card(http, cds_service, fhir_server, templates, name))
    assert status(card, "platelets")[0] == "met"


def test_paginated_prefetch_without_a_server_is_unknown_not_truncated(
        http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str]) -> None:
    """The first page alone is not the patient's labs: without a server to page through, labs are unknown."""
    pid = patient_id(fixture_bundle("asps-likely-eligible"))
    prefetch = ehr_prefetch(http, fhir_server.base_url, templates, pid, page_size={"labs": PAGE})
    card = only_card(call_hook(http, cds_service, hook_body(pid, prefetch=prefetch)))
    assert verdict_of(card) == "needs-review"
    st, patient = status(card, "platelets")
    assert st == "unknown" and "paged" in patient, patient


# --------------------------------------------------------------------------- 7. FHIR server down


@pytest.fixture
def closed_port_url() -> Iterator[str]:
    """A FHIR base URL on a port that is bound but not listening: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{closed.getsockname()[1]}/fhir"


def test_server_down_without_a_prefetched_patient_is_412(
        http: httpx.Client, cds_service: ServiceServer, closed_port_url: str) -> None:
    """No Patient, no advice: a missing Patient must never give a card about nobody."""
    response = post_hook(http, cds_service, hook_body("scn-asps-likely-eligible", fhir_server=closed_port_url,
                                                      token=TOKEN))
    assert response.status_code == 412
    assert "cannot reach" in assert_operation_outcome(response)["issue"][0]["diagnostics"]


def test_unknown_patient_on_the_server_is_412(http: httpx.Client, cds_service: ServiceServer,
                                              fhir_server: FhirTestServer, proxy: RecordingProxy) -> None:
    response = post_hook(http, cds_service, hook_body("e2e-nobody", fhir_server=proxy.base_url, token=TOKEN))
    assert response.status_code == 412
    assert "Patient/e2e-nobody" in assert_operation_outcome(response)["issue"][0]["diagnostics"]


def test_a_prefetched_patient_that_is_someone_else_is_not_used(
        http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str]) -> None:
    """context.patientId decides whose chart this is: another Patient in the prefetch gives no advice at all.
    The 412 is an OperationOutcome that says the context patient could not be had — and nothing about the
    other patient whose chart was sent."""
    other = patient_id(fixture_bundle("asps-likely-eligible"))
    prefetch = ehr_prefetch(http, fhir_server.base_url, templates, other)
    response = post_hook(http, cds_service, hook_body("scn-asps-low-platelets-not-eligible", prefetch=prefetch))
    assert response.status_code == 412
    body = assert_operation_outcome(response)
    (issue,) = body["issue"]
    assert issue["severity"] == "error" and issue["code"] == "not-found", issue
    assert "Patient/scn-asps-low-platelets-not-eligible was not prefetched" in issue["diagnostics"], issue
    assert "no FHIR server" in issue["diagnostics"], "why it could not be fetched instead"
    assert other not in response.text, "the other patient is not named"


def test_server_down_with_everything_prefetched_still_answers(
        http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str], closed_port_url: str) -> None:
    name = "asps-low-platelets-not-eligible"
    pid = patient_id(fixture_bundle(name))
    prefetch = ehr_prefetch(http, fhir_server.base_url, templates, pid)
    card = only_card(call_hook(http, cds_service, hook_body(pid, prefetch=prefetch, fhir_server=closed_port_url,
                                                            token=TOKEN)))
    assert_card_matches_report(card, cli_report(name))


def test_server_down_with_only_the_patient_prefetched_says_why_data_is_missing(
        http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str], closed_port_url: str) -> None:
    pid = patient_id(fixture_bundle("asps-likely-eligible"))
    prefetch = ehr_prefetch(http, fhir_server.base_url, templates, pid, keys={"patient"})
    card = only_card(call_hook(http, cds_service, hook_body(pid, prefetch=prefetch, fhir_server=closed_port_url)))
    assert verdict_of(card) == "needs-review"
    rows = card_rows(card)
    assert not [cid for cid, (_, _, st) in rows.items() if st == "not-met"], rows
    assert status(card, "age")[0] == "met"
    st, patient = status(card, "platelets")
    assert st == "unknown" and "cannot reach" in patient, patient


# --------------------------------------------------------------------------- 8. FHIR server slower than the deadline


@pytest.fixture(scope="module")
def slow_proxy(fhir_server: FhirTestServer) -> Iterator[RecordingProxy]:
    with RecordingProxy(fhir_server.base_url, delay_s=3.0).running() as running:
        yield running


@pytest.fixture(scope="module")
def impatient_service(cds_service_factory: Callable[..., ServiceServer]) -> ServiceServer:
    return cds_service_factory(fhir_deadline_s=1.0, fhir_request_timeout_s=2.5)


def test_slow_server_gives_a_card_that_says_the_deadline_passed(
        http: httpx.Client, impatient_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str], slow_proxy: RecordingProxy) -> None:
    """The EHR gets an answer it can act on — data could not be had in time — rather than waiting or a false fail."""
    pid = patient_id(fixture_bundle("asps-likely-eligible"))
    prefetch = ehr_prefetch(http, fhir_server.base_url, templates, pid, keys={"patient"})
    card = only_card(call_hook(http, impatient_service, hook_body(pid, prefetch=prefetch,
                                                                  fhir_server=slow_proxy.base_url, token=TOKEN)))
    assert verdict_of(card) == "needs-review"
    rows = card_rows(card)
    assert not [cid for cid, (_, _, st) in rows.items() if st == "not-met"], rows
    assert status(card, "age")[0] == "met"  # the prefetched Patient is used
    for cid in ("diagnosis", "measurable-disease", "performance-status", *LAB_CRITERIA):
        st, patient = status(card, cid)
        assert st == "unknown" and "deadline" in patient, (cid, st, patient)


def test_slow_server_without_a_prefetched_patient_is_412(
        http: httpx.Client, impatient_service: ServiceServer, slow_proxy: RecordingProxy) -> None:
    response = post_hook(http, impatient_service, hook_body("scn-asps-likely-eligible",
                                                            fhir_server=slow_proxy.base_url, token=TOKEN))
    assert response.status_code == 412
    assert "deadline" in assert_operation_outcome(response)["issue"][0]["diagnostics"]


def test_after_a_deadline_the_next_hook_is_served_normally(
        http: httpx.Client, impatient_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        slow_proxy: RecordingProxy, proxy: RecordingProxy) -> None:
    """Requests cancelled at the deadline must not poison the service's connection pool for later hooks."""
    pid = patient_id(fixture_bundle("asps-likely-eligible"))
    assert post_hook(http, impatient_service, hook_body(pid, fhir_server=slow_proxy.base_url)).status_code == 412
    card = only_card(call_hook(http, impatient_service, hook_body(pid, fhir_server=proxy.base_url, token=TOKEN)))
    assert_card_matches_report(card, cli_report("asps-likely-eligible"))


# --------------------------------------------------------------------------- 9. malformed requests


def _valid() -> Json:
    return hook_body("scn-asps-likely-eligible", prefetch={})


def _without(key: str) -> Json:
    body = _valid()
    del body[key]
    return body


def _with(**changes: Any) -> Json:
    return {**_valid(), **changes}


MALFORMED: dict[str, tuple[bytes | Json, str]] = {
    "not JSON": (b"{\"hook\": \"patient-view\",", "JSON"),
    "JSON array": (b"[]", "object"),
    "missing hook": (_without("hook"), "hook"),
    "wrong hook": (_with(hook="order-select"), "hook"),
    "hookInstance not a UUID": (_with(hookInstance="instance-1"), "hookInstance"),
    "missing context": (_without("context"), "context"),
    "missing patientId": (_with(context={"userId": "Practitioner/x"}), "patientId"),
    "fhirAuthorization without fhirServer": (
        _with(fhirAuthorization={"access_token": "t", "token_type": "Bearer"}), "fhirServer"),
    "prefetch not an object": (_with(prefetch=[{"resourceType": "Patient"}]), "prefetch"),
    "token_type not Bearer": (_with(fhirServer="http://127.0.0.1:9/fhir",
                                    fhirAuthorization={"access_token": "t", "token_type": "MAC"}), "token_type"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_is_400_with_an_operation_outcome(
        case: str, http: httpx.Client, cds_service: ServiceServer) -> None:
    body, names = MALFORMED[case]
    response = post_hook(http, cds_service, body)
    assert response.status_code == 400, response.text
    assert names in assert_operation_outcome(response)["issue"][0]["diagnostics"]


# --------------------------------------------------------------- 10. another patient's data in the prefetch


def foreign_low_platelets(pid: str) -> Json:
    """Patient B's platelet count, newer than and failing where A's passes."""
    return fhir.observation("e2e-other-patient-plt", f"Patient/{pid}", "777-3",
                            (AS_OF - timedelta(days=1)).isoformat(), value=40, unit="K/uL")


def mixed_prefetch(http: httpx.Client, fhir_server: FhirTestServer, templates: dict[str, str]) -> tuple[str, Json]:
    pid = patient_id(fixture_bundle("asps-likely-eligible"))
    prefetch = ehr_prefetch(http, fhir_server.base_url, templates, pid)
    prefetch["labs"]["entry"].insert(0, {"fullUrl": f"{fhir_server.base_url}/Observation/e2e-other-patient-plt",
                                         "resource": foreign_low_platelets("e2e-patient-b"),
                                         "search": {"mode": "match"}})
    return pid, prefetch


def test_another_patients_observation_in_the_prefetch_is_never_used(
        http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str]) -> None:
    _, prefetch = mixed_prefetch(http, fhir_server, templates)
    pid = patient_id(fixture_bundle("asps-likely-eligible"))
    card = only_card(call_hook(http, cds_service, hook_body(pid, prefetch=prefetch)))
    assert verdict_of(card) == "likely-eligible"
    # the other patient's 40 K/uL would fail platelets (>= 100,000): met means this patient's 245 K/uL was used
    st, _ = status(card, "platelets")
    assert st == "met" and "40 K/µL" not in card["detail"], card["detail"]
    assert "e2e-other-patient-plt" not in card["detail"]


def test_the_card_says_another_patients_data_was_ignored(
        http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer, loaded: None,
        templates: dict[str, str]) -> None:
    pid, prefetch = mixed_prefetch(http, fhir_server, templates)
    card = only_card(call_hook(http, cds_service, hook_body(pid, prefetch=prefetch)))
    assert "another patient" in card["detail"], card["detail"]


# --------------------------------------------------------------- 11. feedback and suppression


def feedback_body(card: Json, outcome: str = "overridden", when: datetime | None = None) -> Json:
    item: Json = {"card": card["uuid"], "outcome": outcome,
                  "outcomeTimestamp": (when or datetime.now(UTC)).isoformat(timespec="seconds")}
    if outcome == "overridden":
        item["overrideReason"] = {"reason": card["overrideReasons"][0], "userComment": "discussed at tumor board"}
    return {"feedback": [item]}


@pytest.fixture
def feedback_patient(fhir_server: FhirTestServer) -> Iterator[tuple[str, Json]]:
    """A likely-eligible ASPS patient of its own (renamed copy), so silencing it affects no other test."""
    old = patient_id(fixture_bundle("asps-likely-eligible"))
    new = f"e2e-fb-{uuid.uuid4().hex[:8]}"
    bundle = renamed(fixture_bundle("asps-likely-eligible"), old, new)
    with fhir_server.loaded(bundle):
        yield new, bundle


def test_feedback_round_trip_and_suppression(
        http: httpx.Client, cds_service_factory: Callable[..., ServiceServer], fhir_server: FhirTestServer,
        feedback_patient: tuple[str, Json]) -> None:
    """Overridden once → silent for the same verdict; a changed verdict is news and shows again."""
    service = cds_service_factory(suppress_days=30)
    pid, _ = feedback_patient
    body = hook_body(pid, fhir_server=fhir_server.base_url)
    card = only_card(call_hook(http, service, body))
    assert verdict_of(card) == "likely-eligible"

    feedback = feedback_body(card)
    for _ in range(2):  # EHRs may send the same feedback twice
        response = http.post(service.feedback_url, json=feedback)
        assert response.status_code == 200, response.text
    with service.store() as store:
        stored = store.feedback_for(card["uuid"])
    assert len(stored) == 1, stored
    assert stored[0].outcome == "overridden"
    assert stored[0].override_reason_code == card["overrideReasons"][0]["code"]

    assert call_hook(http, service, body) == {"cards": []}, "an overridden card came back with the same verdict"

    changed = foreign_low_platelets(pid)  # now the patient's own, newest platelet count: 40 K/uL
    changed["id"] = f"{pid}-plt-new"
    with fhir_server.loaded(fhir.bundle([changed])):
        new_card = only_card(call_hook(http, service, body))
    assert verdict_of(new_card) == "not-eligible" and "platelets" in new_card["summary"]
    assert status(new_card, "platelets")[0] == "not-met"
    assert new_card["uuid"] != card["uuid"]


def test_suppression_off_with_zero_days(
        http: httpx.Client, cds_service_factory: Callable[..., ServiceServer], fhir_server: FhirTestServer,
        feedback_patient: tuple[str, Json]) -> None:
    service = cds_service_factory(suppress_days=0)
    pid, _ = feedback_patient
    body = hook_body(pid, fhir_server=fhir_server.base_url)
    card = only_card(call_hook(http, service, body))
    assert http.post(service.feedback_url, json=feedback_body(card)).status_code == 200
    again = only_card(call_hook(http, service, body))
    assert verdict_of(again) == verdict_of(card)


def test_accepted_feedback_does_not_silence_the_card(
        http: httpx.Client, cds_service_factory: Callable[..., ServiceServer], fhir_server: FhirTestServer,
        feedback_patient: tuple[str, Json]) -> None:
    service = cds_service_factory()
    pid, _ = feedback_patient
    body = hook_body(pid, fhir_server=fhir_server.base_url)
    card = only_card(call_hook(http, service, body))
    accepted = feedback_body(card, outcome="accepted")
    accepted["feedback"][0]["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    assert http.post(service.feedback_url, json=accepted).status_code == 200
    only_card(call_hook(http, service, body))
    with service.store() as store:
        assert store.feedback_for(card["uuid"])[0].accepted_suggestions == (card["suggestions"][0]["uuid"],)


CARD = str(uuid.uuid4())
NOW = "2026-11-21T10:00:00Z"
MALFORMED_FEEDBACK: dict[str, bytes | Json] = {
    "not JSON": b"feedback",
    "no feedback list": {"card": CARD},
    "empty feedback list": {"feedback": []},
    "card not a UUID": {"feedback": [{"card": "card-1", "outcome": "accepted", "outcomeTimestamp": NOW}]},
    "unknown outcome": {"feedback": [{"card": CARD, "outcome": "dismissed", "outcomeTimestamp": NOW}]},
    "no outcomeTimestamp": {"feedback": [{"card": CARD, "outcome": "accepted"}]},
    "timestamp without zone": {"feedback": [{"card": CARD, "outcome": "accepted",
                                             "outcomeTimestamp": "2026-11-21T10:00:00"}]},
    "override reason not a Coding": {"feedback": [{"card": CARD, "outcome": "overridden", "outcomeTimestamp": NOW,
                                                   "overrideReason": {"reason": "not relevant"}}]},
}


@pytest.fixture(scope="module")
def feedback_only_service(cds_service_factory: Callable[..., ServiceServer]) -> ServiceServer:
    """A service whose database only ever sees the malformed feedback below: it must stay empty."""
    return cds_service_factory()


@pytest.mark.parametrize("case", list(MALFORMED_FEEDBACK))
def test_malformed_feedback_is_400_and_stores_nothing(
        case: str, http: httpx.Client, feedback_only_service: ServiceServer) -> None:
    service = feedback_only_service
    body = MALFORMED_FEEDBACK[case]
    if isinstance(body, bytes):
        response = http.post(service.feedback_url, content=body, headers={"Content-Type": "application/json"})
    else:
        response = http.post(service.feedback_url, json=body)
    assert response.status_code == 400, response.text
    assert_operation_outcome(response)
    with service.store() as store:
        assert store.feedback_count() == 0


# --------------------------------------------------------------- 12. CORS (the sandbox calls from a browser)


@pytest.mark.parametrize(("path", "method", "headers"), [
    ("/cds-services", "GET", "authorization"),
    ("/cds-services/axiom-eligibility", "POST", "authorization, content-type"),
])
def test_cors_preflight_allows_the_sandbox(path: str, method: str, headers: str, http: httpx.Client,
                                           cds_service: ServiceServer) -> None:
    response = http.options(f"{cds_service.base_url}{path}", headers={
        "Origin": SANDBOX, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers})
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == SANDBOX
    assert method in response.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed, allowed


def test_cors_on_the_real_responses(http: httpx.Client, cds_service: ServiceServer, fhir_server: FhirTestServer,
                                    loaded: None, templates: dict[str, str]) -> None:
    """The browser drops a response without Access-Control-Allow-Origin, even after a good preflight."""
    origin = {"Origin": SANDBOX}
    discovery = http.get(f"{cds_service.base_url}/cds-services", headers=origin)
    assert discovery.headers["access-control-allow-origin"] == SANDBOX
    pid = patient_id(fixture_bundle("asps-likely-eligible"))
    body = hook_body(pid, prefetch=ehr_prefetch(http, fhir_server.base_url, templates, pid))
    response = post_hook(http, cds_service, body, headers=origin)
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == SANDBOX
    error = post_hook(http, cds_service, b"[]", headers=origin)  # errors must be readable by the page too
    assert error.status_code == 400 and error.headers["access-control-allow-origin"] == SANDBOX


# --------------------------------------------------------------- 13. which FHIR servers the service may call


def test_a_fhir_server_off_the_allow_list_is_never_called_and_the_card_says_why(
        http: httpx.Client, cds_service_factory: Callable[..., ServiceServer], fhir_server: FhirTestServer,
        loaded: None, templates: dict[str, str], proxy: RecordingProxy) -> None:
    """A hook's fhirServer is the caller's choice: with AXIOM_FHIR_SERVERS set, nothing else is called,
    so a caller cannot point the service (and the EHR's token) at an address of its choosing."""
    service = cds_service_factory(fhir_servers=["https://ehr.hospital.example/fhir"])
    pid = patient_id(fixture_bundle("asps-likely-eligible"))
    proxy.clear()
    refused = post_hook(http, service, hook_body(pid, fhir_server=proxy.base_url, token=TOKEN))
    assert refused.status_code == 412
    assert "not one this service is allowed to call" in refused.json()["issue"][0]["diagnostics"]
    prefetch = ehr_prefetch(http, fhir_server.base_url, templates, pid, keys={"patient", "conditions"})
    card = only_card(call_hook(http, service, hook_body(pid, prefetch=prefetch, fhir_server=proxy.base_url,
                                                        token=TOKEN)))
    st, patient_cell = status(card, "platelets")
    assert st == "unknown" and "not one this service is allowed to call" in patient_cell
    assert status(card, "diagnosis")[0] == "met", "what was prefetched is still used"
    assert proxy.seen() == [], "the FHIR server (and the token) were never contacted"


def test_a_fhir_server_on_the_allow_list_is_called(
        http: httpx.Client, cds_service_factory: Callable[..., ServiceServer], fhir_server: FhirTestServer,
        loaded: None, templates: dict[str, str], proxy: RecordingProxy) -> None:
    service = cds_service_factory(fhir_servers=["https://ehr.hospital.example/fhir", proxy.base_url])
    name = "asps-likely-eligible"
    pid = patient_id(fixture_bundle(name))
    proxy.clear()
    card = only_card(call_hook(http, service, hook_body(pid, fhir_server=proxy.base_url, token=TOKEN)))
    assert proxy.seen() and all(r.authorization == f"Bearer {TOKEN}" for r in proxy.seen())
    assert_card_matches_report(card, cli_report(name))


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://ehr.example/fhir", True),
    ("https://ehr.example/fhir/", True),
    ("https://ehr.example/fhir/tenant-a", True),  # under the base
    ("https://ehr.example/fhirx", False),  # a look-alike path
    ("https://ehr.example/other", False),
    ("http://ehr.example/fhir", False),  # another scheme
    ("https://ehr.example:8443/fhir", False),  # another port
    ("https://evil.example/fhir", False),
    ("https://ehr.example.evil.example/fhir", False),
])
def test_what_the_allow_list_matches(url: str, allowed: bool) -> None:
    assert may_call(url, ["https://ehr.example/fhir"]) is allowed
    assert may_call(url, []) is True  # no list: any server (the service warns at start when auth is on)


@pytest.mark.parametrize(("origin", "allowed"), [
    ("http://127.0.0.1:8095", True),  # the CDS Hooks sandbox built and served locally, on any port
    ("http://localhost:5173", True),
    ("https://sandbox.cds-hooks.org", True),
    ("http://127.0.0.1.evil.example", False),
    ("http://evil.example", False),
])
def test_cors_allows_the_sandbox_served_from_this_machine_on_any_port(
        origin: str, allowed: bool, http: httpx.Client, cds_service: ServiceServer) -> None:
    response = http.options(f"{cds_service.base_url}/cds-services", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
    assert (response.status_code == 200) is allowed, response.text
    assert (response.headers.get("access-control-allow-origin") == origin) is allowed
