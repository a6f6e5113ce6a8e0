"""Observations → Measurements: the most recent valid value of an input inside its window.

Selection works on raw JSON (status, dataAbsentReason, date) and converts units only for values it
looks at; the chosen resource alone is validated with the fhir.resources R4B model. Everything a
coordinator needs to trust or question the value travels with it: the original value and unit, the
date, the status, the reference range, and why other values were passed over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property
from typing import Any, NamedTuple

from fhir.resources.R4B.observation import Observation, ObservationReferenceRange
from pydantic import ValidationError

from .. import tables
from ..fhir.record import first_error
from ..fhir.wire import Entry
from ..interval import Interval
from ..tables import Coding
from ..units import UnitError, quantity_factor
from .dates import date_range, date_text

COUNTED_STATUS = {"final", "amended", "corrected", "preliminary"}
NOTED_STATUS = {"preliminary"}


@dataclass(frozen=True)
class Measurement:
    input: str
    code: str
    ref: str | None
    when: date
    when_text: str
    status: str
    original: str
    value: Interval | None = None  # in `unit`
    unit: str | None = None
    concepts: frozenset[Coding] = frozenset()
    methods: frozenset[Coding] = frozenset()
    unit_error: str | None = None  # the value cannot be used
    # referenceRange and the value's unit: read (and validated) only by the criteria that use a ULN
    ranges: tuple[Any, ...] = field(default=(), compare=False)
    value_unit: Any = field(default=None, compare=False)

    @cached_property
    def reference_limit(self) -> tuple[float | None, str | None, str | None]:
        """ULN from the result's referenceRange.high in `unit`, as written, or why it cannot be used."""
        spec = tables.observations().inputs[self.input]
        return _uln(self.ranges, self.value_unit or {}, spec, tables.observations().by_code[self.code].kind)

    @property
    def dated(self) -> str:
        return f"{self.original} ({self.when_text})"

    @property
    def caveat(self) -> str | None:
        return f"{self.status} result" if self.status in NOTED_STATUS else None


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


# --------------------------------------------------------------------------- raw JSON helpers


def codings(concept: Any) -> frozenset[Coding]:
    if not isinstance(concept, dict):
        return frozenset()
    out = set()
    for c in concept.get("coding") or ():
        if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str):
            out.add((c["system"], c["code"]))
    return frozenset(out)


def concept_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if isinstance(concept.get("text"), str):
        return str(concept["text"])
    for c in concept.get("coding") or ():
        if isinstance(c, dict) and (c.get("display") or c.get("code")):
            return str(c.get("display") or c.get("code"))
    return ""


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    value = float(x)
    return value if math.isfinite(value) else None


def _fmt(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:,.0f}"


def quantity_text(q: dict[str, Any]) -> str:
    comparator = f"{q['comparator']} " if isinstance(q.get("comparator"), str) else ""
    number = _number(q.get("value"))
    shown = _fmt(number) if number is not None else "?"
    unit = q.get("unit") or q.get("code") or ""
    return f"{comparator}{shown} {unit}".strip()


# --------------------------------------------------------------------------- extraction


def _value_quantity(resource: dict[str, Any], input_id: str, longest_code: str) -> dict[str, Any] | None:
    """The Quantity to read: tumor size comes from its longest-dimension component when present."""
    if input_id == "tumor-size":
        for comp in resource.get("component") or ():
            if isinstance(comp, dict) and any(c == longest_code for _, c in codings(comp.get("code"))):
                q = comp.get("valueQuantity")
                return q if isinstance(q, dict) else None
    q = resource.get("valueQuantity")
    return q if isinstance(q, dict) else None


def _uln(given: tuple[Any, ...], value_unit: dict[str, Any], spec: tables.InputSpec,
         kind: str) -> tuple[float | None, str | None, str | None]:
    """Upper limit of normal from referenceRange.high, in the input's canonical unit.

    The ranges are validated here (fhir.resources R4B), when a criterion asks for the ULN: most results
    are judged against a fixed threshold and never read their range.
    """
    ranges = [r for r in given if isinstance(r, dict)]
    for rng in ranges:
        try:
            ObservationReferenceRange.model_validate(rng)
        except ValidationError as exc:
            return None, None, f"the reference range is not valid FHIR R4 ({first_error(exc)})"
    ranges.sort(key=lambda r: 0 if not r.get("type") or "normal" in str(r.get("type")) else 1)
    for rng in ranges:
        high = rng.get("high")
        if not isinstance(high, dict) or _number(high.get("value")) is None:
            continue
        value = float(high["value"])
        code, unit = high.get("code"), high.get("unit")
        if not code and not unit:  # a range without a unit is in the value's unit
            code, unit = value_unit.get("code"), value_unit.get("unit")
        original = quantity_text({**high, "unit": unit or code})
        assert spec.unit is not None
        try:
            f, _ = quantity_factor(code, unit, spec.unit, spec.analyte, kind)
        except UnitError as exc:
            return None, original, f"reference range unit: {exc}"
        return value * f, original, None
    return None, None, None


