"""`evaluate --fhir-server` against a real FHIR server gives the same report as the Bundle file.

Everything after the PatientRecord is shared by the two modes, so what can make them disagree is what the
server sends back for the adapter's searches: patient attribution, the `system|code` OR list, the date
floor, `_sort`, paging through absolute `next` links and `_include`d Medications. The patients below are
built so that each of those, done wrong, changes a criterion — and both modes must print identical JSON.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
from typer.testing import CliRunner

from adapter.cli import app
from adapter.engine import evaluate_record, fhir_wanted
from adapter.fhir.client import SessionClient
from adapter.fhir.gather import gather_record
from adapter.fhir.queries import Search, searches
from adapter.synth import fhir
from adapter.synth.fhir import ICD10, LOINC, RXNORM, SNOMED
from adapter.trials import load_trial as trial
from tests.fhir_server import FhirTestServer

pytestmark = pytest.mark.fhir_server

AS_OF = date(2026, 11, 21)
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "shared" / "contract" / "eligibility-report.schema.json"
FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.json"))

ASPS = "axsrv-asps"  # ids are prefixed: the server is shared by the whole test session
LOW_PLATELETS = "axsrv-lowplt"
PAGED = "axsrv-paged"
PAGED_SODIUM_VALUES = 1050  # more than the adapter's _count=1000: the oldest values are on page 2

Resource = dict[str, Any]
runner = CliRunner()


def days_ago(n: int) -> str:
    return (AS_OF - timedelta(days=n)).isoformat()


# --------------------------------------------------------------------------- patients


def asps_bundle() -> Resource:
    """ASPS with liver metastases, progressing after ICIs, labs in mixed (SI, non-UCUM) units.

    Pembrolizumab is known only through a MedicationStatement's medicationReference, so the report
    names it only if `_include=MedicationStatement:medication` brings the Medication back.
    """
    s = f"Patient/{ASPS}"
    pembrolizumab: Resource = {"resourceType": "Medication", "id": "axsrv-med-pembrolizumab",
                               "code": {"coding": [{"system": RXNORM, "code": "1547545"}]}}
    statement = fhir.medication_request("axsrv-asps-ms1", s, None, "see medication", "2024-09-02",
                                        resource_type="MedicationStatement")
    del statement["medicationCodeableConcept"]
    statement["medicationReference"] = {"reference": f"Medication/{pembrolizumab['id']}"}
    tumor = fhir.observation(
        "axsrv-asps-tumor", s, "21889-1", days_ago(12), category="imaging",
        method=fhir.concept(SNOMED, "77477000", "Computerized axial tomography"),
        component=[{"code": fhir.concept(LOINC, "33728-7"), "valueQuantity": fhir.quantity(24, "mm", "mm")}])
    return fhir.bundle([
        fhir.patient(ASPS, "1994-07-15", "female"),
        fhir.condition("axsrv-asps-dx", s, SNOMED, "424413001", "Sarcoma",
                       histology=("9581/3", "Alveolar soft part sarcoma"), recorded="2024-03-10"),
        fhir.condition("axsrv-asps-livermets", s, ICD10, "C78.7", "Secondary malignant neoplasm of liver"),
        pembrolizumab,
        statement,
        fhir.medication_request("axsrv-asps-mr1", s, "1792776", "atezolizumab", "2025-06-01"),
        fhir.observation("axsrv-asps-status-old", s, "97509-4", days_ago(700), category="exam",
                         coded=fhir.concept(SNOMED, "359746009", "Patient's condition stable")),
        fhir.observation("axsrv-asps-status", s, "97509-4", days_ago(22), category="exam",
                         coded=fhir.concept(SNOMED, "271299001", "Patient's condition worsened")),
        tumor,
        fhir.observation("axsrv-asps-ecog", s, "89247-1", days_ago(9), category="survey", integer=1),
        fhir.observation("axsrv-asps-plt", s, "777-3", days_ago(7), value=245, unit="K/uL"),
        fhir.observation("axsrv-asps-plt-old", s, "777-3", days_ago(50), value=90, unit="10*3/uL", ucum="10*3/uL"),
        fhir.observation("axsrv-asps-anc", s, "751-8", days_ago(7), value=2.1, unit="x10E3/uL"),
        fhir.observation("axsrv-asps-hgb-old", s, "718-7", days_ago(400), value=8.1, unit="g/dL", ucum="g/dL"),
        fhir.observation("axsrv-asps-hgb", s, "59260-0", days_ago(7), value=7.4, unit="mmol/L", ucum="mmol/L"),
        fhir.observation("axsrv-asps-bili", s, "14631-6", days_ago(7), value=12, unit="µmol/L", ucum="umol/L",
                         high=21),
        fhir.observation("axsrv-asps-ast", s, "1920-8", days_ago(7), value=150, unit="IU/L", high=40),
        fhir.observation("axsrv-asps-alt", s, "1742-6", days_ago(7), value=1.1, unit="µkat/L", ucum="ukat/L",
                         high=0.6),
        fhir.observation("axsrv-asps-creat", s, "14682-9", days_ago(7), value=70, unit="µmol/L", ucum="umol/L",
                         high=90),
        fhir.observation("axsrv-asps-alb", s, "1751-7", days_ago(7), value=38, unit="g/L", ucum="g/L"),
        fhir.observation("axsrv-asps-na", s, "2951-2", days_ago(7), value=138, unit="mEq/L"),
        fhir.observation("axsrv-asps-wt", s, "29463-7", days_ago(7), value=62, unit="kg", ucum="kg",
                         category="vital-signs"),
        fhir.observation("axsrv-asps-ht", s, "8302-2", days_ago(200), value=168, unit="cm", ucum="cm",
                         category="vital-signs"),
        fhir.observation("axsrv-asps-hcg", s, "2106-3", days_ago(5),
                         coded=fhir.concept(SNOMED, "260385009", "Negative")),
        fhir.observation("axsrv-asps-bf", s, "63895-7", days_ago(5), category="survey",
                         coded=fhir.concept(LOINC, "LA29253-4", "Not currently breastfeeding")),
    ])


def low_platelet_bundle() -> Resource:
    """Soft tissue sarcoma (safety run-in), platelets 62,000/µL; AST 2.75 × ULN without liver metastases.

    His platelet count is newer than the ASPS patient's, and her liver metastases would lift his AST
    limit to 5 × ULN: a search that mixed the two patients up changes both reports.
    """
    s = f"Patient/{LOW_PLATELETS}"
    return fhir.bundle([
        fhir.patient(LOW_PLATELETS, "1968-04-09", "male"),
        fhir.condition("axsrv-lowplt-dx", s, ICD10, "C49.9",
                       "Malignant neoplasm of connective and soft tissue, unspecified"),
        fhir.condition("axsrv-lowplt-lungmets", s, ICD10, "C78.00", "Secondary malignant neoplasm of lung"),
        fhir.observation("axsrv-lowplt-tumor", s, "21889-1", days_ago(10), category="imaging",
                         method=fhir.concept(SNOMED, "113091000", "Magnetic resonance imaging"),
                         value=32, unit="mm", ucum="mm"),
        fhir.observation("axsrv-lowplt-ecog", s, "89247-1", days_ago(10), category="survey", integer=0),
        fhir.observation("axsrv-lowplt-plt", s, "26515-7", days_ago(3), value=62, unit="10*3/uL",
                         ucum="10*3/uL"),
        fhir.observation("axsrv-lowplt-anc", s, "751-8", days_ago(3), value=1.8, unit="10*9/L", ucum="10*9/L"),
        fhir.observation("axsrv-lowplt-hgb", s, "718-7", days_ago(3), value=13.1, unit="g/dL", ucum="g/dL"),
        fhir.observation("axsrv-lowplt-bili", s, "1975-2", days_ago(3), value=0.6, unit="mg/dL", ucum="mg/dL",
                         high=1.2),
        fhir.observation("axsrv-lowplt-ast", s, "1920-8", days_ago(3), value=110, unit="U/L", ucum="U/L", high=40),
        fhir.observation("axsrv-lowplt-alt", s, "1742-6", days_ago(3), value=35, unit="U/L", ucum="U/L", high=41),
        fhir.observation("axsrv-lowplt-creat", s, "2160-0", days_ago(3), value=1.0, unit="mg/dL", ucum="mg/dL",
                         high=1.3),
        fhir.observation("axsrv-lowplt-alb", s, "1751-7", days_ago(3), value=4.1, unit="g/dL", ucum="g/dL"),
        fhir.observation("axsrv-lowplt-na", s, "2951-2", days_ago(3), value=141, unit="mmol/L", ucum="mmol/L"),
        fhir.observation("axsrv-lowplt-wt", s, "29463-7", days_ago(10), value=81, unit="kg", ucum="kg",
                         category="vital-signs"),
        fhir.observation("axsrv-lowplt-ht", s, "8302-2", days_ago(10), value=178, unit="cm", ucum="cm",
                         category="vital-signs"),
    ])


def paged_bundle() -> Resource:
    """An ICU stay: venous sodium every 30 minutes (1,050 values) pushes the ALT and platelet count of
    25-26 days ago onto the second page of the newest-first lab search."""
    s = f"Patient/{PAGED}"
    start = datetime(AS_OF.year, AS_OF.month, AS_OF.day, tzinfo=UTC) - timedelta(days=1)
    sodium = [fhir.observation(f"axsrv-paged-na-{i}", s, "39791-9",
                               (start - timedelta(minutes=30 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                               value=136 + i % 5, unit="mmol/L", ucum="mmol/L")
              for i in range(PAGED_SODIUM_VALUES)]
    return fhir.bundle([
        fhir.patient(PAGED, "1985-01-20", "female"),
        fhir.condition("axsrv-paged-dx", s, ICD10, "C49.2",
                       "Malignant neoplasm of connective and soft tissue of lower limb"),
        *sodium,
        fhir.observation("axsrv-paged-alt", s, "1742-6", days_ago(25), value=30, unit="U/L", ucum="U/L", high=40),
        fhir.observation("axsrv-paged-plt", s, "777-3", days_ago(26), value=180, unit="K/uL"),
    ])


HAND_BUILT = {ASPS: asps_bundle, LOW_PLATELETS: low_platelet_bundle, PAGED: paged_bundle}


@pytest.fixture(scope="module")
def hand_built(fhir_server: FhirTestServer) -> Iterator[dict[str, Resource]]:
    """All hand-built patients in the server at once, so every search has other patients to ignore."""
    bundles = {pid: make() for pid, make in HAND_BUILT.items()}
    for bundle in bundles.values():
        fhir_server.load(bundle)
    yield bundles
    for bundle in bundles.values():
        fhir_server.unload(bundle)


# --------------------------------------------------------------------------- running the CLI


def run_cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["evaluate", *args])
    return result.exit_code, result.stdout, result.stderr


def report_from_file(bundle: Resource, tmp_path: Path, as_of: date = AS_OF) -> dict[str, Any]:
    path = tmp_path / "bundle.json"
    path.write_bytes(orjson.dumps(bundle))
    code, out, err = run_cli(str(path), "--as-of", as_of.isoformat(), "--format", "json")
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


def report_from_server(server: FhirTestServer, patient_id: str, as_of: date = AS_OF) -> dict[str, Any]:
    code, out, err = run_cli("--fhir-server", server.base_url, "--patient", patient_id,
                             "--as-of", as_of.isoformat(), "--format", "json")
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(body)
    return body


def criterion(report: dict[str, Any], cid: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in report["criteria"] if c["id"] == cid)
    return found


def both_modes(server: FhirTestServer, bundle: Resource, patient_id: str, tmp_path: Path,
               schema: dict[str, Any]) -> dict[str, Any]:
    """The report from the Bundle file and from the server: valid, and identical."""
    from_file = report_from_file(bundle, tmp_path)
    from_server = report_from_server(server, patient_id)
    jsonschema.validate(from_file, schema)
    jsonschema.validate(from_server, schema)
    assert from_server == from_file, differences(from_file, from_server)
    return from_server


def differences(from_file: dict[str, Any], from_server: dict[str, Any]) -> str:
    """Which parts of the two reports differ, in full: pytest's dict diff truncates the criteria list."""
    lines = [f"{key}: file {from_file.get(key)!r} != server {from_server.get(key)!r}"
             for key in sorted(from_file.keys() | from_server.keys())
             if key != "criteria" and from_file.get(key) != from_server.get(key)]
    for a, b in zip(from_file["criteria"], from_server["criteria"], strict=True):
        if a != b:
            lines.append(f"criterion {a['id']}:\n  file   {a}\n  server {b}")
    return "reports differ between the Bundle file and --fhir-server:\n" + "\n".join(lines)


