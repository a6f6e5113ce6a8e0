"""Which result is "the most recent": the latest instant (time zones honoured), corrections win, and two
different results at one instant are never decided by their order in the Bundle (DESIGN.md, Real charts)."""

from __future__ import annotations

from typing import Any

from tests.helpers import asps, evaluate, lab


def at(resource: dict[str, Any], when: str) -> dict[str, Any]:
    return {**resource, "effectiveDateTime": when}


def test_latest_instant_wins_over_latest_calendar_day() -> None:
    # 23:30 in New York on the 14th is 04:30 UTC on the 15th: after 02:00 UTC on the 15th.
    late_evening = at(lab("777-3", 85, "K/uL"), "2026-11-14T23:30:00-05:00")
    early_morning = at(lab("777-3", 250, "K/uL"), "2026-11-15T02:00:00+00:00")
    for order in ((late_evening, early_morning), (early_morning, late_evening)):
        result = evaluate(asps(), *order).criterion("platelets")
        assert result.status == "not-met", "the 85 K/uL count was drawn last (04:30 UTC)"
        assert result.evidence == [f"Observation/{late_evening['id']}"]


def test_two_different_final_results_at_one_instant_are_unknown_with_both_shown() -> None:
    low = at(lab("777-3", 85, "K/uL"), "2026-11-14T08:00:00Z")
    normal = at(lab("777-3", 250, "K/uL"), "2026-11-14T09:00:00+01:00")  # the same instant
    diagnosis = asps()
    reports = [evaluate(diagnosis, *order) for order in ((low, normal), (normal, low))]
    assert reports[0].to_json() == reports[1].to_json(), "the Bundle's order must not decide"
    result = reports[0].criterion("platelets")
    assert result.status == "unknown"
    assert result.observed and "85 K/uL" in result.observed and "250 K/uL" in result.observed
    assert sorted(result.evidence) == sorted([f"Observation/{low['id']}", f"Observation/{normal['id']}"])
    assert result.note and "same time" in result.note


def test_the_same_value_twice_at_one_instant_is_not_a_conflict() -> None:
    a = at(lab("777-3", 250, "K/uL"), "2026-11-14T08:00:00Z")
    b = at(lab("777-3", 250000, "/uL"), "2026-11-14T08:00:00Z")  # the same count in another unit
    assert evaluate(asps(), a, b).criterion("platelets").status == "met"


def test_a_corrected_result_supersedes_the_final_one_it_corrects() -> None:
    original = at(lab("777-3", 250, "K/uL"), "2026-11-14T08:00:00Z")
    corrected = at(lab("777-3", 85, "K/uL", status="corrected"), "2026-11-14T08:00:00Z")
    for order in ((original, corrected), (corrected, original)):
        result = evaluate(asps(), *order).criterion("platelets")
        assert result.status == "not-met", "the corrected 85 K/uL replaces the final 250 K/uL"
        assert result.evidence == [f"Observation/{corrected['id']}"]
        assert result.note and "superseded" in result.note


def test_an_amended_result_supersedes_and_a_final_supersedes_a_preliminary() -> None:
    preliminary = at(lab("718-7", 8.5, "g/dL", ucum="g/dL", status="preliminary"), "2026-11-14T08:00:00Z")
    final = at(lab("718-7", 9.4, "g/dL", ucum="g/dL"), "2026-11-14T08:00:00Z")
    assert evaluate(asps(), preliminary, final).criterion("hemoglobin").status == "met"
    amended = at(lab("718-7", 8.6, "g/dL", ucum="g/dL", status="amended"), "2026-11-14T08:00:00Z")
    assert evaluate(asps(), final, amended, preliminary).criterion("hemoglobin").status == "not-met"


def test_a_newer_preliminary_result_is_used_and_said() -> None:
    final = at(lab("718-7", 8.5, "g/dL", ucum="g/dL"), "2026-11-10T08:00:00Z")
    preliminary = at(lab("718-7", 9.4, "g/dL", ucum="g/dL", status="preliminary"), "2026-11-14T08:00:00Z")
    result = evaluate(asps(), final, preliminary).criterion("hemoglobin")
    assert result.status == "met"
    assert result.note and "preliminary" in result.note


def test_a_date_only_result_that_may_be_the_same_moment_as_another_must_agree() -> None:
    # "2026-11-14" may be before or after 10:00 UTC that day: which one is newer cannot be told
    dated = at(lab("777-3", 85, "K/uL"), "2026-11-14")
    timed = at(lab("777-3", 250, "K/uL"), "2026-11-14T10:00:00Z")
    assert evaluate(asps(), dated, timed).criterion("platelets").status == "unknown"
    older_day = at(lab("777-3", 85, "K/uL"), "2026-11-13")
    assert evaluate(asps(), older_day, timed).criterion("platelets").status == "met"



def test_a_result_with_only_an_issued_time_is_not_placed_in_the_window() -> None:
    # `issued` is when the lab released it, not when the blood was drawn: the 28-day window counts from
    # the draw, and a FHIR server's `date` search (effective[x]) never returns it either
    undated = lab("777-3", 85, "K/uL")
    del undated["effectiveDateTime"]
    undated["issued"] = "2026-11-14T10:00:00Z"
    assert evaluate(asps(), undated).criterion("platelets").status == "unknown"
    dated = lab("777-3", 250, "K/uL", ago=20)
    assert evaluate(asps(), undated, dated).criterion("platelets").status == "met", "the dated count decides"
