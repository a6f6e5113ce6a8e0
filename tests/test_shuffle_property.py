"""The order of a Bundle is not clinical data: shuffling its entries, or the codings inside a
CodeableConcept, never changes the report.

A FHIR server returns search results in any order and an EHR export lists resources as it likes; the
same chart must give the same report, byte for byte (same asOf). Checked on every synthetic fixture and
on the real HL7 charts of tests/test_hl7_examples.py, then on the cases where order dependence hides:
two results at the same instant, a corrected result next to the one it corrects, the latest instant
against the latest calendar day.
"""

from __future__ import annotations

import copy
import json
import random
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.criteria.model import CriterionResult, EligibilityReport
from adapter.engine import evaluate_bundle
from tests.helpers import AS_OF, asps, days_ago, evaluate, lab
from tests.test_hl7_examples import CHARTS

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = 6  # shuffles per chart: ~37 charts, a few hundred evaluations in all; raise locally to hunt

Bundle = dict[str, Any]


@cache
def _bundle(name: str) -> bytes:
    """The chart as JSON bytes (built once; every shuffle starts from a fresh parse)."""
    if name.endswith(".json"):
        return (FIXTURES / name).read_bytes()
    return orjson.dumps(CHARTS[name]())


@cache
def _baseline(name: str) -> dict[str, Any]:
    report: dict[str, Any] = evaluate_bundle(_bundle(name), AS_OF).to_json()
    return report


def _shuffle_codings(node: Any, rng: random.Random) -> None:
    """Every CodeableConcept's `coding` list, in place, in a random order."""
    if isinstance(node, dict):
        if isinstance(node.get("coding"), list):
            rng.shuffle(node["coding"])
        for value in node.values():
            _shuffle_codings(value, rng)
    elif isinstance(node, list):
        for value in node:
            _shuffle_codings(value, rng)


def _differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed, criterion by criterion, for a readable failure."""
    out = [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(set(before) | set(after))
           if k != "criteria" and before.get(k) != after.get(k)]
    out += [f"{b['id']}: {b} -> {a}" for b, a in zip(before["criteria"], after["criteria"], strict=True) if a != b]
    return out


CHART_NAMES = [p.name for p in sorted(FIXTURES.glob("*.json"))] + sorted(CHARTS)


@pytest.mark.parametrize("name", CHART_NAMES)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_shuffling_a_bundle_never_changes_its_report(name: str, data: st.DataObject) -> None:
    bundle: Bundle = json.loads(_bundle(name))
    order = data.draw(st.permutations(range(len(bundle["entry"]))), label="entry order")
    bundle["entry"] = [bundle["entry"][i] for i in order]
    if data.draw(st.booleans(), label="shuffle codings"):
        _shuffle_codings(bundle["entry"], data.draw(st.randoms(use_true_random=False), label="codings"))
    after = evaluate_bundle(orjson.dumps(bundle), AS_OF).to_json()
    before = _baseline(name)
    assert after == before, f"{name}: the order of the Bundle changed the report:\n" + "\n".join(
        _differences(before, after))


# --------------------------------------------------------------------------- where order dependence hides

def _both_orders(*resources: dict[str, Any]) -> tuple[EligibilityReport, EligibilityReport]:
    """The ASPS test patient with these results, in this order and in the reverse order."""
    diagnosis = asps()
    forward = evaluate(diagnosis, *copy.deepcopy(resources))
    backward = evaluate(*copy.deepcopy(resources[::-1]), diagnosis)
    return forward, backward


def _ref(resource: dict[str, Any]) -> str:
    return f"Observation/{resource['id']}"


def _platelets(value: float, when: str, status: str = "final") -> dict[str, Any]:
    count = lab("777-3", value, "10*3/uL", ucum="10*3/uL", status=status)
    count["effectiveDateTime"] = when
    return count


def _same_report(forward: EligibilityReport, backward: EligibilityReport) -> CriterionResult:
    assert forward.to_json() == backward.to_json(), "\n".join(_differences(forward.to_json(), backward.to_json()))
    return forward.criterion("platelets")


@pytest.mark.parametrize(("first", "second"), [
    (f"{days_ago(7)}T08:00:00Z", f"{days_ago(7)}T08:00:00Z"),
    (f"{days_ago(7)}T09:00:00+01:00", f"{days_ago(7)}T08:00:00Z"),  # one instant written in two time zones
    (days_ago(7), days_ago(7)),
], ids=["same-instant", "same-instant-two-zones", "same-day-no-time"])
def test_two_final_platelet_counts_at_one_instant_are_unknown_with_both_shown(first: str, second: str) -> None:
    low, high = _platelets(80, first), _platelets(250, second)
    got = _same_report(*_both_orders(low, high))
    assert got.status == "unknown", (
        f"80 and 250 x10^3/uL at the same instant: which is right is for a person to decide, not the "
        f"Bundle's order; the report says {got.status} ({got.observed}, {got.note})")
    assert {_ref(low), _ref(high)} <= set(got.evidence), f"both results are shown: {got.evidence}"
    shown = f"{got.observed} {got.note}"
    assert "80" in shown and "250" in shown, f"both values are shown: {shown}"


@pytest.mark.parametrize("correction", ["corrected", "amended"])
@pytest.mark.parametrize(("original", "corrected", "status"), [
    (80, 250, "met"),  # the correction lifts a failing count above 100,000 /uL
    (250, 80, "not-met"),  # and the other way round: the correction wins, not the higher value
])
def test_a_correction_at_the_same_instant_supersedes_the_original_whatever_the_order(
        correction: str, original: float, corrected: float, status: str) -> None:
    when = f"{days_ago(7)}T08:00:00Z"
    final, fixed = _platelets(original, when), _platelets(corrected, when, status=correction)
    got = _same_report(*_both_orders(final, fixed))
    assert got.status == status, (
        f"a {correction} result ({corrected} x10^3/uL) supersedes the final one ({original}) it corrects; "
        f"the report says {got.status} ({got.observed}, {got.note})")
    assert _ref(fixed) in got.evidence, got.evidence


def test_the_latest_instant_wins_not_the_latest_calendar_day() -> None:
    # 23:30 at UTC-5 on day -8 is 04:30Z on day -7, later than 02:00Z on day -7
    late = _platelets(250, f"{days_ago(8)}T23:30:00-05:00")
    early = _platelets(80, f"{days_ago(7)}T02:00:00+00:00")
    got = _same_report(*_both_orders(early, late))
    assert got.status == "met", (
        f"the 250 x10^3/uL count was drawn 2.5 hours after the 80 one (time zones honoured); "
        f"the report says {got.status} ({got.observed}, {got.note})")
    assert got.evidence[:1] == [_ref(late)], got.evidence


def test_the_later_of_two_draws_on_one_day_wins_whatever_the_order() -> None:
    morning = _platelets(80, f"{days_ago(7)}T08:00:00Z")
    evening = _platelets(250, f"{days_ago(7)}T20:00:00Z")
    got = _same_report(*_both_orders(evening, morning))
    assert got.status == "met", f"the evening count is the most recent; the report says {got.status} ({got.note})"
