"""Which of a result's reference ranges gives this patient's upper limit of normal (ULN).

A result may carry several ranges: the normal range beside a therapeutic one, one per sex, one per
age band (FHIR R4 Observation.referenceRange `type`, `appliesTo`, `age`). The ULN is the `high` of
the normal range that applies to this patient. A range restricted to a population this patient is in
overrides the unrestricted one; when which range applies cannot be told (sex not recorded, a partial
birth date at an age band's edge, a population the chart does not describe), every range that may
apply is kept, and a criterion decides only when all of them give the same answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

from fhir.resources.R4B.observation import ObservationReferenceRange

from .. import tables
from ..fhir.elements import codings, concept_text, number, quantity_text
from ..fhir.record import first_error
from ..interval import Interval
from ..units import UnitError, quantity_factor
from .dates import age_on, date_range
from .validation import first_problem


@dataclass(frozen=True)
class Patient:
    """What choosing a range needs to know about the patient."""

    gender: str | None
    birth_date: str | None


@dataclass(frozen=True)
class Limit:
    """One range's ULN in the input's canonical unit, as written, and whom the range is for."""

    value: float
    shown: str
    population: str  # "" for an unrestricted range


@dataclass(frozen=True)
class RangeReading:
    """The ULNs that may be this patient's (one, when a single range applies); `certain` when at least
    one of them surely applies (else the trial default stays possible too); `passed_over` says why
    ranges on the result were not used when none is left; `problem` why the ranges cannot be read."""

    limits: tuple[Limit, ...] = ()
    certain: bool = True
    passed_over: str | None = None
    problem: str | None = None


def within(value: Interval, k: float, ulns: tuple[float, ...]) -> bool | None:
    """value <= k x ULN under every ULN that may apply: True or False when they agree, else None."""
    answers = {value.le(k * u) for u in ulns}
    return answers.pop() if len(answers) == 1 else None


def read_ranges(given: tuple[Any, ...], value_unit: dict[str, Any], spec: tables.InputSpec, kind: str,
                patient: Patient, on: date) -> RangeReading:
    """The normal ranges of one result that may apply to `patient` on `on`, with their ULNs.

    The ranges are validated here (fhir.resources R4B), when a criterion asks for the ULN: most results
    are judged against a fixed threshold and never read their range.
    """
    ranges = [r for r in given if isinstance(r, dict)]
    for rng in ranges:
        problem = first_problem(ObservationReferenceRange, rng, first_error)  # a lab's ranges recur whole
        if problem is not None:
            return RangeReading(problem=f"the reference range is not valid FHIR R4 ({problem})")
    with_high = [r for r in ranges if isinstance(r.get("high"), dict) and (number(r["high"].get("value")) or 0) > 0]
    normal = [r for r in with_high if _meaning(r.get("type")) != "other"]
    if not normal:
        other = [concept_text(r.get("type")) or "typed" for r in with_high]
        return RangeReading(passed_over=f"its reference range is not a normal range ({', '.join(other)})"
                            if other else None)
    judged = [(r, _applies(r, patient, on)) for r in normal]
    if all(applies is False for _, applies in judged):
        return RangeReading(passed_over="its reference ranges are for other patients ("
                            + "; ".join(_population(r) for r in normal) + ")")
    surely = [r for r, applies in judged if applies is True and _restricted(r)]
    maybe = [r for r, applies in judged if applies is None]
    # a range for this patient's own population overrides the unrestricted one
    chosen = (surely or [r for r, applies in judged if applies is True]) + maybe
    limits = []
    for rng in chosen:
        limit = _limit(rng, value_unit, spec, kind)
        if isinstance(limit, str):
            return RangeReading(problem=limit)
        limits.append(limit)
    return RangeReading(limits=tuple(limits), certain=len(chosen) > len(maybe))


def _meaning(concept: Any) -> str:
    """'normal' (no type, or typed as the normal range), 'other' (a known other meaning), 'unsure'."""
    if concept is None:
        return "normal"
    table = tables.answers()
    found = codings(concept)
    if found & table.range_normal:
        return "normal"
    if found & table.range_not_normal:
        return "other"
    text = concept.get("text") if isinstance(concept, dict) else None
    if not found and isinstance(text, str) and " ".join(text.split()).casefold() in table.range_normal_text:
        return "normal"
    return "unsure"  # a meaning this table does not know: it may be the normal range


def _restricted(rng: dict[str, Any]) -> bool:
    return bool(rng.get("appliesTo")) or isinstance(rng.get("age"), dict) or _meaning(rng.get("type")) == "unsure"


def _applies(rng: dict[str, Any], patient: Patient, on: date) -> bool | None:
    """Whether the range is for this patient: every appliesTo concept and the age band must hold."""
    answers = [_concept_applies(c, patient) for c in rng.get("appliesTo") or ()]
    answers.append(_age_applies(rng.get("age"), patient, on))
    if _meaning(rng.get("type")) == "unsure":
        answers.append(None)
    if False in answers:
        return False
    return None if None in answers else True


def _concept_applies(concept: Any, patient: Patient) -> bool | None:
    sexes = {tables.answers().range_sex[c] for c in codings(concept) if c in tables.answers().range_sex}
    if len(sexes) != 1 or patient.gender not in ("male", "female"):
        return None  # a population the chart does not describe (race, pregnancy), or sex not recorded
    return patient.gender in sexes


def _age_applies(age: Any, patient: Patient, on: date) -> bool | None:
    """Whether the patient's age on the result's day is within the range's age band (bounds inclusive,
    in completed units: a band to 65 years holds until the 66th birthday)."""
    if not isinstance(age, dict):
        return True
    births = date_range(patient.birth_date)
    if births is None:
        return None
    answers = []
    for bound in ("low", "high"):
        q = age.get(bound)
        limit = number(q.get("value")) if isinstance(q, dict) else None
        if limit is None:
            continue
        assert isinstance(q, dict)
        unit = tables.conditions().age_units.get(str(q.get("code") or q.get("unit") or ""))
        if unit is None:
            return None
        youngest, oldest = (_age_in(births[1], on, *unit), _age_in(births[0], on, *unit))
        if bound == "low":
            answers.append(True if youngest >= limit else False if oldest < limit else None)
        else:
            answers.append(True if math.floor(oldest) <= limit else False if math.floor(youngest) > limit else None)
    if False in answers:
        return False
    return None if None in answers else True


def _age_in(birth: date, on: date, field: str, n: int) -> float:
    if field == "years":
        completed = age_on(birth, on)
    elif field == "months":
        completed = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    else:
        completed = (on - birth).days
    return completed / n


def _population(rng: dict[str, Any]) -> str:
    """Whom a range is for, as the result says: 'male', 'age 0-17 a'."""
    parts = [concept_text(c) or "a population" for c in rng.get("appliesTo") or ()]
    age = rng.get("age")
    if isinstance(age, dict):
        low, high = (quantity_text(age[b]) if isinstance(age.get(b), dict) else None for b in ("low", "high"))
        parts.append(f"age {low} to {high}" if low and high else f"age {low} and over" if low
                     else f"age up to {high}" if high else "an age band")
    meaning = _meaning(rng.get("type"))
    if meaning == "unsure":
        parts.append(f"type {concept_text(rng.get('type')) or 'not recognised'}")
    return ", ".join(parts)


def _limit(rng: dict[str, Any], value_unit: dict[str, Any], spec: tables.InputSpec, kind: str) -> Limit | str:
    high = rng["high"]
    value = float(high["value"])
    code, unit = high.get("code"), high.get("unit")
    if not code and not unit:  # a range without a unit is in the value's unit
        code, unit = value_unit.get("code"), value_unit.get("unit")
    shown = quantity_text({**high, "unit": unit or code})
    assert spec.unit is not None
    try:
        f, _ = quantity_factor(code, unit, spec.unit, spec.analyte, kind, spec.unit_aliases)
    except UnitError as exc:
        return f"reference range unit: {exc}"
    return Limit(value * f, shown, _population(rng))
