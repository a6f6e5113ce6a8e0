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
from .dates import add_units, age_quantity, date_range
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


def read_ranges(given: Any, value_unit: dict[str, Any], spec: tables.InputSpec, kind: str,
                patient: Patient, on: date) -> RangeReading:
    """The normal ranges of one result that may apply to `patient` on `on`, with their ULNs.

    `given` is the result's `referenceRange` as sent. The ranges are validated here (fhir.resources R4B,
    then what it lets through: a number sent as a string, a comparator on a SimpleQuantity), when a
    criterion asks for the ULN: most results are judged against a fixed threshold and never read their
    range. A range that is there but cannot be read is a problem, never "no range": the trial's default
    ULN would stand in for a limit the lab did state.
    """
    if given is None:
        return RangeReading()
    if not isinstance(given, list) or not all(isinstance(r, dict) for r in given):
        return RangeReading(problem="referenceRange is not a list of ranges")
    ranges: list[dict[str, Any]] = given
    for rng in ranges:
        problem = first_problem(ObservationReferenceRange, rng, first_error) or _unreadable(rng)
        if problem is not None:
            return RangeReading(problem=f"the reference range is not valid FHIR R4 ({problem})")
    with_high = [r for r in ranges if isinstance(r.get("high"), dict) and number(r["high"].get("value")) is not None]
    if not with_high:
        texts = [r["text"] for r in ranges if isinstance(r.get("text"), str) and not r.get("low")]
        if texts:  # the lab stated its range in words only: the limit is there, not readable
            return RangeReading(problem=f"the reference range is given only as text ('{_short(texts[0])}'): "
                                        "its upper limit cannot be read")
        return RangeReading(passed_over="its reference range states no upper limit" if ranges else None)
    normal = [r for r in with_high if _meaning(r.get("type")) != "other"]
    if not normal:
        other = [concept_text(r.get("type")) or "typed" for r in with_high]
        return RangeReading(passed_over=f"its reference range is not a normal range ({listed(other)})")
    judged = [(r, _applies(r, patient, on)) for r in normal]
    if all(applies is False for _, applies in judged):
        return RangeReading(passed_over="its reference ranges are for other patients ("
                            + listed([_population(r) for r in normal], "; ") + ")")
    surely = [r for r, applies in judged if applies is True and _restricted(r)]
    maybe = [r for r, applies in judged if applies is None]
    # a range for this patient's own population overrides the unrestricted one
    chosen = (surely or [r for r, applies in judged if applies is True]) + maybe
    limits: dict[tuple[float, str, str], Limit] = {}  # the same limit stated twice is one
    sure = 0
    for rng in chosen:
        unsure = any(rng is m for m in maybe)
        limit = _limit(rng, value_unit, spec, kind)
        if isinstance(limit, _Implausible) and unsure:
            continue  # a range that only may be the normal one, with no possible ULN (a critical range)
        if isinstance(limit, str):
            return RangeReading(problem=limit)
        sure += not unsure
        limits.setdefault((limit.value, limit.shown, limit.population), limit)
    if not limits:
        return RangeReading(passed_over="its reference ranges hold no plausible ULN")
    return RangeReading(limits=tuple(limits.values()), certain=sure > 0)


class _Implausible(str):
    """Why a range's upper limit is no possible ULN for the input (a message, as every problem is)."""


def _unreadable(rng: dict[str, Any]) -> str | None:
    """What the R4B model lets through that a ULN cannot be read from: numbers sent as strings (coerced
    there, not numbers in FHIR JSON), a comparator on `high` (a SimpleQuantity has none)."""
    if not any(rng.get(k) for k in ("low", "high", "text")):
        return "a range needs low, high or text (FHIR obs-3)"
    age = rng.get("age")
    for where, band in (("", rng), ("age ", age if isinstance(age, dict) else {})):
        low, high = band.get("low"), band.get("high")
        if isinstance(low, dict) and isinstance(high, dict) and _same_unit(low, high) \
                and (number(low.get("value")) or 0) > (number(high.get("value")) or math.inf):
            return f"its {where}low is above its {where}high"
    quantities = [("high", rng.get("high"))]
    if isinstance(age, dict):
        quantities += [("age.low", age.get("low")), ("age.high", age.get("high"))]
    for name, q in quantities:
        if not isinstance(q, dict):
            continue
        if "value" in q and number(q["value"]) is None:
            return f"{name}.value is not a number"
        if q.get("comparator") is not None:
            return f"{name} has a comparator, which a range limit cannot have"
    return None


def _same_unit(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a.get("code") or a.get("unit")) == (b.get("code") or b.get("unit"))


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def listed(items: list[str], sep: str = ", ", most: int = 4) -> str:
    """At most `most` distinct items, then how many more: a result with thousands of ranges stays readable."""
    unique = list(dict.fromkeys(items))
    shown = sep.join(_short(i) for i in unique[:most])
    return shown + (f"{sep}and {len(unique) - most} more" if len(unique) > most else "")