# --------------------------------------------------------------------------- same report, both modes


def test_asps_patient_is_likely_eligible_from_the_server_as_from_the_file(
        fhir_server: FhirTestServer, hand_built: dict[str, Resource], tmp_path: Path,
        schema: dict[str, Any]) -> None:
    report = both_modes(fhir_server, hand_built[ASPS], ASPS, tmp_path, schema)
    assert report["patient"] == f"Patient/{ASPS}" and report["cohort"] == "asps"
    assert report["overall"] == "likely-eligible", report
    ici = criterion(report, "prior-ici-progression")
    assert ici["status"] == "met"
    # the first ICI is known only through the _include'd Medication
    assert ici["observed"].startswith("pembrolizumab from 2024-09-02")
    assert {"MedicationStatement/axsrv-asps-ms1", "Observation/axsrv-asps-status"} <= set(ici["evidence"])
    ast = criterion(report, "ast")  # 3.75 x ULN: within the 5 x ULN allowed with liver metastases only
    assert ast["status"] == "met" and "Condition/axsrv-asps-livermets" in ast["evidence"]
    platelets = criterion(report, "platelets")  # 245 K/uL, not kelvin; the older 90,000 is superseded
    assert platelets["status"] == "met" and platelets["evidence"] == ["Observation/axsrv-asps-plt"]
    for cid in ("hemoglobin", "total-bilirubin", "alt", "renal-function", "albumin", "sodium", "anc"):
        assert criterion(report, cid)["status"] == "met", criterion(report, cid)


