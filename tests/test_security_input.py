"""What an attacker sends into the running service: malformed fields, chart text meant to run in the
EHR's browser, feedback for cards never issued (issue 9, items 5, 6, 11 and the feedback finding).

Every test talks to the REAL service over HTTP (tests/service_server.py, auth off: these are checks of
what a trusted or compromised EHR can send, not of who may send it).

- Fuzz: the prefetch of real charts (tests/fixtures/*.json and the vendored HL7 examples), with random
  fields given the wrong JSON type, integers of 400 and 5,000 digits, deep nesting, empty strings and
  odd unicode — seeded, so a failure names the case that reproduces it. Every answer is 200 with a valid
  cards response, or 400/412/422 with an OperationOutcome; never a 500, never a reset connection. The
  same mutated charts as Bundle files through the CLI: exit 0 or 2, never a traceback.
  `AXIOM_FUZZ_MUTATIONS` (default 300) and `AXIOM_FUZZ_SEED` change how many and which.
- Injection: chart text carrying HTML, links, emphasis, table pipes and newlines reaches the card
  detail inert (rendered with a CommonMark renderer).
- Feedback: timestamps at the ends of the calendar and cards the service never issued are refused
  with an OperationOutcome, and nothing is stored.
"""

from __future__ import annotations

import copy
import json
import os
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from adapter.cli import app as cli_app
from adapter.engine import fhir_wanted
from adapter.fhir.queries import CODE_PARAMS, PATIENT_KEY, searches
from adapter.report.card import criterion_label
from adapter.trials import load_trial
from tests.card_validator import assert_valid_response
from tests.helpers import decisive_rows
from tests.service_server import AS_OF, ServiceServer
from tests.test_hl7_examples import ASPS, brian, ghp, jenny, john, with_patient

Json = dict[str, Any]
FIXTURES = Path(__file__).parent / "fixtures"
MUTATIONS = int(os.environ.get("AXIOM_FUZZ_MUTATIONS", "300"))
SEED = int(os.environ.get("AXIOM_FUZZ_SEED", "9"))
REQUEST_TIMEOUT_S = 60.0  # one request; a hang is a failure of its own, not a stuck suite
REFUSALS = (400, 412, 422)


# --------------------------------------------------------------------------- the charts attacked

@cache
def charts() -> dict[str, Json]:
    """Real charts as collection Bundles: every synthetic fixture and five built from the HL7 examples."""
    out: dict[str, Json] = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(FIXTURES.glob("*.json"))}
    out |= {"hl7-jenny-m": jenny(ASPS), "hl7-brian-l": brian(), "hl7-john": john(), "hl7-pat2-ghp": ghp(),
            "hl7-pat2-101": with_patient("r4-Patient-pat2.json", "r4-Bundle-101.json")}
    return out


def patient_of(bundle: Json) -> str:
    (pid,) = [e["resource"]["id"] for e in bundle["entry"] if e.get("resource", {}).get("resourceType") == "Patient"]
    return str(pid)