def _meaning(concept: Any) -> str:
    """'normal' (no type, or typed as the normal range), 'other' (a known other meaning), 'unsure'."""
    if concept is None:
        return "normal"
    table = tables.answers()
    found = codings(concept)
    normal, other = bool(found & table.range_normal), bool(found & table.range_not_normal)
    if normal != other:  # both at once: the range says two things, so it may or may not be the normal one
        return "normal" if normal else "other"
    text = concept.get("text") if isinstance(concept, dict) else None
    known = found & (table.range_normal | table.range_not_normal)
    if not known and isinstance(text, str) and " ".join(text.split()).casefold() in table.range_normal_text:
        return "normal"  # a local code (or none) that the text names as the normal range
    return "unsure"  # a meaning this table does not know: it may be the normal range


def _restricted(rng: dict[str, Any]) -> bool:
    return bool(rng.get("appliesTo")) or isinstance(rng.get("age"), dict) or _meaning(rng.get("type")) == "unsure"


def _applies(rng: dict[str, Any], patient: Patient, on: date) -> bool | None:
    """Whether the range is for this patient: every appliesTo concept and the age band must hold."""
    answers = [_concept_applies(c, patient) for c in rng.get("appliesTo") or ()]
    answers.append(_age_applies(rng.get("age"), patient, on))
    if _meaning(rng.get("type")) == "unsure":
        answers.append(None)
    return _all_hold(answers)


def _all_hold(answers: list[bool | None]) -> bool | None:
    """Three-valued AND: False if any is False, else None if any is unknown, else True."""
    if False in answers:
        return False
    return None if None in answers else True


def _concept_applies(concept: Any, patient: Patient) -> bool | None:
    sexes = {tables.answers().range_sex[c] for c in codings(concept) if c in tables.answers().range_sex}
    if len(sexes) != 1 or patient.gender not in ("male", "female"):
        return None  # a population the chart does not describe (race, pregnancy), or sex not recorded
    return patient.gender in sexes


def _age_applies(age: Any, patient: Patient, on: date) -> bool | None:
    """Whether the patient's age on the result's day is within the range's age band. Bounds are
    inclusive; a whole-number upper bound holds until the next birthday in its unit (a band to 17 years
    holds up to the 18th), a fractional one to that exact age (17.49 years)."""
    if not isinstance(age, dict):
        return True
    births = date_range(patient.birth_date)
    if births is None:
        return None
    answers = []
    for bound in ("low", "high"):
        if not isinstance(age.get(bound), dict):
            continue
        read = age_quantity(age[bound], tables.conditions().age_units)
        if read is None:
            return None  # a unit that is no time, a negative age: whom the band is for cannot be told
        limit, unit, _ = read
        youngest, oldest = _age_in(births[1], on, unit), _age_in(births[0], on, unit)
        if bound == "high" and limit == int(limit):  # counted in completed units
            youngest, oldest = math.floor(youngest), math.floor(oldest)
        inside = (youngest >= limit, oldest >= limit) if bound == "low" else (oldest <= limit, youngest <= limit)
        answers.append(True if inside[0] else False if not inside[1] else None)
    return _all_hold(answers)


def _age_in(birth: date, on: date, unit: tuple[str, int]) -> float:
    """The exact age in `unit` (years, months or days, times n): completed units plus the fraction of the
    one under way, birthdays falling as `age_on` has them (29 February's on 1 March in common years)."""
    field, k = unit
    if field == "days":
        return (on - birth).days / k
    per = k * (12 if field == "years" else 1)  # months in one unit
    n = max(((on.year - birth.year) * 12 + on.month - birth.month) // per, 0)
    while n > 0 and add_units(birth, n, unit) > on:
        n -= 1
    while add_units(birth, n + 1, unit) <= on:
        n += 1
    start, following = add_units(birth, n, unit), add_units(birth, n + 1, unit)
    return n + (on - start).days / max((following - start).days, 1)


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
    if value <= 0:
        return _Implausible(f"its upper limit {shown} is not a possible ULN")
    try:
        f, _ = quantity_factor(code, unit, spec.unit, spec.analyte, kind, spec.unit_aliases)
    except UnitError as exc:
        return f"reference range unit: {exc}"
    uln = value * f
    if spec.uln_plausible is not None and not spec.uln_plausible[0] <= uln <= spec.uln_plausible[1]:
        lo, hi = spec.uln_plausible
        return _Implausible(f"its upper limit {shown} is not a plausible ULN for {spec.label} (plausible: "
                            f"{lo:g}-{hi:g} {spec.unit}): check the range's unit")
    return Limit(uln, shown, _population(rng))
