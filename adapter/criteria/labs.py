"""Laboratory criteria: fixed thresholds (ANC, platelets, hemoglobin, albumin, sodium) and multiples
of the upper limit of normal (total bilirubin, AST, ALT) with their condition modifiers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mapping.facts import Facts
from ..tables import conditions
from .common import fmt, join, label, upper_limit, usable_value, window
from .model import CriterionResult, decide
from .params import LabMinimum, LabUlnMultiple

if TYPE_CHECKING:
    from ..trials import Criterion
    from .kinds import Context


def _converted(value: float, unit: str, original: str) -> str | None:
    """'= 8.77 mg/dL' when the original was in another unit."""
    return None if original.rsplit(maxsplit=1)[-1] == unit else f"= {fmt(value)} {unit}"


def threshold(facts: Facts, criterion: Criterion, ctx: Context) -> CriterionResult:
    """value >= min, in the input's canonical unit (checked when the trial was loaded)."""
    p = criterion.params
    assert isinstance(p, LabMinimum)
    cid, input_id, minimum = criterion.id, p.input, p.min
    shown_unit = p.display_unit or p.unit
    requirement = p.text or f">= {fmt(minimum)} {shown_unit}"
    found = usable_value(cid, requirement, facts, input_id, window(p, ctx))
    if isinstance(found, CriterionResult):
        return found
    m, value = found.m, found.value
    status = decide(value.ge(minimum))
    shown = value.hi if value.is_point else None
    conversion = _converted(shown, shown_unit, m.original) if shown is not None else None
    note = None
    if status == "not-met":  # the value and its conversion are in `observed`, next to the note everywhere
        note = f"below {fmt(minimum)} {shown_unit}"
    elif status == "unknown":
        note = f"{label(input_id)} reported as {m.original}: the range spans {fmt(minimum)} {shown_unit}"
    observed = f"{m.dated} {conversion}" if conversion else m.dated
    return CriterionResult(cid, status, requirement, observed=observed, evidence=[m.ref or ""],
                           note=join(" ".join(note.split()) if note else None, m.caveat,
                                     *found.notes_for(status)))


def _uln_requirement(p: LabUlnMultiple, modifier_title: str) -> str:
    text = f"<= {fmt(p.max_uln)} x ULN"
    if p.modifier is not None:
        text += f" (<= {fmt(p.modifier.max_uln)} x ULN with {modifier_title})"
    return text


def uln_multiple(facts: Facts, criterion: Criterion, ctx: Context) -> CriterionResult:
    """value <= k x ULN; k rises when the patient has the modifying condition (Gilbert, liver mets).

    Only a confirmed condition raises the limit. An unconfirmed (provisional, differential) one cannot
    grant the allowance on its own: the value is decided when it passes at the base limit or fails even
    at the raised one; in between, a person must confirm the condition.
    """
    p = criterion.params
    assert isinstance(p, LabUlnMultiple)
    cid, input_id = criterion.id, p.input
    mod_set = p.modifier.condition if p.modifier else ""
    mod_title = conditions().sets[mod_set].title if mod_set else ""
    requirement = p.text or _uln_requirement(p, mod_title)
    found = usable_value(cid, requirement, facts, input_id, window(p, ctx))
    if isinstance(found, CriterionResult):
        return found
    m, value = found.m, found.value
    modifiers = facts.having(mod_set) if mod_set else []
    confirmed = [c for c in modifiers if c.confirmed]
    uln = upper_limit(m, p.default_uln, input_id, facts)
    if isinstance(uln, str):
        return CriterionResult(cid, "unknown", requirement, observed=m.dated, evidence=[m.ref or ""], note=uln)
    base_k = p.max_uln
    raised_k = p.modifier.max_uln if p.modifier and modifiers else base_k
    base, raised = uln.within(value, base_k), uln.within(value, raised_k)
    notes = [uln.note] if uln.note else []
    if confirmed:
        outcome, spans = raised, f"{fmt(raised_k)} x ULN"
        notes.append(f"{mod_title} documented ({confirmed[0].ref or confirmed[0].display}): "
                     f"limit {fmt(raised_k)} x ULN")
    elif modifiers:
        outcome = True if base is True else False if raised is False else None
        spans = f"{fmt(base_k)} or {fmt(raised_k)} x ULN"
        which = modifiers[0].ref or modifiers[0].display
        if outcome is None and base is False and raised is True:
            notes.append(f"above {fmt(base_k)} x ULN but within {fmt(raised_k)} x ULN: the {mod_title} diagnosis "
                         f"is unconfirmed/provisional ({which}); the {fmt(raised_k)} x ULN limit applies only "
                         "once it is confirmed")
            spans = ""
        elif outcome is not None:
            notes.append(f"the {mod_title} diagnosis is unconfirmed/provisional ({which}): not needed to decide")
    else:
        outcome, spans = base, f"{fmt(base_k)} x ULN"
    status = decide(outcome)
    ratio = uln.ratio(value)
    above = raised_k if modifiers else base_k
    if status == "not-met":
        notes.insert(0, f"above {fmt(above)} x ULN" if ratio else f"{m.original} is above {fmt(above)} x ULN")
    elif status == "unknown" and spans and not value.is_point:  # a point value: which ULN is unknown
        notes.insert(0, f"{label(input_id)} reported as {m.original}: the range spans {spans}")
    return CriterionResult(
        cid, status, requirement,
        observed=f"{m.dated}, {uln.shown}" + (f" ({ratio})" if ratio else ""),
        evidence=[m.ref or "", *(c.ref or "" for c in modifiers)],
        note=join(*notes, m.caveat, *found.notes_for(status)),
    )