@cache
def search_keys() -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Resource type → the first prefetch key that searches it; (system, code) → the Observation search
    that asks for that code."""
    by_type: dict[str, str] = {}
    by_code: dict[tuple[str, str], str] = {}
    for search in searches("-", fhir_wanted(load_trial()), None):
        by_type.setdefault(search.resource_type, search.key)
        for param in CODE_PARAMS:
            for token in search.params.get(param, "").split(","):
                system, _, code = token.partition("|")
                by_code.setdefault((system, code), search.key)
    return by_type, by_code


def key_of(item: Any, kind: str) -> str:
    """The prefetch key whose search would have found this entry: an Observation by its code, a
    Medication with the medication searches (as `_include` brings it), the rest by type."""
    by_type, by_code = search_keys()
    if kind == "Observation":
        resource = item.get("resource") if isinstance(item, dict) else None
        concept = resource.get("code") if isinstance(resource, dict) else None
        codings = concept.get("coding") if isinstance(concept, dict) else None
        for c in codings if isinstance(codings, list) else ():
            key = (c.get("system"), c.get("code")) if isinstance(c, dict) else None
            if key is not None and all(isinstance(k, str) for k in key) and key in by_code:
                return by_code[key]
    return by_type.get("MedicationRequest" if kind == "Medication" else kind, by_type["Observation"])


def prefetch_of(entries: list[Json], types: list[str], pid: str) -> Json:
    """The prefetch an EHR would send for this chart: the Patient read, each resource in the searchset
    that would have found it. `types`: each entry's type before mutation, so a mutated resourceType
    stays where the EHR put the resource (that is the attack)."""
    prefetch: Json = {}
    for item, kind in zip(entries, types, strict=True):
        if kind == "Patient" and isinstance(item, dict) and PATIENT_KEY not in prefetch:
            prefetch[PATIENT_KEY] = item.get("resource")
            continue
        bundle = prefetch.setdefault(key_of(item, kind), {"resourceType": "Bundle", "type": "searchset", "entry": []})
        bundle["entry"].append(item)
    prefetch.setdefault(PATIENT_KEY, {"resourceType": "Patient", "id": pid})
    return prefetch


# --------------------------------------------------------------------------- mutations


@dataclass(frozen=True)
class Raw:
    """JSON text put in as written: numbers no encoder would write, nesting deeper than it recurses."""

    text: str


def dumps(node: Any) -> str:
    """JSON text of a document that may hold Raw values."""
    if isinstance(node, Raw):
        return node.text
    if isinstance(node, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ",".join(dumps(v) for v in node) + "]"
    return json.dumps(node)


HUGE = [Raw("9" * 400), Raw("-" + "7" * 400), Raw("1" * 5000), Raw("-" + "3" * 5000), Raw("9" * 400 + ".5"),
        Raw("1e400"), Raw("-1e400"), Raw("1e-400")]
DEEP = [Raw("[" * 60 + "]" * 60), Raw('{"a":' * 300 + "1" + "}" * 300), Raw("[" * 3000 + "]" * 3000)]
TEXT = ["", " ", "💥", "\u202eevil", "\u0000", "\ud800", "é" * 3, "<img src=x onerror=alert(1)>", "9" * 5000,
        "1e400", "NaN", "-Infinity", "0001-01-01T00:00:00-14:00", "9999-12-31T23:59:59+14:00", "2026-02-30",
        "10000-01-01", "2026-11-21T25:61:00Z", "0000", "Patient/", "urn:uuid:", "#", "/", "a" * 10_000]
# the fields the product reads: most attempts go at one of them, the rest anywhere in the chart
READ = {"resourceType", "id", "status", "code", "coding", "system", "display", "text", "value", "unit",
        "comparator", "valueQuantity", "valueCodeableConcept", "valueInteger", "valueString", "valueBoolean",
        "effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued", "start", "end", "subject",
        "patient", "reference", "birthDate", "gender", "deceasedBoolean", "deceasedDateTime", "clinicalStatus",
        "verificationStatus", "category", "onsetDateTime", "abatementDateTime", "recordedDate", "extension",
        "url", "component", "hasMember", "result", "contained", "referenceRange", "low", "high",
        "interpretation", "method", "dataAbsentReason", "medicationCodeableConcept", "medicationReference",
        "intent", "authoredOn", "dateAsserted", "dosage", "stage", "bodySite", "entry", "fullUrl", "resource",
        "note", "identifier"}


def wrong_type(value: Any, rng: random.Random) -> Any:
    """A value of another JSON type than `value` (or a hostile one of the same type)."""
    choices: list[Any] = [None, True, 0, -1, 1.5, "x", [], {}, [None], [1], [[]], [{}], {"coding": 5},
                          {"value": "x"}, *HUGE, *DEEP, *TEXT]
    if isinstance(value, str):
        choices += [7, [value], {"value": value}, value * 50]
    elif isinstance(value, bool | int | float) and not isinstance(value, Raw):
        choices += [str(value), [value], -value if not isinstance(value, bool) else value, *HUGE, *HUGE]
    elif isinstance(value, list):
        choices += [value[:1] * 3, [*value, 42], [*value, "x"], {"0": value}]
    elif isinstance(value, dict):
        choices += [[value], {k: None for k in value}, {k: [v] for k, v in value.items()}]
    return rng.choice(choices)


def paths(node: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a document (dict keys and list indexes), parents first."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*here, k)
            yield from paths(v, (*here, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*here, i)
            yield from paths(v, (*here, i))


def get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


@dataclass(frozen=True)
class Case:
    number: int
    chart: str
    patient: str
    changes: tuple[str, ...]  # what was done, for the failure message
    prefetch: Json
    bundle: Json

    def hook_body(self) -> bytes:
        body = {"hook": "patient-view", "hookInstance": str(uuid.UUID(int=self.number)),
                "context": {"patientId": self.patient}, "prefetch": self.prefetch}
        return dumps(body).encode("utf-8", "surrogatepass")

    def bundle_bytes(self) -> bytes:
        return dumps(self.bundle).encode("utf-8", "surrogatepass")

    def __str__(self) -> str:
        return f"case {self.number} (AXIOM_FUZZ_SEED={SEED}), chart {self.chart}: {'; '.join(self.changes)}"


def mutate(entries: list[Json], rng: random.Random) -> list[str]:
    """One to three fields of the chart replaced in place; what was changed, in words."""
    places = list(paths(entries))
    read = [p for p in places if isinstance(p[-1], str) and p[-1] in READ]
    done = []
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(read if read and rng.random() < 0.8 else places)
        parent = get(entries, path[:-1])
        old = parent[path[-1]]
        if isinstance(parent, dict) and rng.random() < 0.1:
            del parent[path[-1]]
            done.append(f"{'/'.join(map(str, path))} removed")
        else:
            new = wrong_type(old, rng)
            parent[path[-1]] = new
            shown = new.text[:12] + f"…({len(new.text)} chars)" if isinstance(new, Raw) else repr(new)[:40]
            done.append(f"{'/'.join(map(str, path))} = {shown}")
        places = list(paths(entries))
        read = [p for p in places if isinstance(p[-1], str) and p[-1] in READ]
    return done


def cases(count: int = MUTATIONS, seed: int = SEED) -> Iterator[Case]:
    names = sorted(charts())
    for number in range(count):
        rng = random.Random(f"{seed}/{number}")
        name = rng.choice(names)
        original = charts()[name]
        entries: list[Json] = copy.deepcopy(original["entry"])
        types = [e["resource"]["resourceType"] for e in original["entry"]]
        changes = mutate(entries, rng)
        pid = patient_of(original)
        yield Case(number, name, pid, tuple(changes), prefetch_of(entries, types, pid),
                   {**original, "entry": entries})


# --------------------------------------------------------------------------- fuzz: the service


def is_outcome(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return (response.headers.get("content-type", "").startswith("application/fhir+json")
            and isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"
            and bool(body.get("issue")) and body["issue"][0].get("severity") == "error"
            and bool(body["issue"][0].get("diagnostics")))


def answer_problem(response: httpx.Response) -> str | None:
    """What is wrong with an answer to a mutated hook, or None when it is one the service may give."""
    if response.status_code == 200:
        try:
            assert_valid_response(response.json())
        except (AssertionError, ValueError) as exc:
            return f"200 but not a valid cards response: {str(exc)[:300]}"
        return None
    if response.status_code in REFUSALS:
        return None if is_outcome(response) else f"{response.status_code} without an OperationOutcome"
    return f"{response.status_code}: {response.text[:300]}"


@pytest.fixture(scope="module")
def service(cds_service_factory: Callable[..., ServiceServer]) -> ServiceServer:
    return cds_service_factory(suppress_days=0)  # every mutated chart gets its card, none is silenced


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as client:  # keep-alive: resets show
        yield client


def test_mutated_prefetches_never_get_a_server_error_or_a_reset_connection(
        service: ServiceServer, http: httpx.Client) -> None:
    """A field of the wrong type is read as absent: the card (or a 4xx OperationOutcome when the request
    itself is unusable), never a 500 — and the keep-alive connection survives every answer."""
    failures = []
    for case in cases():
        try:
            response = http.post(service.hook_url, content=case.hook_body(),
                                 headers={"Content-Type": "application/json"})
        except httpx.TransportError as exc:  # a reset or dropped connection
            failures.append(f"{case}: connection failed ({type(exc).__name__}: {exc})")
            continue
        if (problem := answer_problem(response)) is not None:
            failures.append(f"{case}: {problem}")
    assert not failures, f"{len(failures)} of {MUTATIONS} mutated hooks failed:\n" + "\n".join(failures[:15])


def test_mutated_bundles_never_give_a_traceback_on_the_cli(tmp_path: Path) -> None:
    """The same charts as Bundle files: `axiom-cds evaluate` prints the report (exit 0) or one error line
    (exit 2) — never a traceback."""
    runner = CliRunner()
    failures = []
    path = tmp_path / "bundle.json"
    for case in cases():
        path.write_bytes(case.bundle_bytes())
        result = runner.invoke(cli_app, ["evaluate", str(path), "--as-of", AS_OF.isoformat(), "--format", "card"])
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        if crashed or result.exit_code not in (0, 2):
            failures.append(f"{case}: exit {result.exit_code}, {type(result.exception).__name__}: "
                            f"{str(result.exception)[:200]}")
    assert not failures, f"{len(failures)} of {MUTATIONS} mutated Bundles failed:\n" + "\n".join(failures[:15])


# --------------------------------------------------------------------------- named attacks of item 5

BIG_400 = "9" * 400
BIG_5000 = "1" * 5000


def fixture_prefetch(name: str, change: Callable[[list[Json]], None] = lambda _: None) -> tuple[str, Json]:
    """(patient id, prefetch) of a synthetic fixture, its entries changed first by `change`."""
    original = charts()[name]
    entries = copy.deepcopy(original["entry"])
    change(entries)
    pid = patient_of(original)
    return pid, prefetch_of(entries, [e["resource"]["resourceType"] for e in original["entry"]], pid)


def of_code(entries: list[Json], code: str) -> Json:
    """The resource of the entries coded `code` (the fixtures code each lab once)."""
    found: Json = next(e["resource"] for e in entries
                       if any(c.get("code") == code for c in e["resource"].get("code", {}).get("coding", [])))
    return found


def hook(pid: str, prefetch: Json) -> Json:
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": pid},
            "prefetch": prefetch}


def post(http: httpx.Client, service: ServiceServer, body: Json) -> httpx.Response:
    """POST a hook whose JSON may hold Raw numbers."""
    return http.post(service.hook_url, content=dumps(body).encode(), headers={"Content-Type": "application/json"})


def rows(card: Json) -> dict[str, tuple[str, str]]:
    """criterion id → (patient text, status), as the Markdown source has them: the decisive lists (not
    met, unknown), and the plain met criteria the card names on its "Also met" line (patient text empty)."""
    labels = {criterion_label(load_trial(), cid): cid for cid in load_trial().criterion_ids}
    out = {}
    for name, (status, line) in decisive_rows(card["detail"]).items():
        out[labels[name]] = (line.split(":** ", 1)[1].rsplit(" — needs ", 1)[0], status)
    for line in card["detail"].splitlines():
        if line.startswith("**Also met:** "):
            names = line.removeprefix("**Also met:** ").strip().removesuffix(".").split(", ")
            out |= {labels[n]: ("", "met") for n in names}
    return out


PLATELETS = "777-3"


@pytest.mark.parametrize(("what", "value"), [
    ("an integer of 400 digits", Raw(BIG_400)),  # float() overflows
    ("an integer of 5,000 digits", Raw(BIG_5000)),  # past Python's int-string limit in json.loads
    ("a negative integer of 5,000 digits", Raw("-" + BIG_5000)),
    ("1e400", Raw("1e400")),
])
def test_a_platelet_count_no_double_holds_is_unknown_with_the_reason(
        service: ServiceServer, http: httpx.Client, what: str, value: Raw) -> None:
    """The one platelet count in the window is not a number the service can read: platelets is unknown
    (never met, never not-met) and the card says that Observation is not valid FHIR; the rest of the
    chart is evaluated as usual."""
    def change(entries: list[Json]) -> None:
        of_code(entries, PLATELETS)["valueQuantity"]["value"] = value

    pid, prefetch = fixture_prefetch("asps-likely-eligible", change)
    response = post(http, service, hook(pid, prefetch))
    assert response.status_code == 200, f"{what}: {response.status_code} {response.text[:300]}"
    (card,) = response.json()["cards"]
    patient, status = rows(card)["platelets"]
    assert status == "unknown", f"{what}: platelets {status} ({patient})"
    assert "not valid FHIR" in patient, patient
    assert rows(card)["hemoglobin"][1] == "met", "the other labs are read as usual"


@pytest.mark.parametrize(("what", "change"), [
    ("coding is a number", lambda es: of_code(es, "9581/3")["code"].__setitem__("coding", 5)),
    ("a lab's coding is a string", lambda es: of_code(es, "718-7")["code"].__setitem__("coding", "718-7")),
    ("a medication status is a list", lambda es: next(
        e["resource"] for e in es if e["resource"]["resourceType"] == "MedicationRequest").__setitem__(
        "status", ["active"])),
    ("a medication status is an object", lambda es: next(
        e["resource"] for e in es if e["resource"]["resourceType"] == "MedicationRequest").__setitem__(
        "status", {"code": "active"})),
    ("a unit is an integer of 400 digits", lambda es: of_code(es, PLATELETS)["valueQuantity"].__setitem__(
        "unit", Raw(BIG_400))),
    ("a reference range is an integer of 5,000 digits", lambda es: of_code(es, "1975-2").__setitem__(
        "referenceRange", Raw(BIG_5000))),
])
def test_one_field_of_the_wrong_type_is_not_a_server_error(
        service: ServiceServer, http: httpx.Client, what: str, change: Callable[[list[Json]], None]) -> None:
    pid, prefetch = fixture_prefetch("asps-likely-eligible", change)
    response = post(http, service, hook(pid, prefetch))
    assert response.status_code == 200, f"{what}: {response.status_code} {response.text[:300]}"
    assert_valid_response(response.json())


# --------------------------------------------------------------------------- item 11: chart text in the card

PAYLOAD = "<img src=x onerror=alert(1)> [x](javascript:alert(1)) **bold** a|b `tick`\n# heading"


class Html(HTMLParser):
    """What a rendered card holds: its tags, link targets, and the number of cells of each table row (a
    card has no table; one injected by chart text would show here)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.row_cells: list[int] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.row_cells.append(0)
        elif tag in ("td", "th"):
            self.row_cells[-1] += 1
        self.links += [v or "" for k, v in attrs if k in ("href", "src")]


