"""Observations → Measurements: the most recent valid value of an input inside its window.

Selection works on raw JSON (status, dataAbsentReason, date) and converts units only for values it
looks at; the chosen resource alone is validated with the fhir.resources R4B model. Everything a
coordinator needs to trust or question the value travels with it: the original value and unit, the
date, the status, the reference range, and why other values were passed over.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import NamedTuple

from .. import tables
from ..fhir.wire import Entry
from .dates import Instant, date_range, instant_range
from .values import COUNTED_STATUS, Measurement, measure, valid_fhir


@dataclass
class Selection:
    """The outcome of looking for one input: a value, or the reason there is none."""

    chosen: Measurement | None = None
    stale: Measurement | None = None  # most recent value before the window, when none is inside
    notes: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # newer results passed over: invalid, no value
    conflict: list[Measurement] = field(default_factory=list)  # different results at the newest instant

    def absence(self, what: str, window_days: int) -> str:
        """Plain-language reason a value is missing, for the criterion's note."""
        if self.conflict:
            reason = (f"{len(self.conflict)} different {what} results at the same time "
                      f"({'; '.join(m.dated for m in self.conflict)}): the chart must say which is right")
        elif self.stale is not None:
            reason = f"stale: most recent {what} is {self.stale.dated}, older than {window_days} days"
        else:
            reason = f"no {what} in the last {window_days} days"
        return "; ".join([reason, *self.notes])


# --------------------------------------------------------------------------- selection


class Indexed(NamedTuple):
    """An Observation of an input, with its date read once (a tuple: a record indexes hundreds)."""

    entry: Entry
    code: tables.ObservationCode
    when: tuple[date, date] | None
    when_text: str | None


class Candidate(NamedTuple):
    """An Observation that may be the value of its input: counted status, dated, not after asOf."""

    moment: Instant
    when: tuple[date, date]
    when_text: str
    entry: Entry
    code: tables.ObservationCode


