"""The lazy reading of FHIR JSON (adapter/fhir/wire.py) decides exactly as a whole parse would."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter.criteria.model import EligibilityReport
from adapter.engine import evaluate_bundle, evaluate_record, fhir_wanted
from adapter.errors import InputError
from adapter.fhir.bundle import bundle_entries
from adapter.fhir.gather import gather_record
from adapter.fhir.queries import prefetch_templates, searches
from adapter.fhir.record import assemble
from adapter.fhir.wire import (
    Lazy,
    LazyObservations,
    ObservationHead,
    head_and_resource,
    head_of,
    load_hook,
    load_resource,
)
from adapter.mapping.values import READ_ELEMENTS
from adapter.synth import fhir
from adapter.trials import load_trial as trial
from tests.helpers import AS_OF, PID, SUBJECT, asps, lab

FIXTURES = sorted(Path(__file__).parent.joinpath("fixtures").glob("*.json"))


def status(report: EligibilityReport, criterion: str) -> str:
    return next(c.status for c in report.criteria if c.id == criterion)


def parsed_whole(data: bytes) -> EligibilityReport:
    """The reference reading: every resource parsed into a dict first."""
    patients, entries = bundle_entries(orjson.loads(data))
    return evaluate_record(assemble(patients[0][0], patients[0][1], entries, fhir_wanted(trial("axiom"))), AS_OF)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_lazy_and_whole_readings_give_the_same_report_for_every_fixture(path: Path) -> None:
    data = path.read_bytes()
    assert isinstance(load_resource(data), Lazy)
    assert evaluate_bundle(data, AS_OF).to_json() == parsed_whole(data).to_json()


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_the_fast_head_equals_the_tolerant_head_of_every_fixture_resource(path: Path) -> None:
    bundle = load_resource(path.read_bytes())
    assert isinstance(bundle, Lazy) and bundle.entry
    for item in bundle.entry:
        head, resource = head_and_resource(item.resource)
        assert resource is None, "a well-formed fixture resource needs no tolerant reading"
        assert head == head_of(orjson.loads(bytes(item.resource)))


def _odd(resource: dict[str, Any], where: str) -> dict[str, Any]:
    if where == "code":
        resource["code"]["coding"].insert(0, {"system": 42, "code": "PLT"})
    else:  # an element Observation does not have, of a type the head decoder does not expect
        resource["patient"] = 5
    return resource


@pytest.mark.parametrize(("where", "expected"), [
    # not valid FHIR R4 in an element the criteria read: never evidence, and said so
    ("code", "unknown"),
    # odd only outside what the criteria read: the count stands, and 50,000/uL is too low
    ("elsewhere", "not-met"),
])
def test_a_resource_whose_head_has_an_unexpected_type_is_read_the_tolerant_way(where: str, expected: str) -> None:
    platelets = _odd(lab("26515-7", 50000, "/uL", ucum="/uL"), where)
    data = orjson.dumps(fhir.bundle([fhir.patient(PID, "1990-05-02", "female"), asps(), platelets]))
    item = load_resource(data).entry[-1]
    head, resource = head_and_resource(item.resource)
    assert resource is not None, "the fast head decoder refuses it"
    assert head is not None and head.code_in("http://loinc.org", {"26515-7"}) == "26515-7"
    report = evaluate_bundle(data, AS_OF)
    assert status(report, "platelets") == expected
    if expected == "unknown":
        assert "not valid FHIR R4" in orjson.dumps(report.to_json()).decode()
    assert report.to_json() == parsed_whole(data).to_json()


@pytest.mark.parametrize(("mutate", "why"), [
    (lambda b: b.__setitem__("entry", {"resource": {}}), "entry is not a list"),
    (lambda b: b["entry"].append("not an object"), "an entry is not an object"),
])
def test_malformed_bundles_get_the_same_error_as_before(mutate: Any, why: str) -> None:
    bundle = fhir.bundle([fhir.patient(PID, "1990-05-02", "female"), asps()])
    mutate(bundle)
    with pytest.raises(InputError, match=why):
        evaluate_bundle(orjson.dumps(bundle), AS_OF)


@pytest.mark.parametrize(("data", "why"), [
    (b'{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "id": "\xff"}}]}', "UTF-8"),
    (b'{"resourceType": "Bundle", "entry": [{"resource": ' + b"[" * 3000 + b"]" * 3000 + b"}]}", "not JSON"),
    (b'{"resourceType": "Bundle", "entry": [}', "not JSON"),
])
def test_what_the_lazy_reader_skips_is_still_checked(data: bytes, why: str) -> None:
    with pytest.raises(InputError, match=why):
        evaluate_bundle(data, AS_OF)


def test_an_entry_stays_unparsed_until_read() -> None:
    bundle = fhir.bundle([fhir.patient(PID, "1990-05-02", "female"), lab("777-3", 250, "K/uL", ucum="10*3/uL")])
    _, entries = bundle_entries(load_resource(orjson.dumps(bundle)))
    (entry,) = entries
    assert entry._resource is None and entry.head.subject_reference() == SUBJECT
    assert entry.resource == copy.deepcopy(bundle["entry"][1]["resource"])


def _platelets_report(newer_value: bytes, *, with_older: bool = True) -> dict[str, Any]:
    older = [lab("26515-7", 150000, "/uL", ucum="/uL", ago=20)] if with_older else []
    newer = lab("26515-7", 12345, "/uL", ucum="/uL", ago=3)
    data = orjson.dumps(fhir.bundle([fhir.patient(PID, "1990-05-02", "female"), asps(), *older, newer]))
    data = data.replace(b'"value":12345.0', b'"value":' + newer_value)
    assert newer_value in data
    report = evaluate_bundle(data, AS_OF).to_json()
    return next(c for c in report["criteria"] if c["id"] == "platelets")


@pytest.mark.parametrize(("value", "why"), [
    (b"1e400", "not valid FHIR R4"),  # valid JSON out of a double's range: skipped by msgspec, refused by orjson
    (b'"12"', "has no value"),  # a string where FHIR JSON has a number
])
def test_a_newer_result_that_cannot_be_used_is_passed_over_and_said_so(value: bytes, why: str) -> None:
    # The most recent *valid* value decides (DESIGN: use the most recent valid value in the window), but a
    # met criterion must not hide that a newer platelet count exists and could not be read.
    row = _platelets_report(value)
    assert row["status"] == "met" and row["observed"].endswith("(2026-11-01)")
    assert "a newer result (2026-11-18) was not used" in row["note"] and why in row["note"]


def test_an_unreadable_result_alone_is_unknown_never_not_met() -> None:
    row = _platelets_report(b"1e400", with_older=False)
    assert row["status"] == "unknown" and "not valid FHIR R4" in row["note"]


# --------------------------------------------------------------- the hook: Observation searches in one pass


def _split_prefetch(bundle: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A fixture as an EHR's prefetch: the Patient, every Observation under 'labs', each other type under
    its own search key (what searches each key holds does not matter to the reading tested here)."""
    keys = {"Observation": "labs", "Condition": "conditions", "MedicationStatement": "medicationStatement",
            "MedicationRequest": "medicationRequest", "MedicationAdministration": "medicationAdministration",
            "Medication": "medicationRequest"}
    prefetch: dict[str, Any] = {}
    pid = ""
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            prefetch["patient"], pid = resource, resource["id"]
        elif resource["resourceType"] in keys:
            searchset = {"resourceType": "Bundle", "type": "searchset", "entry": []}
            prefetch.setdefault(keys[resource["resourceType"]], searchset)["entry"].append(entry)
    return pid, prefetch