def rendered(markdown: str) -> tuple[str, Html]:
    """The card detail as an EHR shows it: CommonMark with GFM tables, raw HTML passed through and every
    link target allowed (a renderer that trusts the service to send safe Markdown)."""
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table")
    md.validateLink = lambda url: True
    html = md.render(markdown)
    parsed = Html()
    parsed.feed(html)
    return html, parsed


def hostile_chart(entries: list[Json]) -> None:
    """The ASPS diagnosis's text and the platelet count's unit carry the payload."""
    of_code(entries, "9581/3")["code"]["text"] = PAYLOAD
    of_code(entries, PLATELETS)["valueQuantity"]["unit"] = PAYLOAD


def test_chart_text_reaches_the_card_as_inert_text(service: ServiceServer, http: httpx.Client) -> None:
    """A Condition display, a unit and a FHIR server's OperationOutcome diagnostics carrying HTML, a
    javascript: link, emphasis, a code span, a table pipe and a newline show in the card as the text they
    are: no image, no link, no bold, no heading, every table row still four cells — and the card's own
    table, bold and checklist are still markup."""
    pid, prefetch = fixture_prefetch("asps-likely-eligible", hostile_chart)
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing",
                                                              "diagnostics": PAYLOAD}]}
    prefetch["performance"] = outcome  # a criterion's reason: performance status unknown
    prefetch["diagnosticReports"] = outcome  # a data note under the table
    response = post(http, service, hook(pid, prefetch))
    assert response.status_code == 200, response.text[:300]
    (card,) = response.json()["cards"]
    html, parsed = rendered(card["detail"])

    assert "img" not in parsed.tags and not [u for u in parsed.links if "javascript" in u], html
    assert "a" not in parsed.tags, "the card detail holds no link at all"
    for tag in ("code", "h1", "em"):
        assert tag not in parsed.tags, f"<{tag}> from chart text:\n{html}"
    assert "<strong>bold</strong>" not in html
    shown = html.count("&lt;img src=x onerror=alert(1)&gt; [x](javascript:alert(1)) **bold** a|b `tick` # heading")
    # diagnosis and platelets are met, folded into "Also met" by label: the payload is shown as text
    # where the card shows chart text (the performance status reason, the data note)
    assert shown >= 2, f"the payload is shown as text where the chart put it (reason, note):\n{html}"

    decisive = sum(1 for st in rows(card).values() if st[1] != "met")
    assert "table" not in parsed.tags, "lists only: EHRs without Markdown tables read them too"
    # the payload's `|` and `**` did not split or add a decisive row: one list item per decisive criterion
    assert html.count("<li><strong>") == decisive, html
    assert parsed.tags.count("strong") >= 3, "the verdict, the checklist heading and the data notes heading"
    assert "[ ] " in html and "li" in parsed.tags, "the attestation checklist is a list"
    assert rows(card)["platelets"][1] == "met", "the unit's text is shown, its code still converts"
    assert "onerror" not in card["summary"] and "javascript" not in card["summary"], "no chart text in the summary"


