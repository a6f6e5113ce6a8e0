"""FHIR dates, which may be partial: '2014', '2014-11', '2014-11-03', or a dateTime.

A partial date is the range of days it could mean; decisions are taken only when the whole range
agrees. The date part of a dateTime is used as written (the local date the clinician saw).
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

from ..fhir.elements import fmt_number, number

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def date_range(text: object) -> tuple[date, date] | None:
    """Earliest and latest calendar day a FHIR date/dateTime can mean; None if unreadable."""
    return _date_range(text) if isinstance(text, str) else None


@lru_cache(maxsize=8192)
def _date_range(text: str) -> tuple[date, date] | None:
    """Cached: the results of one blood draw share their effective time."""
    m = _DATE.match(text.strip())
    if not m:
        return None
    year = int(m.group(1))
    try:
        if m.group(3):
            d = date(year, int(m.group(2)), int(m.group(3)))
            return d, d
        if m.group(2):
            month = int(m.group(2))
            last = calendar.monthrange(year, month)[1]
            return date(year, month, 1), date(year, month, last)
        return date(year, 1, 1), date(year, 12, 31)
    except ValueError:
        return None


def date_text(text: str) -> str:
    """The date part of a FHIR date/dateTime, as written."""
    m = _DATE.match(text.strip())
    return m.group(0) if m else text


def age_on(birth: date, on: date) -> int:
    """Completed years; someone born on 29 February turns a year older on 1 March in common years."""
    years = on.year - birth.year
    if (on.month, on.day) < (birth.month, birth.day):
        years -= 1
    return years


def age_range(birth_text: object, on: date) -> tuple[int, int] | None:
    """Youngest and oldest possible age in completed years on `on`; None when the birth date is
    unreadable or after `on` (no age at all: not a negative one). A partial date that may fall after
    `on` ("2026" read in 2026) is at least 0."""
    rng = date_range(birth_text)
    if rng is None or rng[0] > on:
        return None
    earliest, latest = rng
    return max(age_on(latest, on), 0), age_on(earliest, on)


Instant = tuple[datetime, datetime]  # earliest and latest moment a FHIR date/dateTime can mean, UTC


def instant_range(text: object) -> Instant | None:
    """The span of time a FHIR date/dateTime/instant can mean, in UTC, for ordering results.

    "Most recent" is the latest instant, not the latest calendar day: `2026-11-14T23:30:00-05:00` is
    after `2026-11-15T02:00:00+00:00`. A dateTime with a time but no offset (not valid FHIR, but sent)
    and a partial date are read in UTC; a partial date spans every instant of its days.
    """
    return _instant_range(text) if isinstance(text, str) else None


@lru_cache(maxsize=8192)
def _instant_range(text: str) -> Instant | None:
    text = text.strip()
    if "T" in text:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        return moment, moment
    days = _date_range(text)
    if days is None:
        return None
    start = datetime.combine(days[0], time.min, UTC)
    end = datetime.combine(days[1], time.max, UTC)
    return start, end


def add_units(day: date, n: int, unit: tuple[str, int]) -> date:
    """`day` plus n units; a day the target month lacks (29 February) rolls to the next month's first,
    as birthdays do. Past the calendar: date.max."""
    field, k = unit
    try:
        if field == "days":
            return day + timedelta(days=n * k)
        year, month = divmod(day.year * 12 + day.month - 1 + n * k * (12 if field == "years" else 1), 12)
        last = calendar.monthrange(year, month + 1)[1]
        return date(year, month + 1, last) + timedelta(days=1) if day.day > last else date(year, month + 1, day.day)
    except (OverflowError, ValueError):
        return date.max


def age_quantity(q: Any, units: dict[str, tuple[str, int]]) -> tuple[float, tuple[str, int], str] | None:
    """(value, unit, text) of an Age; None when it cannot be read."""
    if not isinstance(q, dict):
        return None
    value = number(q.get("value"))
    spelled = [s for s in (q.get("code"), q.get("unit")) if isinstance(s, str)]
    unit = next((u for u in (units.get(s, units.get(s.strip().lower())) for s in spelled) if u), None)
    if value is None or value < 0 or unit is None:
        return None
    return value, unit, f"{fmt_number(value)} {spelled[0]}"