def test_low_platelet_patient_is_not_eligible_from_the_server_as_from_the_file(
        fhir_server: FhirTestServer, hand_built: dict[str, Resource], tmp_path: Path,
        schema: dict[str, Any]) -> None:
    report = both_modes(fhir_server, hand_built[LOW_PLATELETS], LOW_PLATELETS, tmp_path, schema)
    assert report["patient"] == f"Patient/{LOW_PLATELETS}" and report["cohort"] == "safety-run-in"
    assert report["overall"] == "not-eligible"
    platelets = criterion(report, "platelets")
    assert platelets["status"] == "not-met" and platelets["evidence"] == ["Observation/axsrv-lowplt-plt"]
    ast = criterion(report, "ast")  # the other patient's liver metastases must not lift his limit
    assert ast["status"] == "not-met" and ast["evidence"] == ["Observation/axsrv-lowplt-ast"]
    assert criterion(report, "prior-ici-progression")["status"] == "not-applicable"
    assert any(r.startswith("platelets") for r in report["reasons"])


def test_values_on_the_second_page_are_read(fhir_server: FhirTestServer, hand_built: dict[str, Resource],
                                            tmp_path: Path, schema: dict[str, Any]) -> None:
    report = both_modes(fhir_server, hand_built[PAGED], PAGED, tmp_path, schema)
    alt = criterion(report, "alt")
    assert alt["status"] == "met" and alt["evidence"] == ["Observation/axsrv-paged-alt"]
    assert criterion(report, "platelets")["evidence"] == ["Observation/axsrv-paged-plt"]
    assert criterion(report, "sodium")["evidence"] == ["Observation/axsrv-paged-na-0"]  # the newest


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_bundles_give_the_same_report_from_the_server(
        fixture: Path, fhir_server: FhirTestServer, tmp_path: Path, schema: dict[str, Any]) -> None:
    bundle = json.loads(fixture.read_bytes())
    patients = [e["resource"] for e in bundle.get("entry") or ()
                if isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == "Patient"]
    if len(patients) != 1 or not patients[0].get("id"):
        pytest.skip("not a one-patient bundle with a Patient id (an input-error fixture)")
    with fhir_server.loaded(bundle):
        both_modes(fhir_server, bundle, patients[0]["id"], tmp_path, schema)


