"""Laboratory criteria: fixed thresholds (ANC, platelets, hemoglobin, albumin, sodium) and multiples
of the upper limit of normal (total bilirubin, AST, ALT) with their condition modifiers."""

from __future__ import annotations

from ..mapping.facts import Facts
from ..tables import Trial, conditions, observations
from .common import fmt, join, label, upper_limit, usable_value
from .model import CriterionResult, decide


def _converted(value: float, unit: str, original: str) -> str | None:
    """'= 8.77 mg/dL' when the original was in another unit."""
    return None if original.rsplit(maxsplit=1)[-1] == unit else f"= {fmt(value)} {unit}"


def threshold(cid: str, facts: Facts, trial: Trial) -> CriterionResult:
    """value >= rule.min, in the rule's unit."""
    rule = trial.rule(cid)
    minimum, unit = float(rule["min"]), str(rule["unit"])
    shown_unit = str(rule.get("display_unit", unit))
    requirement = f">= {fmt(minimum)} {shown_unit}"
    found = usable_value(cid, requirement, facts, cid, trial.window(cid))
    if isinstance(found, CriterionResult):
        return found
    m, value = found.m, found.value
    if observations().inputs[cid].unit != unit:
        raise ValueError(f"trial {trial.id}: {cid} unit {unit} differs from mappings/observations.yaml")
    status = decide(value.ge(minimum))
    shown = value.hi if value.is_point else None
    conversion = _converted(shown, shown_unit, m.original) if shown is not None else None
    note = None
    if status == "not-met":  # the value and its conversion are in `observed`, next to the note everywhere
        note = f"below {fmt(minimum)} {shown_unit}"
    elif status == "unknown":
        note = f"{label(cid)} reported as {m.original}: the range spans {fmt(minimum)} {shown_unit}"
    observed = f"{m.dated} {conversion}" if conversion else m.dated
    return CriterionResult(cid, status, requirement, observed=observed, evidence=[m.ref or ""],
                           note=join(" ".join(note.split()) if note else None, m.caveat,
                                     *found.notes_for(status)))


def _uln_requirement(rule: dict[str, object], modifier_title: str) -> str:
    text = f"<= {fmt(float(rule['max_uln']))} x ULN"  # type: ignore[arg-type]
    mod = rule.get("modifier")
    if isinstance(mod, dict):
        text += f" (<= {fmt(float(mod['max_uln']))} x ULN with {modifier_title})"
    return text


def uln_multiple(cid: str, facts: Facts, trial: Trial) -> CriterionResult:
    """value <= k x ULN; k rises when the patient has the modifying condition (Gilbert, liver mets)."""
    rule = trial.rule(cid)
    mod = rule.get("modifier") or {}
    mod_set = str(mod.get("condition", ""))
    mod_title = conditions().sets[mod_set].title if mod_set else ""
    requirement = _uln_requirement(rule, mod_title)
    found = usable_value(cid, requirement, facts, cid, trial.window(cid))
    if isinstance(found, CriterionResult):
        return found
    m, value = found.m, found.value
    modifiers = facts.having(mod_set) if mod_set else []
    k = float(mod["max_uln"]) if modifiers else float(rule["max_uln"])
    limit = upper_limit(m, rule, cid, trial.id)
    if isinstance(limit, str):
        return CriterionResult(cid, "unknown", requirement, observed=m.dated, evidence=[m.ref or ""], note=limit)
    uln, uln_text, assumed = limit
    notes = [assumed] if assumed else []
    if modifiers:
        notes.append(f"{mod_title} documented ({modifiers[0].ref or modifiers[0].display}): "
                     f"limit {fmt(k)} x ULN")
    status = decide(value.le(k * uln))
    ratio = f"{fmt(value.hi / uln)} x ULN" if value.is_point else None
    if status == "not-met":
        notes.insert(0, f"above {fmt(k)} x ULN" if ratio else f"{m.original} is above {fmt(k)} x ULN")
    elif status == "unknown":
        notes.insert(0, f"{label(cid)} reported as {m.original}: the range spans {fmt(k)} x ULN")
    return CriterionResult(
        cid, status, requirement,
        observed=f"{m.dated}, {uln_text}" + (f" ({ratio})" if ratio else ""),
        evidence=[m.ref or "", *(c.ref or "" for c in modifiers)],
        note=join(*notes, m.caveat, *found.notes_for(status)),
    )
