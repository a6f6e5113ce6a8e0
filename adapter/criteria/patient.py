"""Patient-level criteria: age, performance status, HIV, pregnancy and breastfeeding."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import TYPE_CHECKING, NamedTuple

from ..mapping.dates import date_range
from ..mapping.facts import Facts
from ..mapping.observations import Selection
from ..mapping.values import Measurement
from ..tables import answers
from .common import fmt, join, label, window
from .model import CriterionResult, Status
from .params import HivControlled, MinimumAge, NotPregnant, PerformanceStatus

if TYPE_CHECKING:
    from ..trials import Criterion
    from .kinds import Context


def age(facts: Facts, criterion: Criterion, ctx: Context) -> CriterionResult:
    """Every age the birth date allows (a partial date is a range) is at least the minimum, or none is."""
    p = criterion.params
    assert isinstance(p, MinimumAge)
    cid, minimum = criterion.id, p.min_years
    requirement = p.text or f">= {minimum} years"
    if facts.age is None:
        why = "birth date not recorded or unreadable"
        if date_range(facts.birth_date) is not None:
            why = (f"birth date {facts.birth_date} is after the evaluation date {facts.as_of.isoformat()}: "
                   "not a possible birth date")
        return CriterionResult(cid, "unknown", requirement, evidence=[facts.patient_ref], note=why)
    youngest, oldest = facts.age
    shown = f"{youngest} years" if youngest == oldest else f"{youngest}-{oldest} years"
    observed = f"{shown} (born {facts.birth_date}, on {facts.as_of.isoformat()})"
    if youngest >= minimum:
        return CriterionResult(cid, "met", requirement, observed=observed, evidence=[facts.patient_ref])
    if oldest < minimum:
        return CriterionResult(cid, "not-met", requirement, observed=observed, evidence=[facts.patient_ref],
                               note=f"younger than {minimum} on the evaluation date")
    return CriterionResult(cid, "unknown", requirement, observed=observed, evidence=[facts.patient_ref],
                           note=f"partial birth date {facts.birth_date}: the patient may or may not "
                                f"have turned {minimum}")


class _Assessment(NamedTuple):
    """The newest assessment on one scale: what it says against the threshold, and how to show it."""

    day: date
    passes: bool | None  # None: unreadable, or two different results at one time
    shown: str
    refs: list[str]


def _ecog(m: Measurement, ecog_max: float) -> _Assessment:
    """ECOG from an integer/quantity, or from a coded answer (LOINC LL529-9), shown with its score."""
    if m.value is not None and not m.unit_error:
        return _Assessment(m.when, m.value.le(ecog_max), f"ECOG {m.dated}", [m.ref or ""])
    table = answers().ecog
    coded = next(((code, table[(system, code)]) for system, code in sorted(m.concepts)
                  if (system, code) in table), None)
    if coded is None:
        why = f": {m.unit_error}" if m.unit_error else ""
        return _Assessment(m.when, None, f"ECOG {m.dated}{why}", [m.ref or ""])
    code, score = coded
    text = "" if m.original in ("coded value", code) else f" {m.original}"
    return _Assessment(m.when, score <= ecog_max, f"ECOG {score} ({code}{text}, {m.when_text})", [m.ref or ""])


def _karnofsky(m: Measurement, kps_min: float) -> _Assessment:
    passes = m.value.ge(kps_min) if m.value is not None and not m.unit_error else None
    why = f": {m.unit_error}" if m.unit_error else ""
    return _Assessment(m.when, passes, f"Karnofsky {m.dated}{why}", [m.ref or ""])


def _newest(sel: Selection, scale: str, read: Callable[[Measurement], _Assessment]) -> _Assessment | None:
    if sel.chosen is not None:
        return read(sel.chosen)
    if sel.conflict:  # different results at the same time on one scale: the newest says nothing clear
        return _Assessment(max(m.when for m in sel.conflict), None,
                           f"{scale} " + " and ".join(m.dated for m in sel.conflict) + " at the same time",
                           [m.ref or "" for m in sel.conflict])
    return None


def performance_status(facts: Facts, criterion: Criterion, ctx: Context) -> CriterionResult:
    """The most recent assessment on either scale decides (an older ECOG 1 does not rescue yesterday's
    Karnofsky 50); ECOG and Karnofsky of the same day must agree, else a person decides."""
    p = criterion.params
    assert isinstance(p, PerformanceStatus)
    cid, ecog_max, kps_min = criterion.id, p.ecog_max, p.karnofsky_min
    requirement = p.text or f"ECOG <= {fmt(ecog_max)} or Karnofsky >= {fmt(kps_min)}"
    days = window(p, ctx)
    missing = facts.missing_inputs(p.ecog_input, p.karnofsky_input)
    ecog = facts.observations.latest(p.ecog_input, days)
    kps = facts.observations.latest(p.karnofsky_input, days)
    found = [a for a in (_newest(ecog, "ECOG", lambda m: _ecog(m, ecog_max)),
                         _newest(kps, "Karnofsky", lambda m: _karnofsky(m, kps_min))) if a is not None]
    unreadable = (*ecog.unreadable, *kps.unreadable)
    if not found:
        stale = max((s for s in (ecog.stale, kps.stale) if s is not None), key=lambda s: s.when, default=None)
        return CriterionResult(
            cid, "unknown", requirement,
            observed=stale.dated if stale else None, evidence=[stale.ref or ""] if stale else [],
            note=join(f"data could not be obtained ({missing})" if missing else None,
                      ecog.absence("ECOG or Karnofsky score", days)))
    newest_day = max(a.day for a in found)
    deciding = [a for a in found if a.day == newest_day]
    older = [f"an older {a.shown} was not used: the most recent assessment decides"
             for a in found if a.day < newest_day]
    outcomes = {a.passes for a in deciding}
    observed = "; ".join(a.shown for a in deciding)
    evidence = [r for a in deciding for r in a.refs]
    status: Status
    if None in outcomes:
        status, why = "unknown", f"{'; '.join(a.shown for a in deciding if a.passes is None)}: cannot be read " \
                                 "as a performance status score"
    elif len(outcomes) > 1:
        status, why = "unknown", ("ECOG and Karnofsky of the same day disagree: the clinician decides which "
                                  "reflects the patient")
    elif outcomes == {True}:
        status, why = "met", None
    else:
        status, why = "not-met", f"worse than ECOG {fmt(ecog_max)} / Karnofsky {fmt(kps_min)}"
    return CriterionResult(cid, status, requirement, observed=observed, evidence=evidence,
                           note=join(why, *older, *unreadable))


def _viral_load_undetectable(m: Measurement, below: float, assay_limit_max: float) -> bool | None:
    table = answers()
    if m.concepts & table.presence_negative:
        return True
    if m.concepts & table.presence_positive:
        return False
    if m.value is None or m.unit_error:
        return None
    if m.original.lstrip().startswith("<"):  # '<' or '<=' comparator: below the assay's limit
        return True if m.value.hi <= assay_limit_max else None
    if m.value.lo == 0 and m.value.hi == 0:
        return True
    return m.value.lt(below)


def hiv(facts: Facts, criterion: Criterion, ctx: Context) -> CriterionResult:
    """HIV recorded: an undetectable viral load in the window (taken as effective ART) is needed."""
    p = criterion.params
    assert isinstance(p, HivControlled)
    cid, requirement, days = criterion.id, p.text, window(p, ctx)
    infected = facts.having(p.condition)
    sel = facts.observations.latest(p.input, days)
    vl = sel.chosen
    result = _viral_load_undetectable(vl, p.undetectable_below, p.assay_limit_max) if vl else None
    if not infected:
        if vl is not None and result is False:
            return CriterionResult(cid, "not-met", requirement, observed=vl.dated, evidence=[vl.ref or ""],
                                   note="HIV-1 RNA detected, with no HIV diagnosis on the problem list")
        missing = facts.missing_conditions()
        if missing:
            return CriterionResult(cid, "unknown", requirement, note=f"conditions could not be obtained "
                                                                       f"({missing})")
        return CriterionResult(cid, "not-applicable", requirement, note="no HIV infection recorded")
    refs = [c.ref or "" for c in infected]
    if vl is None:
        missing = facts.missing_inputs(p.input)
        return CriterionResult(cid, "unknown", requirement, evidence=refs,
                               observed=sel.stale.dated if sel.stale else None,
                               note=f"data could not be obtained ({missing})" if missing
                               else sel.absence("HIV-1 viral load", days))
    if result is True:
        return CriterionResult(cid, "met", requirement, observed=vl.dated, evidence=[*refs, vl.ref or ""],
                               note=join("undetectable viral load; confirm the patient is on effective ART",
                                         *sel.unreadable))
    if result is False:
        return CriterionResult(cid, "not-met", requirement, observed=vl.dated, evidence=[*refs, vl.ref or ""],
                               note="detectable HIV-1 viral load")
    return CriterionResult(cid, "unknown", requirement, observed=vl.dated, evidence=[*refs, vl.ref or ""],
                           note=join(f"viral load {vl.original} cannot be read as detectable or not",
                                     vl.unit_error))


def _recent(m: Measurement, facts: Facts, p: NotPregnant) -> bool:
    """Whether a stale positive is newer than `positive_relevant_days`: the pregnancy may be ongoing."""
    return m.when >= facts.as_of - timedelta(days=p.positive_relevant_days)


def _pregnancy_evidence(facts: Facts, p: NotPregnant, window: int
                        ) -> tuple[list[Measurement], list[Measurement], list[Measurement], list[str]]:
    """Positive, negative and undecided observations inside the window, plus why the undecided are."""
    table = answers()
    positive: list[Measurement] = []
    negative: list[Measurement] = []
    undecided: list[Measurement] = []
    notes: list[str] = []
    checks = (("pregnancy-status", table.pregnancy_positive, table.pregnancy_negative),
              ("hcg-presence", table.presence_positive, table.presence_negative),
              ("breastfeeding", table.breastfeeding_positive, table.breastfeeding_negative))
    for input_id, pos, neg in checks:
        sel = facts.observations.latest(input_id, window)
        m = sel.chosen
        if sel.conflict:
            notes.append(sel.absence(label(input_id), window))
            undecided += sel.conflict
        notes += sel.unreadable  # a newer test that cannot be read might be positive: never passed over
        if m is None:
            if sel.stale is not None and sel.stale.concepts & pos and _recent(sel.stale, facts, p):  # may be still
                undecided.append(sel.stale)
                notes.append(sel.absence(label(input_id), window))
            continue
        if m.concepts & pos:
            positive.append(m)
        elif m.concepts & neg:
            negative.append(m)
    sel = facts.observations.latest("hcg-quantitative", window)
    hcg = sel.chosen
    if sel.conflict:
        notes.append(sel.absence(label("hcg-quantitative"), window))
        undecided += sel.conflict
    notes += sel.unreadable
    stale = sel.stale
    if (hcg is None and stale is not None and stale.value is not None and stale.value.ge(p.hcg_positive_min)
            and _recent(stale, facts, p)):
        undecided.append(stale)
        notes.append(sel.absence(label("hcg-quantitative"), window))
    if hcg is None:
        return positive, negative, undecided, notes
    if hcg.value is None or hcg.unit_error:  # an unreadable hCG might be positive: never dropped
        undecided.append(hcg)
        notes.append(f"cannot use the quantitative hCG {hcg.dated}: "
                     f"{hcg.unit_error or 'the value is not a quantity'}")
    elif hcg.value.ge(p.hcg_positive_min):
        positive.append(hcg)
    elif hcg.value.lt(p.hcg_negative_below):
        negative.append(hcg)
    else:
        undecided.append(hcg)
        notes.append(f"quantitative hCG {hcg.dated} is indeterminate")
    return positive, negative, undecided, notes


def pregnancy_breastfeeding(facts: Facts, criterion: Criterion, ctx: Context) -> CriterionResult:
    """Evidence of pregnancy or breastfeeding fails; none recorded is met, to confirm per protocol."""
    p = criterion.params
    assert isinstance(p, NotPregnant)
    cid, requirement = criterion.id, p.text
    pregnant = facts.having(p.condition)
    positive, negative, undecided, notes = _pregnancy_evidence(facts, p, window(p, ctx))
    if pregnant or positive:
        shown = [f"{c.display} (active condition)" for c in pregnant] + [f"{m.original} ({m.when_text})"
                                                                        for m in positive]
        return CriterionResult(cid, "not-met", requirement, observed="; ".join(shown),
                               evidence=[c.ref or "" for c in pregnant] + [m.ref or "" for m in positive],
                               note="pregnancy or breastfeeding documented")
    missing = facts.missing_conditions() or facts.missing_inputs(
        "pregnancy-status", "hcg-presence", "hcg-quantitative", "breastfeeding")
    status: Status
    if missing or notes:
        status = "unknown"
    elif facts.gender == "male" and not negative:
        return CriterionResult(cid, "not-applicable", requirement,
                               evidence=[facts.patient_ref], note="male patient")
    else:
        status = "met"
    observed = "; ".join(f"{m.original} ({m.when_text})" for m in [*negative, *undecided]) or None
    return CriterionResult(
        cid, status, requirement, observed=observed,
        evidence=[m.ref or "" for m in [*negative, *undecided]],
        note=join(f"data could not be obtained ({missing})" if missing else None, *notes,
                  None if negative or undecided else "no pregnancy or breastfeeding documented; confirm per protocol "
                                        "(pregnancy test for people who can become pregnant)"))