# --------------------------------------------------------------------------- errors


def test_unknown_patient_is_one_line_and_exit_2(fhir_server: FhirTestServer) -> None:
    code, out, err = run_cli("--fhir-server", fhir_server.base_url, "--patient", "axsrv-nobody",
                             "--as-of", AS_OF.isoformat(), "--format", "json")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("axiom-cds: error:") and "Patient/axsrv-nobody" in err and "404" in err


def test_unreachable_server_is_one_line_and_exit_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/fhir"
        code, out, err = run_cli("--fhir-server", url, "--patient", ASPS, "--as-of", AS_OF.isoformat(),
                                 "--format", "json")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("axiom-cds: error:") and "cannot reach" in err and url in err


# --------------------------------------------------------------------------- the searches themselves


def _range(value: str) -> tuple[datetime, datetime]:
    """[start, end) of a FHIR date or second-precision dateTime (UTC for dates): enough for the data above."""
    if len(value) == 10:
        start = datetime.fromisoformat(value).replace(tzinfo=UTC)
        return start, start + timedelta(days=1)
    start = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return start, start + timedelta(seconds=1)


def expected(search: Search, patient_id: str, resources: list[Resource]) -> tuple[set[str], set[str]]:
    """What a FHIR server must return for `search`, worked out from the resources themselves."""
    params = search.params
    param = next((p for p in ("code", "combo-code") if p in params), None)  # combo-code: a component's too
    codes = {tuple(c.split("|", 1)) for c in params[param].split(",")} if param else None
    matches: set[str] = set()
    includes: set[str] = set()
    for r in resources:
        if r["resourceType"] != search.resource_type:
            continue
        if r.get("subject", {}).get("reference") != f"Patient/{patient_id}":
            continue
        if codes is not None:
            coded = [*r["code"]["coding"], *(c for part in r.get("component", ()) if param == "combo-code"
                                              for c in part["code"]["coding"])]
            if not any((c["system"], c["code"]) in codes for c in coded):
                continue
        if "date" in params:  # ge: the resource's time range reaches the floor or beyond
            assert params["date"].startswith("ge")
            if _range(r["effectiveDateTime"])[1] <= _range(params["date"][2:])[0]:
                continue
        matches.add(f"{r['resourceType']}/{r['id']}")
        if "_include" in params and "medicationReference" in r:
            includes.add(r["medicationReference"]["reference"])
    return matches, includes


