"""One Observation → a Measurement: its value in the input's canonical unit, with what it was.

Reads the value elements (valueQuantity, valueInteger, valueCodeableConcept, a tumor size's
longest-dimension component) and converts units; the reference range is read only when a criterion
asks for a ULN. Validation (fhir.resources R4B) covers exactly the elements read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

from fhir.resources.R4B.observation import Observation, ObservationReferenceRange
from pydantic import ValidationError

from .. import tables
from ..fhir.elements import codings, concept_text, number, quantity_text
from ..fhir.record import first_error
from ..fhir.wire import Entry
from ..interval import Interval
from ..tables import Coding
from ..units import UnitError, quantity_factor
from .dates import date_text

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
        if not isinstance(high, dict) or number(high.get("value")) is None:
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
    integer = number(r.get("valueInteger"))
    if integer is not None:
        return Measurement(**base, original=f"{integer:g}", value=Interval.point(integer), unit=spec.unit)
    q = _value_quantity(r, spec.id, table.tumor_longest_component)
    amount = number(q.get("value")) if q else None
    if q is None or amount is None:
        return None
    original = quantity_text(q)
    comparator = q.get("comparator") if isinstance(q.get("comparator"), str) else None
    if amount < 0 and obs_code.kind != "log10":  # counts, concentrations, sizes, scores: never below zero
        return Measurement(**base, original=original, unit_error="a negative value is not a possible result")
    try:
        raw = Interval.from_comparator(amount, comparator)
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


