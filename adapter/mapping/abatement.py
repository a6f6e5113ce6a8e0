"""Condition.abatement[x] → did the condition end on or before the evaluation date?

Every form is turned into the range of days the abatement can fall on, and the answer is certain only
when the whole range agrees: `past` (every day on or before `as_of`), `later` (every day after it) or
`maybe`. A period or range of ages is read by its end (no end: open, never past). An age is placed with
the birth date, as a completed age (abated at 54 years = some day while 54), comparators honoured.
An `abatementString` that is not a date, or an age that cannot be placed (no birth date, unknown unit),
says the condition ended without saying when: `undated`. R4 has no abatementBoolean (DSTU2 / STU3 had
it); `true` from a converted record is read as `undated` too (`legacy_abatement`), anything else absent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from .dates import add_units, age_quantity, date_range

State = Literal["none", "past", "later", "maybe", "undated"]
_FHIR_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?")


@dataclass(frozen=True)
class Abatement:
    state: State
    text: str = ""  # the abatement as written, for notes


def _placed(lo: date, hi: date, as_of: date, text: str) -> Abatement:
    if hi <= as_of:
        return Abatement("past", text)
    if lo > as_of:
        return Abatement("later", text)
    return Abatement("maybe", text)


def _age_window(low: Any, high: Any, comparator: str | None, birth: tuple[date, date],
                units: dict[str, tuple[str, int]]) -> tuple[date, date] | None:
    """The days an abatement at an age between `low` and `high` (Age; either may be None) can fall on,
    ages read as completed ages: 54 years is any day from the 54th birthday to the day before the 55th."""
    lo_age, hi_age = age_quantity(low, units), age_quantity(high, units)
    if (low is not None and lo_age is None) or (high is not None and hi_age is None) or not (lo_age or hi_age):
        return None
    earliest, latest = birth[0], date.max
    if lo_age is not None and comparator not in ("<", "<="):
        earliest = add_units(birth[0], math.floor(lo_age[0]), lo_age[1])
    if hi_age is not None and comparator not in (">", ">="):
        end = math.ceil(hi_age[0]) if comparator == "<" else math.floor(hi_age[0]) + 1
        latest = max(add_units(birth[1], end, hi_age[1]) - timedelta(days=1), birth[1]) if end else birth[1]
    return earliest, latest


def _atage_quantity(age: Any, rng: Any, birth_date: str | None, units: dict[str, tuple[str, int]],
            as_of: date) -> Abatement:
    """abatementAge (with its comparator) or abatementRange (of ages)."""
    if isinstance(age, dict):
        comparator = age.get("comparator") if isinstance(age.get("comparator"), str) else None
        low = high = age
        read = age_quantity(age, units)
        text = f"at age {comparator + ' ' if comparator else ''}{read[2] if read else '?'}"
    else:
        comparator, low, high = None, rng.get("low"), rng.get("high")
        read_low, read_high = age_quantity(low, units), age_quantity(high, units)
        text = "at age " + " to ".join(r[2] if r else "?" for q, r in ((low, read_low), (high, read_high))
                                       if q is not None)
    birth = date_range(birth_date)
    window = _age_window(low, high, comparator, birth, units) if birth else None
    if window is None:
        return Abatement("undated", f"{text} (cannot be placed in time)")
    return _placed(*window, as_of, text)


def _period(p: Any, as_of: date) -> Abatement:
    if not isinstance(p, dict):
        return Abatement("none")
    start, end = date_range(p.get("start")), date_range(p.get("end"))
    if start is None and end is None:
        return Abatement("none")
    text = " to ".join(str(p[k])[:10] for k in ("start", "end") if isinstance(p.get(k), str))
    return _placed(start[0] if start else date.min, end[1] if end else date.max, as_of,
                   text if end else f"from {text}")


def legacy_abatement(r: dict[str, Any]) -> Abatement:
    """STU3's `abatementBoolean: true` (not R4, so dropped by validation): abated, date unknown."""
    return Abatement("undated", "(abatementBoolean true)") if r.get("abatementBoolean") is True else Abatement("none")


def abatement(r: dict[str, Any], as_of: date, birth_date: str | None,
              units: dict[str, tuple[str, int]]) -> Abatement:
    """How the Condition's abatement[x] stands on `as_of` (elements of the wrong JSON type are absent)."""
    when = r.get("abatementDateTime")
    if isinstance(when, str):
        rng = date_range(when)
        return _placed(*rng, as_of, when[:10]) if rng else Abatement("undated", when)
    if "abatementPeriod" in r:
        return _period(r["abatementPeriod"], as_of)
    text = r.get("abatementString")
    if isinstance(text, str) and text.strip():
        rng = date_range(text) if _FHIR_DATE.fullmatch(text.strip()) else None
        return _placed(*rng, as_of, text.strip()[:10]) if rng else Abatement("undated", f"'{text.strip()}'")
    age, ages = r.get("abatementAge"), r.get("abatementRange")
    if isinstance(age, dict) or (isinstance(ages, dict) and (ages.get("low") or ages.get("high"))):
        return _atage_quantity(age, ages, birth_date, units, as_of)
    return Abatement("none")