async def _report(pid: str, prefetch: dict[str, Any]) -> dict[str, Any]:
    plan = searches(pid, fhir_wanted(trial("axiom")), AS_OF)
    record = await gather_record(pid, plan, prefetch, None, 2.0, wanted=fhir_wanted(trial("axiom")))
    return evaluate_record(record, AS_OF).to_json()


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
async def test_a_hooks_observations_read_in_one_pass_give_the_same_report(path: Path) -> None:
    pid, prefetch = _split_prefetch(orjson.loads(path.read_bytes()))
    body = orjson.dumps({"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                         "context": {"patientId": pid}, "prefetch": prefetch})
    keys = tuple(prefetch_templates(fhir_wanted(trial("axiom"))))
    observation_keys = frozenset(s.key for s in searches(pid, fhir_wanted(trial("axiom")), None)
                                 if s.resource_type == "Observation")
    fast = load_hook(body, keys, frozenset({"patient"}), observation_keys)["prefetch"]
    assert isinstance(fast["labs"], LazyObservations)
    assert await _report(pid, fast) == await _report(pid, orjson.loads(body)["prefetch"])


def test_an_observation_head_keeps_every_element_the_criteria_read() -> None:
    kept = set(ObservationHead.__struct_fields__)
    assert kept >= READ_ELEMENTS, READ_ELEMENTS - kept


async def test_an_observation_the_one_pass_reader_cannot_type_sends_the_whole_hook_the_slow_way() -> None:
    pid, prefetch = _split_prefetch(orjson.loads((FIXTURES[0].parent / "asps-likely-eligible.json").read_bytes()))
    prefetch["labs"]["entry"][0]["resource"]["status"] = 5  # not a FHIR code: the typed head refuses it
    body = orjson.dumps({"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                         "context": {"patientId": pid}, "prefetch": prefetch})
    keys = tuple(prefetch_templates(fhir_wanted(trial("axiom"))))
    slow = load_hook(body, keys, frozenset({"patient"}), frozenset({"labs"}))["prefetch"]
    assert isinstance(slow["labs"], dict), "parsed whole, so nothing in it is lost"
    assert await _report(pid, slow) == await _report(pid, orjson.loads(body)["prefetch"])
