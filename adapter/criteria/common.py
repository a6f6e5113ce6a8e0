"""Small shared pieces of the criteria: number formatting and 'is there a usable value?'."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..interval import Interval
from ..mapping.facts import Facts
from ..mapping.observations import Selection
from ..mapping.reference_ranges import Patient, listed, read_ranges, within
from ..mapping.values import Measurement
from ..tables import observations
from ..units import factor
from .model import CriterionResult
from .params import Params, Quantity

if TYPE_CHECKING:
    from .kinds import Context


def window(params: Params, ctx: Context, days: int | None = None) -> int:
    """A criterion's look-back in days: `days` when given, else its `window_days`, else the trial's."""
    return days or params.window_days or ctx.trial.default_window_days


def fmt(value: float) -> str:
    """Readable numbers: 100,000 · 9 · 1.5 · 0.25 (and 'unbounded' for an interval's open end)."""
    if not math.isfinite(value):
        return "unbounded" if value > 0 else "-unbounded"
    if value == int(value):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def label(input_id: str) -> str:
    return observations().inputs[input_id].label


def join(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text or None


@dataclass(frozen=True)
class Usable:
    """The most recent usable value of an input, with why other values were passed over."""

    m: Measurement
    value: Interval
    notes: tuple[str, ...]
    unreadable: tuple[str, ...] = ()

    def notes_for(self, status: str) -> tuple[str, ...]:
        """What to say about the values passed over: everything unless the criterion is met; when it
        is met, still that a newer result could not be read (it might have said otherwise)."""
        return self.notes if status != "met" else self.unreadable


def usable_value(cid: str, requirement: str, facts: Facts, input_id: str,
                 window_days: int) -> CriterionResult | Usable:
    """The value to judge, or the `unknown` result saying why there is none (fetch failed, absent,
    stale, unconvertible unit, outside the physiological range: `Measurement.unit_error`)."""
    missing = facts.missing_inputs(input_id)
    if missing:
        return CriterionResult(cid, "unknown", requirement, note=f"data could not be obtained ({missing})",
                               missing="unavailable")
    sel: Selection = facts.observations.latest(input_id, window_days)
    what = label(input_id)
    m = sel.chosen
    if m is None:
        shown = sel.conflict or ([sel.stale] if sel.stale else [])
        return CriterionResult(
            cid, "unknown", requirement,
            observed="; ".join(s.dated for s in shown) or None,
            evidence=[s.ref or "" for s in shown],
            note=sel.absence(what, window_days),
            missing=None if sel.conflict else "stale" if sel.stale else "absent",
        )
    if m.unit_error or m.value is None:
        why = m.unit_error or "the value is not a quantity"
        return CriterionResult(cid, "unknown", requirement, observed=m.dated, evidence=[m.ref or ""],
                               note=f"cannot use the {what} {m.original}: {why}")
    return Usable(m, m.value, tuple(sel.notes), tuple(sel.unreadable))


@dataclass(frozen=True)
class Uln:
    """The ULN a result is judged against: the possible values in the input's unit (one, unless which of
    the result's reference ranges applies cannot be told), how to show it, and what to say about it."""

    values: tuple[float, ...]
    shown: str
    note: str | None

    def within(self, value: Interval, k: float) -> bool | None:
        return within(value, k, self.values)

    def ratio(self, value: Interval) -> str | None:
        """'1.67 x ULN' for a single value against a single ULN."""
        return f"{fmt(value.hi / self.values[0])} x ULN" if value.is_point and len(self.values) == 1 else None


def upper_limit(m: Measurement, default: Quantity, input_id: str, facts: Facts) -> Uln | str:
    """ULN in the input's unit: the result's own normal range for this patient, else the trial's default.

    Returns the ULN (with the "assumed ULN" note when the default was used); or, when the result has a
    reference range that cannot be read, why (its own ULN exists: a default would stand in for a value
    the lab did state). The default's unit was checked when the trial was loaded.
    """
    spec = observations().inputs[input_id]
    reading = read_ranges(m.ranges, m.value_unit or {}, spec, observations().by_code[m.code].kind,
                          Patient(facts.gender, facts.birth_date), m.when)
    if reading.problem:
        return f"cannot use the reference range of {m.original}: {reading.problem}"
    limits = reading.limits
    if len({lim.value for lim in limits}) == 1 and reading.certain:
        return Uln((limits[0].value,), f"ULN {limits[0].shown}", None)
    assert spec.unit is not None
    uln = default.value * factor(default.unit, spec.unit, spec.analyte, spec.kind, spec.unit_aliases)
    shown = f"assumed ULN {fmt(default.value)} {default.unit}"
    if limits:
        each = listed([lim.shown + (f" for {lim.population}" if lim.population else "") for lim in limits], "; ")
        values = {lim.value for lim in limits} | (set() if reading.certain else {uln})
        texts = [lim.shown for lim in limits]
        if not reading.certain:
            texts.append(f"the trial default {fmt(default.value)} {default.unit}")
        why = ("which of the result's reference ranges applies to this patient is not known" if reading.certain
               else "no reference range on the result surely applies to this patient")
        return Uln(tuple(sorted(values)), "ULN " + listed(texts, " or "),
                   f"{why} ({each}): decided only where every possible ULN gives the same answer")
    why = reading.passed_over or "no reference range on the result"
    return Uln((uln,), shown, f"{shown} ({why}; trial default, {default.source})")
