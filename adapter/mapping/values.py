"""One Observation → a Measurement: its value in the input's canonical unit, with what it was.

Reads the value elements (valueQuantity, valueInteger, valueCodeableConcept, a number with its unit in
valueString, a tumor size's longest-dimension component), converts units and checks the value against
the input's physiological range; the reference range is read only when a criterion
asks for a ULN. Validation (fhir.resources R4B) covers exactly the elements read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from .. import tables
from ..fhir.elements import codings, concept_text, number, quantity_text
from ..fhir.record import first_error
from ..fhir.wire import Entry
from ..interval import Interval
from ..tables import Coding
from ..units import UnitError, quantity_factor
from .dates import date_text
from .validation import validate

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
    # why the value cannot be used (unit not convertible, comparator unknown, outside the physiological
    # range); `value` is then None. Every criterion reads this: an unusable decisive result is `unknown`.
    unit_error: str | None = None
    from_text: bool = False  # read from valueString ("128 mmol/L"), not a coded Quantity
    # referenceRange and the value's unit: read (and validated) only by the criteria that use a ULN
    ranges: Any = field(default=None, compare=False)  # referenceRange as sent
    value_unit: Any = field(default=None, compare=False)

    @property
    def dated(self) -> str:
        return f"{self.original} ({self.when_text}{', value read from text' if self.from_text else ''})"

    @property
    def caveat(self) -> str | None:
        return f"{self.status} result" if self.status in NOTED_STATUS else None



def _value_quantity(resource: dict[str, Any], component_code: str | None) -> dict[str, Any] | None:
    """The Quantity to read: the input's value component when it has one and it is present (a tumor
    size's longest dimension), else valueQuantity."""
    components = resource.get("component") if component_code else None
    for comp in components if isinstance(components, list) else ():
        if isinstance(comp, dict) and any(c == component_code for _, c in codings(comp.get("code"))):
            q = comp.get("valueQuantity")
            return q if isinstance(q, dict) else None
    q = resource.get("valueQuantity")
    return q if isinstance(q, dict) else None


def measure(entry: Entry, obs_code: tables.ObservationCode, when: tuple[date, date],
            when_str: str) -> Measurement | None:
    """Read the value of one Observation; None when it carries no value at all (a valueString that is
    not a number, such as "see note", is no value: words are never interpreted)."""
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
        return _checked(Measurement(**base, original=f"{integer:g}", value=Interval.point(integer), unit=spec.unit),
                        spec)
    q = _value_quantity(r, spec.value_component)
    if q is None and spec.unit is not None:  # coded inputs never read words
        parsed = quantity_from_text(r.get("valueString"))
        if isinstance(parsed, str):
            return Measurement(**base, from_text=True, original=" ".join(r["valueString"].split()),
                               unit_error=parsed)
        if parsed is not None:
            base["from_text"], q = True, parsed
    amount = number(q.get("value")) if q else None
    if q is None or amount is None:
        return None
    original = " ".join(q["text"].split()) if base.get("from_text") else quantity_text(q)
    comparator = q.get("comparator") if isinstance(q.get("comparator"), str) else None
    if amount < 0 and obs_code.kind != "log10":  # counts, concentrations, sizes, scores: never below zero
        return Measurement(**base, original=original, unit_error="a negative value is not a possible result")
    try:
        raw = Interval.from_comparator(amount, comparator)
    except ValueError:
        return Measurement(**base, original=original, unit_error=f"unknown comparator {comparator!r}")
    kind = obs_code.kind
    if kind == "log10":  # branch on the code: the value is an exponent, whatever the unit says
        unit = spec.display_unit or spec.unit
        count = Interval(_exp10(raw.lo) if comparator not in ("<", "<=") else 0.0, _exp10(raw.hi),
                         raw.lo_open, raw.hi_open)
        return _checked(Measurement(**base, original=f"{original} ({_log10_equivalent(raw, comparator)} {unit})",
                                    unit=spec.unit, value=count),
                        spec, f"{_log10_equivalent(raw, comparator, sign=False)} {unit}")
    if kind == "score" or spec.unit in (None, "1"):
        if base.get("from_text") and q.get("unit"):  # "2 to 3", "2 (ECOG)": not a plain score
            return Measurement(**base, original=original, unit_error=f"text after the number in '{original}'")
        return _checked(Measurement(**base, original=original, value=raw, unit=spec.unit), spec)
    try:
        factor, _ = quantity_factor(q.get("code"), q.get("unit"), spec.unit, spec.analyte, kind,
                                    spec.unit_aliases)
    except UnitError as exc:
        return Measurement(**base, original=original, unit_error=str(exc))
    return _checked(Measurement(**base, original=original, value=raw.scale(factor), unit=spec.unit,
                                ranges=r.get("referenceRange"), value_unit=q), spec)


# "128 mmol/L", "<0.2 mg/dL", "7.2 x10E3/uL", "1,250 /uL", "≥ 10": an optional comparator, a number
# (US digit grouping "1,250" = 1250; a decimal comma "9,5" is ambiguous and refused), then the unit as
# written — read by the same unit logic as valueQuantity.unit. ASCII digits only.
_COMPARATOR = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "≤": "<=", "≥": ">=", "=<": "<=", "=>": ">="}
_TEXT_QUANTITY = re.compile(
    r"\s*(?P<cmp><=|>=|=<|=>|<|>|≤|≥)?\s*"
    r"(?P<num>-?(?:[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?|\.[0-9]+))(?![0-9.,])"
    r"\s*(?P<unit>.*?)\s*")
