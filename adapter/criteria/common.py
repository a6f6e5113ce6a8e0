"""Small shared pieces of the criteria: number formatting and 'no usable value' results."""

from __future__ import annotations

from ..mapping.facts import Facts
from ..mapping.observations import Measurement, Selection
from ..tables import observations
from .model import CriterionResult


def fmt(value: float) -> str:
    """Readable numbers: 100,000 · 9 · 1.5 · 0.25."""
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


def unusable(cid: str, requirement: str, facts: Facts, sel: Selection | None, input_id: str,
             window_days: int) -> CriterionResult | None:
    """An `unknown` result when there is no usable value (fetch failed, none, stale, unit); else None."""
    missing = facts.missing("Observation")
    if missing:
        return CriterionResult(cid, "unknown", requirement, note=f"data could not be obtained ({missing})")
    assert sel is not None
    what = label(input_id)
    if sel.chosen is None:
        stale = sel.stale
        return CriterionResult(
            cid, "unknown", requirement,
            observed=stale.dated if stale else None,
            evidence=[stale.ref] if stale and stale.ref else [],
            note=sel.absence(what, window_days),
        )
    m = sel.chosen
    if m.unit_error or m.value is None:
        why = m.unit_error or "the value is not a quantity"
        return CriterionResult(cid, "unknown", requirement, observed=m.dated, evidence=_refs(m),
                               note=f"cannot use the {what} {m.original}: {why}")
    return None


def _refs(m: Measurement) -> list[str]:
    return [m.ref] if m.ref else []