# --------------------------------------------------------------------------- feedback


@pytest.fixture(scope="module")
def issued_card(service: ServiceServer, http: httpx.Client) -> Json:
    """A card the service issued: what feedback may be about."""
    pid, prefetch = fixture_prefetch("asps-likely-eligible")
    response = post(http, service, hook(pid, prefetch))
    assert response.status_code == 200, response.text[:300]
    (card,) = response.json()["cards"]
    assert isinstance(card, dict)
    return card


def feedback(card_uuid: str, when: str) -> Json:
    return {"feedback": [{"card": card_uuid, "outcome": "accepted", "outcomeTimestamp": when}]}


def stored_for(service: ServiceServer, card_uuid: str) -> list[str]:
    with service.store() as store:
        return [f.outcome_timestamp.isoformat() for f in store.feedback_for(card_uuid)]


@pytest.mark.parametrize("when", [
    "0001-01-01T00:00:00+14:00",  # 31 December of year 0 in UTC
    "9999-12-31T23:59:59-14:00",  # 1 January 10000 in UTC
    "0001-01-01T00:00:00.000001+00:01",
])
def test_a_feedback_timestamp_past_the_ends_of_the_calendar_is_a_400(
        service: ServiceServer, http: httpx.Client, issued_card: Json, when: str) -> None:
    response = http.post(service.feedback_url, json=feedback(issued_card["uuid"], when))
    assert response.status_code == 400, response.text[:300]
    assert is_outcome(response), response.text
    assert "feedback[0].outcomeTimestamp" in response.json()["issue"][0]["diagnostics"]
    assert when not in response.text, "the error names the field, it does not echo the value"
    assert stored_for(service, issued_card["uuid"]) == [] or all(
        not t.startswith(("0000", "10000")) for t in stored_for(service, issued_card["uuid"]))