_STARTS_LIKE_A_NUMBER = re.compile(r"\s*(?:<=|>=|=<|=>|<|>|≤|≥)?\s*-?[0-9.,]")


def quantity_from_text(text: Any) -> dict[str, Any] | str | None:
    """A valueString as a Quantity-like dict {value, comparator, unit, text}; None when it is not a
    number at all ("see note", "negative"); a reason when it starts like a number that cannot be read
    ("9,5 g/dL", "1.2.3")."""
    if not isinstance(text, str):
        return None
    match = _TEXT_QUANTITY.fullmatch(text)
    if match is None:
        return f"cannot read a number in '{' '.join(text.split())}'" if _STARTS_LIKE_A_NUMBER.match(text) else None
    value = number(float(match["num"].replace(",", "")))
    if value is None:  # hundreds of digits: not a finite number
        return f"cannot read a number in '{' '.join(text.split())}'"
    cmp = match["cmp"]
    return {"value": value, "comparator": _COMPARATOR[cmp] if cmp else None, "unit": match["unit"] or None,
            "text": text}


def _checked(m: Measurement, spec: tables.InputSpec, shown: str | None = None) -> Measurement:
    """The measurement, or — when no value it allows lies in the input's physiological range
    (mappings/observations.yaml `plausible`) — the same without a value, saying why: an entry or unit
    error is `unknown`, never met or not met. A comparator interval partly inside the range is kept as
    written (ECOG "<= 7" may be 0-5; the criterion decides only if the whole interval is on one side)."""
    if spec.plausible is None or m.value is None:
        return m
    lo, hi = spec.plausible
    if m.value.le(hi) is not False and m.value.ge(lo) is not False:
        return m
    unit = spec.display_unit or spec.unit
    suffix = "" if unit in (None, "1") else f" {unit}"
    why = (f"implausible for {spec.label}: {shown or _interval_text(m.value) + suffix} is outside the "
           f"physiological range {_fmt(lo)}-{_fmt(hi)}{suffix} — check units")
    return replace(m, value=None, unit_error=why)


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "unbounded"
    return f"{value:,.0f}" if abs(value) >= 10000 and value == int(value) else f"{value:g}"


def _interval_text(v: Interval) -> str:
    if v.is_point:
        return _fmt(v.lo)
    if math.isinf(v.hi):
        return f"{'>' if v.lo_open else '>='} {_fmt(v.lo)}"
    if v.lo == 0:
        return f"{'<' if v.hi_open else '<='} {_fmt(v.hi)}"
    return f"{_fmt(v.lo)}-{_fmt(v.hi)}"


def _log10_equivalent(raw: Interval, comparator: str | None, sign: bool = True) -> str:
    """'= 20' for a log10 of 1.3 (two significant figures: what a log to one decimal carries);
    '< 20' with a comparator; 10^400 past what a double holds."""
    exponent = raw.hi if comparator in ("<", "<=") else raw.lo
    if exponent > 15:
        amount = f"10^{exponent:g}"
    else:
        copies = float(f"{10.0 ** exponent:.2g}")
        amount = f"{copies:,.0f}" if copies >= 10 else f"{copies:g}"
    prefix = comparator if comparator else ("=" if sign else "")
    return f"{prefix} {amount}".strip()


def _exp10(exponent: float) -> float:
    """10 ** exponent, infinite past a double's range (a log10 of 400 is read as written: beyond any limit)."""
    try:
        return 10.0 ** exponent if math.isfinite(exponent) else (math.inf if exponent > 0 else 0.0)
    except OverflowError:
        return math.inf


# The elements the criteria read. Validation covers exactly these: narrative, performer, notes and
# extensions are not used, and validating them would cost most of the evaluation's time. The
# reference range is validated apart, by the ULN criteria that read it (mapping/reference_ranges.py).
READ_ELEMENTS = frozenset({
    "resourceType", "id", "status", "code", "subject", "effectiveDateTime", "effectivePeriod",
    "effectiveInstant", "valueQuantity", "valueCodeableConcept", "valueInteger", "valueBoolean", "valueString",
    "dataAbsentReason",
    "referenceRange", "component", "method",
})
VALIDATED_WITH_THE_VALUE = READ_ELEMENTS - {"referenceRange"}
# single elements that recur unchanged across results (validation.py validates each content once)
SHARED_ELEMENTS = ("code", "subject", "method", "valueCodeableConcept", "dataAbsentReason")


def valid_fhir(entry: Entry) -> str | None:
    """None when the elements we read are valid R4 (fhir.resources R4B model); else a one-line reason."""
    try:
        validate(Observation, {k: v for k, v in entry.resource.items() if k in VALIDATED_WITH_THE_VALUE},
                 SHARED_ELEMENTS)
    except ValidationError as exc:
        return f"{entry.ref or 'an Observation'} is not valid FHIR R4 ({first_error(exc)})"
    return None