def fetch_all(server: FhirTestServer, search: Search) -> tuple[list[Resource], set[str], int]:
    """Matches in order, included references, and the number of pages, following next links."""
    strict = {"Prefer": "handling=strict"}  # a parameter the server does not know is a 400, not ignored
    matches: list[Resource] = []
    includes: set[str] = set()
    response = server.get(search.resource_type, search.params, headers=strict)
    pages = 0
    while True:
        assert response.status_code == 200, (search, response.text[:500])
        page = response.json()
        pages += 1
        for entry in page.get("entry") or ():
            res, mode = entry["resource"], entry.get("search", {}).get("mode")
            if mode == "include":
                includes.add(f"{res['resourceType']}/{res['id']}")
            else:
                assert mode == "match", entry
                matches.append(res)
        nxt = next((link["url"] for link in page.get("link") or () if link["relation"] == "next"), None)
        if nxt is None:
            return matches, includes, pages
        assert nxt.startswith(server.base_url + "/")  # absolute, on the base URL the client used
        response = server.get(nxt, headers=strict)


def test_server_answers_the_adapter_searches_exactly(fhir_server: FhirTestServer,
                                                    hand_built: dict[str, Resource]) -> None:
    """Each search of adapter/fhir/queries.py, as the adapter sends it, returns exactly the resources FHIR
    search semantics select: this patient's only, by code and date floor, newest first, across pages."""
    everything = [e["resource"] for b in hand_built.values() for e in b["entry"]]
    pages: dict[tuple[str, str], int] = {}
    for pid in HAND_BUILT:
        for search in searches(pid, fhir_wanted(trial()), AS_OF):
            matches, includes, pages[pid, search.key] = fetch_all(fhir_server, search)
            got = [f"{r['resourceType']}/{r['id']}" for r in matches]
            want_matches, want_includes = expected(search, pid, everything)
            assert len(got) == len(set(got)), f"{search.key} for {pid}: a resource came back twice"
            assert set(got) == want_matches, f"{search.key} for {pid}"
            assert includes == want_includes, f"{search.key} for {pid}"
            if search.params.get("_sort") == "-date":
                starts = [_range(r["effectiveDateTime"])[0] for r in matches]
                assert starts == sorted(starts, reverse=True), f"{search.key} for {pid} is not newest first"
    assert pages[PAGED, "labs"] == 2
    assert pages[ASPS, "medicationStatement"] == 1