@pytest.mark.parametrize(("when", "utc"), [
    ("0001-01-01T00:00:00-14:00", "0001-01-01T14:00:00+00:00"),
    ("9999-12-31T23:59:59+14:00", "9999-12-31T09:59:59+00:00"),
])
def test_a_feedback_timestamp_at_the_ends_of_the_calendar_is_stored_in_utc(
        service: ServiceServer, http: httpx.Client, issued_card: Json, when: str, utc: str) -> None:
    response = http.post(service.feedback_url, json=feedback(issued_card["uuid"], when))
    assert response.status_code == 200, response.text[:300]
    assert utc in stored_for(service, issued_card["uuid"])


def test_feedback_for_a_card_the_service_never_issued_is_a_422_and_stores_nothing(
        service: ServiceServer, http: httpx.Client, issued_card: Json) -> None:
    """Only the service's own cards get feedback: an override of an invented card could otherwise be
    stored by anyone who can call the endpoint. 422 — the request is well formed, the endpoint exists,
    the card it names is not one the service knows; one unknown card refuses the whole batch."""
    with service.store() as store:
        before = store.feedback_count()
    never = str(uuid.uuid4())
    response = http.post(service.feedback_url, json=feedback(never, "2026-11-21T10:00:00Z"))
    assert response.status_code == 422, response.text[:300]
    assert is_outcome(response) and "feedback[0].card" in response.json()["issue"][0]["diagnostics"]

    batch = {"feedback": [feedback(issued_card["uuid"], "2026-11-21T10:05:00Z")["feedback"][0],
                          feedback(never, "2026-11-21T10:05:00Z")["feedback"][0]]}
    response = http.post(service.feedback_url, json=batch)
    assert response.status_code == 422, response.text[:300]
    assert "feedback[1].card" in response.json()["issue"][0]["diagnostics"]
    with service.store() as store:
        assert store.feedback_count() == before, "nothing of a refused batch is stored"
        assert store.feedback_for(never) == []


def test_feedback_sent_the_moment_a_card_is_shown_is_stored(service: ServiceServer, http: httpx.Client) -> None:
    """The card is written to the database after the answer (a background writer): feedback that comes
    at once, naming the card in upper case, is about a card the service issued and is stored."""
    pid, prefetch = fixture_prefetch("asps-missing-labs-needs-review")
    response = post(http, service, hook(pid, prefetch))
    (card,) = response.json()["cards"]
    response = http.post(service.feedback_url, json=feedback(card["uuid"].upper(), "2026-11-21T10:00:00Z"))
    assert response.status_code == 200, response.text[:300]
    assert stored_for(service, card["uuid"]) == ["2026-11-21T10:00:00+00:00"]