@dataclass
class ObservationIndex:
    """Observations of one patient grouped by input, with the evaluation date."""

    as_of: date
    by_input: dict[str, list[Indexed]]
    _valid: dict[int, str | None] = field(default_factory=dict)

    @classmethod
    def build(cls, entries: list[Entry], as_of: date, lookback_days: int) -> ObservationIndex:
        """Index by input. Windowed inputs keep only dated values from the last `lookback_days`: the
        same horizon the FHIR-server search uses (fhir/queries.py), so a Bundle and a server give the
        same answer for the same patient. History inputs (disease status, staging) keep everything."""
        table = tables.observations()
        floor = as_of - timedelta(days=lookback_days)
        floor_text = floor.isoformat()
        by_input: dict[str, list[Indexed]] = {}
        for entry in entries:
            code = table.code_of(entry.head)
            if code is None:
                continue
            obs_code = table.by_code[code]
            when_text = entry.head.effective_text()
            windowed = not table.inputs[obs_code.input].history
            # ISO dates compare as text: most of a long history is dropped without parsing a date
            if windowed and (when_text is None or when_text[:4] < floor_text[:4]):
                continue
            when = date_range(when_text)
            if windowed and (when is None or when[1] < floor):
                continue
            by_input.setdefault(obs_code.input, []).append(Indexed(entry, obs_code, when, when_text))
        return cls(as_of, by_input)

    def invalid(self, entry: Entry) -> str | None:
        """Why the resource is not valid FHIR R4 (validated once per evaluation), else None."""
        key = id(entry)
        if key not in self._valid:
            self._valid[key] = valid_fhir(entry)
        return self._valid[key]

    def _candidates(self, input_id: str, notes: list[str]) -> list[Candidate]:
        """Dated, countable Observations on or before the evaluation date, newest instant first.

        Ties keep a fixed order (by reference), so nothing downstream depends on the Bundle's order.
        """
        out = []
        skipped: dict[str, int] = {}
        for item in self.by_input.get(input_id, ()):
            head = item.entry.head
            status = head.status
            if status not in COUNTED_STATUS:
                skipped[f"status {status}"] = skipped.get(f"status {status}", 0) + 1
                continue
            if head.dataAbsentReason is not None:
                skipped["data absent"] = skipped.get("data absent", 0) + 1
                continue
            moment = instant_range(item.when_text)
            if item.when is None or item.when_text is None or moment is None:
                skipped["undated"] = skipped.get("undated", 0) + 1
                continue
            if item.when[1] > self.as_of:
                skipped["dated after the evaluation date"] = skipped.get("dated after the evaluation date",
                                                                           0) + 1
                continue
            out.append(Candidate(moment, item.when, item.when_text, item.entry, item.code))
        out.sort(key=lambda c: (c.entry.ref or "", c.entry.full_url or "", c.when_text))
        out.sort(key=lambda c: (c.moment[1], c.moment[0]), reverse=True)
        if skipped:
            notes.append("ignored: " + ", ".join(f"{n} ({why})" for why, n in sorted(skipped.items())))
        return out

    def _read(self, c: Candidate, sel: Selection) -> Measurement | None:
        """The candidate's value, or None with the reason it was passed over noted."""
        why = self.invalid(c.entry)
        m = None if why else measure(c.entry, c.code, c.when, c.when_text)
        if m is None:
            why = why or f"{c.entry.ref or 'an Observation'} has no value"
            sel.notes.append(why)
            sel.unreadable.append(f"a newer result ({c.when_text[:10]}) was not used: {why}")
        return m

    def latest(self, input_id: str, window_days: int) -> Selection:
        """The most recent valid value inside the window; else why not (stale, absent, invalid, or two
        different results at the same instant).

        Results at one instant are one draw: a corrected/amended result supersedes a final one, a final
        supersedes a preliminary; what is left must agree, or the input is in conflict.
        """
        sel = Selection()
        floor = self.as_of - timedelta(days=window_days)
        for group in _concurrent(self._candidates(input_id, sel.notes)):
            current = [c for c in group if c.when[0] >= floor]
            if not current:
                readable = [m for c in group if self.invalid(c.entry) is None
                            and (m := measure(c.entry, c.code, c.when, c.when_text)) is not None]
                if readable:
                    sel.stale = _supersede(readable)[0][0]
                    break
                continue
            found = [m for c in current if (m := self._read(c, sel)) is not None]
            if not found:
                continue
            top, superseded = _supersede(found)
            distinct = _distinct(top)
            if len(distinct) > 1:
                sel.conflict = distinct
                break
            sel.chosen = top[0]
            if superseded:
                sel.notes.append(f"{superseded} other version(s) of the result at the same time superseded "
                                 f"by the {top[0].status} one")
            break
        return sel

    def all_in_window(self, input_id: str, window_days: int | None) -> list[Measurement]:
        """Every valid value inside the window (all history when `window_days` is None), newest first."""
        floor = self.as_of - timedelta(days=window_days) if window_days is not None else date.min
        out = []
        for c in self._candidates(input_id, []):
            if c.when[0] < floor or self.invalid(c.entry) is not None:
                continue
            m = measure(c.entry, c.code, c.when, c.when_text)
            if m is not None:
                out.append(m)
        return out


# Which version of one result wins when several carry the same instant (FHIR observation-status).
STATUS_RANK = {"corrected": 2, "amended": 2, "final": 1, "preliminary": 0}


def _concurrent(candidates: list[Candidate]) -> Iterator[list[Candidate]]:
    """Newest-first candidates in groups that may be the same moment (equal instants, or a partial date
    overlapping them): which of them is later cannot be told."""
    i = 0
    while i < len(candidates):
        first = candidates[i].moment
        j = i + 1
        while j < len(candidates) and candidates[j].moment[1] >= first[0]:
            j += 1
        yield candidates[i:j]
        i = j


def _supersede(found: list[Measurement]) -> tuple[list[Measurement], int]:
    """The results of the highest-ranking status, and how many lower-ranking ones they replace."""
    best = max(STATUS_RANK.get(m.status, 0) for m in found)
    top = [m for m in found if STATUS_RANK.get(m.status, 0) == best]
    return top, len(found) - len(top)


def _distinct(found: list[Measurement]) -> list[Measurement]:
    """One of each different result (a value in another unit that converts to the same is the same)."""
    out: list[Measurement] = []
    for m in found:
        if not any(_same(m, o) for o in out):
            out.append(m)
    return out


def _same(a: Measurement, b: Measurement) -> bool:
    if a.concepts != b.concepts or (a.unit_error is None) != (b.unit_error is None):
        return False
    if a.value is None or b.value is None:
        return a.value is None and b.value is None and a.original == b.original
    return (math.isclose(a.value.lo, b.value.lo, rel_tol=1e-9) and math.isclose(a.value.hi, b.value.hi, rel_tol=1e-9)
            and a.value.lo_open == b.value.lo_open and a.value.hi_open == b.value.hi_open)