# --------------------------------------------------------------------------- edges where the two modes could diverge


def _divergence_case(name: str) -> tuple[str, Resource]:
    """A soft tissue sarcoma patient plus the one Observation the two modes read differently."""
    pid = f"axsrv-div-{name}"
    s = f"Patient/{pid}"
    extra: list[Resource]
    if name == "older-than-the-search-floor":  # the bundle shows it as stale; the server never sends it
        extra = [fhir.observation(f"{pid}-alb", s, "1751-7", days_ago(400), value=3.9, unit="g/dL", ucum="g/dL")]
    elif name == "issued-without-effective":  # the bundle dates it by `issued`; `date=` searches effective[x]
        plt = fhir.observation(f"{pid}-plt", s, "777-3", days_ago(3), value=250, unit="K/uL")
        plt["issued"] = f"{plt.pop('effectiveDateTime')}T10:00:00Z"
        extra = [plt]
    elif name == "undated-observation":  # the bundle notes "ignored: 1 (undated)"; `date=` never returns it
        undated = fhir.observation(f"{pid}-plt-undated", s, "777-3", days_ago(1), value=300, unit="K/uL")
        del undated["effectiveDateTime"]
        extra = [undated, fhir.observation(f"{pid}-plt", s, "777-3", days_ago(2), value=60, unit="K/uL")]
    else:  # height on the 365th day in +05:00 is 20:00Z the day before the UTC `ge` floor
        extra = [
            fhir.observation(f"{pid}-ht", s, "8302-2", f"{days_ago(365)}T01:00:00+05:00", value=170, unit="cm",
                             ucum="cm"),
            fhir.observation(f"{pid}-wt", s, "29463-7", days_ago(2), value=70, unit="kg", ucum="kg"),
            fhir.observation(f"{pid}-cr", s, "2160-0", days_ago(2), value=2.5, unit="mg/dL", ucum="mg/dL",
                             high=1.2),
        ]
    return pid, fhir.bundle([fhir.patient(pid), fhir.condition(f"{pid}-dx", s, ICD10, "C49.9", "Sarcoma"),
                             *extra])


@pytest.mark.parametrize("name", ["older-than-the-search-floor", "issued-without-effective",
                                  "undated-observation", "timezone-at-the-floor"])
def test_modes_agree_at_the_edges_of_the_search_date_floor(name: str, fhir_server: FhirTestServer, tmp_path: Path,
                                              schema: dict[str, Any]) -> None:
    pid, bundle = _divergence_case(name)
    with fhir_server.loaded(bundle):
        both_modes(fhir_server, bundle, pid, tmp_path, schema)


