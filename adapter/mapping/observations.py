"""Observations → Measurements: the most recent valid value of an input inside its window.

Selection works on raw JSON (status, dataAbsentReason, date) and converts units only for values it
looks at; the chosen resource alone is validated with the fhir.resources R4B model. Everything a
coordinator needs to trust or question the value travels with it: the original value and unit, the
date, the status, the reference range, and why other values were passed over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import NamedTuple

from .. import tables
from ..fhir.wire import Entry
from .dates import date_range
from .values import COUNTED_STATUS, Measurement, measure, valid_fhir


@dataclass
class Selection:
    """The outcome of looking for one input: a value, or the reason there is none."""

    chosen: Measurement | None = None
    stale: Measurement | None = None  # most recent value before the window, when none is inside
    notes: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # newer results passed over: invalid, no value

    def absence(self, what: str, window_days: int) -> str:
        """Plain-language reason a value is missing, for the criterion's note."""
        if self.stale is not None:
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
            code = entry.head.code_in(table.system, table.by_code)
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

    def _candidates(self, input_id: str, notes: list[str]) -> list[tuple[tuple[date, date], str, Entry,
                                                                         tables.ObservationCode]]:
        """Dated, countable Observations on or before the evaluation date, newest first."""
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
            if item.when is None or item.when_text is None:
                skipped["undated"] = skipped.get("undated", 0) + 1
                continue
            if item.when[1] > self.as_of:
                skipped["dated after the evaluation date"] = skipped.get("dated after the evaluation date",
                                                                           0) + 1
                continue
            out.append((item.when, item.when_text, item.entry, item.code))
        out.sort(key=lambda item: (item[0][1], item[0][0]), reverse=True)
        if skipped:
            notes.append("ignored: " + ", ".join(f"{n} ({why})" for why, n in sorted(skipped.items())))
        return out

    def latest(self, input_id: str, window_days: int) -> Selection:
        """The most recent valid value inside the window; else why not (stale, absent, invalid)."""
        sel = Selection()
        floor = self.as_of - timedelta(days=window_days)
        for when, when_str, entry, obs_code in self._candidates(input_id, sel.notes):
            if when[0] < floor:
                if sel.stale is None and self.invalid(entry) is None:
                    sel.stale = measure(entry, obs_code, when, when_str)
                if sel.stale is not None:
                    break
                continue
            m = None if self.invalid(entry) else measure(entry, obs_code, when, when_str)
            if m is None:
                why = self.invalid(entry) or f"{entry.ref or 'an Observation'} has no value"
                sel.notes.append(why)
                sel.unreadable.append(f"a newer result ({when_str[:10]}) was not used: {why}")
                continue
            sel.chosen = m
            break
        return sel

    def all_in_window(self, input_id: str, window_days: int | None) -> list[Measurement]:
        """Every valid value inside the window (all history when `window_days` is None), newest first."""
        floor = self.as_of - timedelta(days=window_days) if window_days is not None else date.min
        out = []
        for when, when_str, entry, obs_code in self._candidates(input_id, []):
            if when[0] < floor or self.invalid(entry) is not None:
                continue
            m = measure(entry, obs_code, when, when_str)
            if m is not None:
                out.append(m)
        return out