def measure(entry: Entry, obs_code: tables.ObservationCode, when: tuple[date, date],
            when_str: str) -> Measurement | None:
    """Read the value of one Observation; None when it carries no value at all."""
    table = tables.observations()
    spec = table.inputs[obs_code.input]
    r = entry.resource
    base: dict[str, Any] = {
        "input": spec.id,
        "code": obs_code.code,
        "ref": entry.ref,
        "when": when[1],
        "when_text": date_text(when_str),
        "status": str(r.get("status")),
        "methods": codings(r.get("method")),
    }
    concept = r.get("valueCodeableConcept")
    if isinstance(concept, dict):
        return Measurement(**base, original=concept_text(concept) or "coded value", concepts=codings(concept))
    integer = _number(r.get("valueInteger"))
    if integer is not None:
        return Measurement(**base, original=f"{integer:g}", value=Interval.point(integer), unit=spec.unit)
    q = _value_quantity(r, spec.id, table.tumor_longest_component)
    number = _number(q.get("value")) if q else None
    if q is None or number is None:
        return None
    original = quantity_text(q)
    comparator = q.get("comparator") if isinstance(q.get("comparator"), str) else None
    if number < 0 and obs_code.kind != "log10":  # counts, concentrations, sizes, scores: never below zero
        return Measurement(**base, original=original, unit_error="a negative value is not a possible result")
    try:
        raw = Interval.from_comparator(number, comparator)
    except ValueError:
        return Measurement(**base, original=original, unit_error=f"unknown comparator {comparator!r}")
    kind = obs_code.kind
    if kind == "log10":  # branch on the code: the value is an exponent, whatever the unit says
        return Measurement(**base, original=original, unit=spec.unit,
                           value=Interval(_exp10(raw.lo) if comparator not in ("<", "<=") else 0.0,
                                          _exp10(raw.hi), raw.lo_open, raw.hi_open))
    if kind == "score" or spec.unit in (None, "1"):
        return Measurement(**base, original=original, value=raw, unit=spec.unit)
    try:
        factor, _ = quantity_factor(q.get("code"), q.get("unit"), spec.unit, spec.analyte, kind)
    except UnitError as exc:
        return Measurement(**base, original=original, unit_error=str(exc))
    ranges = r.get("referenceRange")
    return Measurement(**base, original=original, value=raw.scale(factor), unit=spec.unit,
                       ranges=tuple(ranges) if isinstance(ranges, list) else (), value_unit=q)


def _exp10(exponent: float) -> float:
    """10 ** exponent, infinite past a double's range (a log10 of 400 is read as written: beyond any limit)."""
    try:
        return 10.0 ** exponent if math.isfinite(exponent) else (math.inf if exponent > 0 else 0.0)
    except OverflowError:
        return math.inf


# The elements the criteria read. Validation covers exactly these: narrative, performer, notes and
# extensions are not used, and validating them would cost most of the evaluation's time. The
# reference range is validated apart, by the ULN criteria that read it (Measurement.reference_limit).
READ_ELEMENTS = frozenset({
    "resourceType", "id", "status", "code", "subject", "effectiveDateTime", "effectivePeriod",
    "effectiveInstant", "valueQuantity", "valueCodeableConcept", "valueInteger", "dataAbsentReason",
    "referenceRange", "component", "method",
})
VALIDATED_WITH_THE_VALUE = READ_ELEMENTS - {"referenceRange"}


def valid_fhir(entry: Entry) -> str | None:
    """None when the elements we read are valid R4 (fhir.resources R4B model); else a one-line reason."""
    try:
        Observation.model_validate({k: v for k, v in entry.resource.items() if k in VALIDATED_WITH_THE_VALUE})
    except ValidationError as exc:
        return f"{entry.ref or 'an Observation'} is not valid FHIR R4 ({first_error(exc)})"
    return None


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