def _recording_server(answers: dict[str, Resource]) -> tuple[ThreadingHTTPServer, list[str | None]]:
    """A stand-in HTTP server on 127.0.0.1 answering GETs from `answers` (by path; else an empty
    searchset), and the Authorization header of every request it got."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = answers.get(self.path.split("?", 1)[0], {"resourceType": "Bundle", "type": "searchset"})
            data = orjson.dumps(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler), seen


def test_bearer_token_never_follows_a_next_link_off_the_server() -> None:
    """A FHIR server (buggy, or behind a bad proxy) may page to another host: the token stays home."""
    other, other_seen = _recording_server({})
    ehr_answers: dict[str, Resource] = {"/fhir/Patient/p1": fhir.patient("p1")}
    ehr, _ = _recording_server(ehr_answers)
    base = f"http://127.0.0.1:{ehr.server_address[1]}/fhir"
    off_server = f"http://127.0.0.1:{other.server_address[1]}/collect?from={base}/Observation"
    ehr_answers["/fhir/Observation"] = {"resourceType": "Bundle", "type": "searchset",
                                        "link": [{"relation": "next", "url": off_server}]}
    for server in (ehr, other):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code, _, err = run_cli("--fhir-server", base, "--patient", "p1", "--token", "s3cret",
                               "--as-of", AS_OF.isoformat(), "--format", "json")
    finally:
        for server in (ehr, other):
            server.shutdown()
            server.server_close()
    assert [auth for auth in other_seen if auth] == [], f"the bearer token was sent to {off_server}"
    assert code in (0, 2), err


# --------------------------------------------------------------------------- results inside reports and panels

SHAPES = "axsrv-shapes"


def shapes_bundle() -> Resource:
    """ASPS; her CBC arrived as a DiagnosticReport whose results have no subject or date of their own
    (platelets 85 K/uL, a contained hemoglobin of 8.4 g/dL, a differential panel whose member is the
    ANC), her chemistry as one panel whose values are components (AST 110 U/L with the lab's ULN 50,
    sodium 128 mmol/L). A report from 400 days ago names an undated albumin: too old in both modes."""
    s = f"Patient/{SHAPES}"

    def bare(oid: str, loinc: str, value: float, unit: str, ucum: str | None = None) -> Resource:
        r = fhir.observation(oid, s, loinc, days_ago(1), value=value, unit=unit, ucum=ucum)
        del r["subject"], r["effectiveDateTime"]
        return r

    cbc = {"resourceType": "DiagnosticReport", "id": f"{SHAPES}-dr", "status": "final",
           "code": fhir.concept(LOINC, "58410-2", "CBC panel"), "subject": {"reference": s},
           "effectiveDateTime": f"{days_ago(5)}T08:30:00Z", "issued": f"{days_ago(5)}T11:45:00Z",
           "contained": [{**bare("hgb", "718-7", 8.4, "g/dL", "g/dL"), "id": "hgb"}],
           "result": [{"reference": f"Observation/{SHAPES}-plt"}, {"reference": "#hgb"},
                      {"reference": f"Observation/{SHAPES}-diff"}]}
    diff = {"resourceType": "Observation", "id": f"{SHAPES}-diff", "status": "final",
            "code": fhir.concept(LOINC, "57023-4", "Auto differential panel"),
            "hasMember": [{"reference": f"Observation/{SHAPES}-anc"}]}
    chemistry = fhir.observation(f"{SHAPES}-cmp", s, "24323-8", days_ago(4), component=[
        {"code": fhir.concept(LOINC, "1920-8"), "valueQuantity": fhir.quantity(110, "U/L", "U/L"),
         "referenceRange": [{"high": fhir.quantity(50, "U/L", "U/L")}]},
        {"code": fhir.concept(LOINC, "2951-2"), "valueQuantity": fhir.quantity(128, "mmol/L", "mmol/L")}])
    old = {"resourceType": "DiagnosticReport", "id": f"{SHAPES}-dr-old", "status": "final",
           "code": fhir.concept(LOINC, "24323-8"), "subject": {"reference": s},
           "effectiveDateTime": days_ago(400), "result": [{"reference": f"Observation/{SHAPES}-alb"}]}
    return fhir.bundle([
        fhir.patient(SHAPES, "1992-03-14", "female"),
        fhir.condition(f"{SHAPES}-dx", s, SNOMED, "424413001", "Sarcoma",
                       histology=("9581/3", "Alveolar soft part sarcoma")),
        cbc, bare(f"{SHAPES}-plt", "777-3", 85, "K/uL"), diff, bare(f"{SHAPES}-anc", "751-8", 2.1, "K/uL"),
        chemistry, old, bare(f"{SHAPES}-alb", "1751-7", 3.9, "g/dL", "g/dL"),
    ])


def test_results_inside_reports_panels_and_components_are_found_from_the_server_as_from_the_file(
        fhir_server: FhirTestServer, tmp_path: Path, schema: dict[str, Any]) -> None:
    """The DiagnosticReport search (`_include` of results, `_include:iterate` of panel members) and the
    `combo-code` labs search bring back what the Bundle file holds, and nothing older than its floor."""
    bundle = shapes_bundle()
    with fhir_server.loaded(bundle):
        report = both_modes(fhir_server, bundle, SHAPES, tmp_path, schema)
    assert report["overall"] == "not-eligible"
    platelets = criterion(report, "platelets")
    assert platelets["status"] == "not-met" and platelets["evidence"] == [f"Observation/{SHAPES}-plt"]
    assert f"({days_ago(5)})" in platelets["observed"]  # dated by its report
    hemoglobin = criterion(report, "hemoglobin")  # contained: cited as the report that holds it
    assert hemoglobin["status"] == "not-met" and hemoglobin["evidence"] == [f"DiagnosticReport/{SHAPES}-dr"]
    assert criterion(report, "anc")["status"] == "met"  # a member of a panel named by the report
    ast = criterion(report, "ast")  # 2.2 x the lab's ULN of 50
    assert ast["status"] == "met" and ast["evidence"] == [f"Observation/{SHAPES}-cmp"]
    assert criterion(report, "sodium")["status"] == "not-met"
    assert criterion(report, "albumin")["status"] == "unknown"


async def test_a_medication_the_include_did_not_bring_is_read_from_the_server(fhir_server: FhirTestServer) -> None:
    """An EHR's prefetch of MedicationRequests without their `_include`d Medication: the gatherer reads
    the Medication itself, so pembrolizumab is known by its RxNorm code, not lost."""
    pid = "axsrv-medread"
    s = f"Patient/{pid}"
    medication: Resource = {"resourceType": "Medication", "id": f"{pid}-pembro",
                            "code": {"coding": [{"system": RXNORM, "code": "1547545"}]}}
    request = fhir.medication_request(f"{pid}-mr", s, None, "see medication", "2025-06-01")
    del request["medicationCodeableConcept"]
    request["medicationReference"] = {"reference": f"Medication/{medication['id']}"}
    progression = fhir.observation(f"{pid}-status", s, "97509-4", days_ago(22), category="exam",
                                   coded=fhir.concept(SNOMED, "271299001", "Patient's condition worsened"))
    patient = fhir.patient(pid, "1990-01-01", "female")
    dx = fhir.condition(f"{pid}-dx", s, SNOMED, "424413001", "Sarcoma",
                        histology=("9581/3", "Alveolar soft part sarcoma"))
    bundle = fhir.bundle([patient, dx, medication, request, progression])
    wanted = fhir_wanted(trial())
    plan = searches(pid, wanted, AS_OF)

    def searchset(*resources: Resource) -> Resource:
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}

    prefetch: dict[str, Any] = {search.key: searchset() for search in plan}
    prefetch.update(patient=patient, conditions=searchset(dx), history=searchset(progression),
                    medicationRequest=searchset(request))
    with fhir_server.loaded(bundle):
        async with aiohttp.ClientSession() as session:
            client = SessionClient(fhir_server.base_url, session, None, 10.0)
            record = await gather_record(pid, plan, prefetch, client, 10.0, wanted=wanted)
    assert record.medications[f"Medication/{medication['id']}"]["code"] == medication["code"]
    row = next(c for c in evaluate_record(record, AS_OF).criteria if c.id == "prior-ici-progression")
    assert row.status == "met" and row.observed is not None and row.observed.startswith("pembrolizumab")
