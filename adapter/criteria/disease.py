"""Disease criteria: diagnosis and cohort, advanced disease, measurable disease, prior ICI + progression."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mapping.conditions import ConditionFact
from ..mapping.facts import Facts
from ..mapping.values import Measurement
from ..tables import answers, conditions
from .common import fmt, join, window
from .model import CriterionResult
from .params import AdvancedDisease, Diagnosis, MeasurableDisease, PriorTherapy

if TYPE_CHECKING:
    from ..trials import Criterion
    from .kinds import Context


def _cite(fact: ConditionFact) -> str:
    system = fact.coding[0].rsplit("/", 1)[-1]
    flag = "" if fact.verified_code else ", code not verified against a terminology server"
    return f"{fact.display} ({system} {fact.coding[1]}{flag})"


def diagnosis(facts: Facts, criterion: Criterion, ctx: Context) -> CriterionResult:
    """The first of the trial's diagnosis rules whose condition set the patient has decides the cohort
    (AXIOM: ASPS → asps; other soft tissue sarcoma → safety run-in; bone sarcoma → a person decides).
    The result carries the cohort, which the other criteria may depend on."""
    p = criterion.params
    assert isinstance(p, Diagnosis)
    cid, requirement = criterion.id, p.text
    missing = facts.missing_conditions()
    if missing:
        return CriterionResult(cid, "unknown", requirement, note=f"conditions could not be obtained ({missing})")
    for rule in p.rules:
        set_id, cohort = rule.condition, rule.cohort
        found = facts.having(set_id)
        if not found:
            continue
        confirmed = [f for f in found if f.confirmed] or found
        best = confirmed[0]
        refs = [f.ref or "" for f in found]
        notes = [f.note for f in found if f.note]
        if rule.review:
            return CriterionResult(cid, "unknown", requirement, observed=_cite(best), evidence=refs,
                                   note=join(rule.review, *notes), cohort=cohort)
        if not best.confirmed:
            return CriterionResult(
                cid, "unknown", requirement, observed=_cite(best), evidence=refs, cohort=cohort,
                note=join(f"{conditions().sets[set_id].title} is recorded as unconfirmed/provisional; "
                          "the protocol asks for histological or cytological confirmation", *notes))
        return CriterionResult(cid, "met", requirement, observed=_cite(best), evidence=refs,
                               note=join(*notes), cohort=cohort)
    if facts.unreadable_conditions:  # one of them may be the diagnosis: not "none of them is"
        shown = ", ".join(facts.unreadable_conditions[:3]) + (" …" if len(facts.unreadable_conditions) > 3 else "")
        return CriterionResult(cid, "unknown", requirement, evidence=list(facts.unreadable_conditions[:3]),
                               note=f"no diagnosis the trial enrols is readable among the patient's conditions, "
                                    f"and the code of {shown} cannot be read (coding is not a list of codings): "
                                    "it may be one; check the chart")
    return CriterionResult(cid, "not-met", requirement,
                           note="none of the diagnoses the trial enrols is among the patient's conditions")


def _metastatic_observation(m: Measurement) -> bool:
    """A TNM M category or stage group (an input the criterion lists) whose value means metastatic disease:
    an AJCC code (M1… by prefix, stage IV exactly) or mCODE 4.0's SNOMED CT qualifier value for them."""
    table = answers()
    coded = table.m1_codings | table.stage_iv_codings
    return any((system, code) in coded or code.startswith(table.m1_prefixes) or code.upper() in table.stage_iv_codes
               for system, code in m.concepts)


def advanced_disease(facts: Facts, criterion: Criterion, ctx: Context) -> CriterionResult:
    """Metastatic (a confirmed metastasis, M1 / stage IV, or mCODE's history of metastatic cancer), else a
    person confirms the disease is unresectable. An unconfirmed metastasis alone decides nothing."""
    p = criterion.params
    assert isinstance(p, AdvancedDisease)
    cid, requirement = criterion.id, p.text
    mets = facts.having(p.condition)
    confirmed = [m for m in mets if m.confirmed]
    if confirmed:
        return CriterionResult(cid, "met", requirement, observed=_cite(confirmed[0]),
                               evidence=[m.ref or "" for m in confirmed])
    staged = [m for i in p.observations
              for m in facts.observations.all_in_window(i, None) if _metastatic_observation(m)]
    if staged:
        return CriterionResult(cid, "met", requirement, observed=staged[0].dated,
                               evidence=[m.ref or "" for m in staged])
    history = facts.metastatic_history  # newest first
    notes: list[str] = []
    said = [h for h in history if h.present is True]
    if said:
        newer_no = [h for h in history if h.present is False and (h.when_text or "") > (said[0].when_text or "")]
        if not newer_no:
            return CriterionResult(
                cid, "met", requirement, observed=said[0].shown, evidence=[h.ref or "" for h in said],
                note="a history of metastatic cancer is recorded (mCODE); confirm the disease is still "
                     "metastatic or unresectable")
        notes.append(f"the chart disagrees: {said[0].shown} but later {newer_no[-1].shown}")
    unconfirmed = [m for m in mets if not m.confirmed]
    if unconfirmed:
        notes.append(f"a metastasis is recorded as unconfirmed/provisional ({_cite(unconfirmed[0])}): "
                     "metastatic disease counts once it is confirmed")
    notes += [f"{h.shown}: the history Observation's value cannot be read" for h in history if h.present is None]
    if not said and any(h.present is False for h in history):
        notes.append(f"{next(h for h in history if h.present is False).shown}: no metastatic disease "
                     "recorded; locally advanced unresectable disease still qualifies")
    missing = facts.missing_conditions() or facts.missing_inputs(*p.observations, p.history_input)
    shown = [_cite(m) for m in unconfirmed[:1]] + [h.shown for h in history[:1]]
    return CriterionResult(
        cid, "unknown", requirement, observed="; ".join(shown) or None,
        evidence=[m.ref or "" for m in unconfirmed] + [h.ref or "" for h in history],
        note=join(f"data could not be obtained ({missing})" if missing else None, *notes,
                  "no confirmed metastasis or stage IV / M1 recorded; confirm the disease is unresectable "
                  "(not curable by surgery)"))


# answers.yaml tumor-method category of sizes that are not of a lesion in the patient (a specimen, a slide)
NOT_A_LESION = "not-a-lesion"
# the category of a size whose method is missing, unrecognised or an unspecified modality
UNSPECIFIED = "unspecified"


def _method_category(m: Measurement) -> str:
    """The protocol's category of the size's Observation.method (answers.yaml tumor-method)."""
    methods = answers().tumor_method
    return next((methods[c] for c in sorted(m.methods) if c in methods), UNSPECIFIED)


def measurable_disease(facts: Facts, criterion: Criterion, ctx: Context) -> CriterionResult:
    """At least one lesion >= 10 mm by CT/MRI/calipers or >= 20 mm by chest x-ray; no method: >= 20 mm.

    A lesion below its method's limit that is >= the smallest limit (10-19 mm on a chest x-ray, or
    without a method) is unknown: CT or MRI may make it measurable. A method the protocol does not name
    (ultrasound, PET) never qualifies a lesion alone. A specimen or microscopy size is not a lesion in
    the patient: ignored, with a note. A size that cannot be read or converted is unknown unless
    another lesion qualifies.
    """
    p = criterion.params
    assert isinstance(p, MeasurableDisease)
    cid, requirement = criterion.id, p.text
    thresholds = dict(p.min_mm)
    smallest = min(thresholds.values())
    days = window(p, ctx)
    missing = facts.missing_inputs(p.input)
    if missing:
        return CriterionResult(cid, "unknown", requirement,
                               note=f"data could not be obtained ({missing})")
    sizes: list[Measurement] = []
    undecided: list[str] = []
    ignored: list[Measurement] = []
    for m in facts.observations.all_in_window(p.input, days):
        category = _method_category(m)
        if category == NOT_A_LESION:
            ignored.append(m)
            continue
        sizes.append(m)
        if m.value is None or m.unit_error:
            undecided.append(f"cannot use the tumor size {m.dated}: {m.unit_error or 'the value is not a quantity'}")
            continue
        limit = thresholds.get(category)
        how = f"method category {category}"
        if limit is None:  # a lesion, by a method the protocol does not measure with
            if m.value.ge(smallest) is not False:
                undecided.append(f"{m.dated} ({how}): not a method the protocol measures by; needs CT/MRI")
            continue
        verdict = m.value.ge(limit)
        if verdict:
            shown = category if category != UNSPECIFIED else ("no method recorded" if not m.methods
                                                              else "method not recognised")
            return CriterionResult(cid, "met", requirement, observed=m.dated,
                                   evidence=[m.ref or ""], note=f"{shown}: >= {fmt(limit)} mm")
        if verdict is None:
            undecided.append(f"{m.original} ({m.when_text}) spans the {fmt(limit)} mm threshold")
        elif m.value.ge(smallest) is not False:
            if category == UNSPECIFIED:
                undecided.append(f"{m.original} ({m.when_text}) has no recognised measurement method: "
                                 f"measurable at {fmt(smallest)} mm only if by CT, MRI or calipers")
            else:
                undecided.append(f"{m.original} ({m.when_text}, {how}) is under {fmt(limit)} mm; "
                                 f">= {fmt(smallest)} mm counts by CT, MRI or calipers: needs CT/MRI")
    not_lesion = [f"ignored {m.dated}: measured on a specimen or slide, not a lesion in the patient"
                  for m in ignored]
    if not sizes:
        sel = facts.observations.latest(p.input, days)
        stale = sel.stale if sel.stale is not None and _method_category(sel.stale) != NOT_A_LESION else None
        absence = sel.absence("tumor measurement", days) if stale or not (ignored or sel.stale) \
            else f"no lesion measurement in the last {days} days"
        return CriterionResult(cid, "unknown", requirement,
                               observed=stale.dated if stale else None,
                               evidence=[stale.ref or ""] if stale else [m.ref or "" for m in ignored],
                               note=join(absence, *not_lesion))
    readable = [m for m in sizes if m.value is not None and not m.unit_error]
    largest = max(readable, key=lambda m: m.value.hi if m.value else 0) if readable else sizes[0]
    if undecided:
        return CriterionResult(cid, "unknown", requirement, observed=largest.dated,
                               evidence=[m.ref or "" for m in sizes], note=join(*undecided, *not_lesion))
    return CriterionResult(cid, "not-met", requirement, observed=largest.dated,
                           evidence=[m.ref or "" for m in sizes],
                           note=join(f"every lesion measured in the last {days} days is below the "
                                     "threshold for its method", *not_lesion))


def prior_ici_progression(facts: Facts, criterion: Criterion, ctx: Context) -> CriterionResult:
    """A prior checkpoint inhibitor, then a worsened cancer disease status dated after it started."""
    p = criterion.params
    assert isinstance(p, PriorTherapy)
    cid, requirement = criterion.id, p.text
    if ctx.cohort not in p.cohorts():
        return CriterionResult(cid, "not-applicable", requirement,
                               note=f"applies to the {', '.join(p.cohorts())} cohort only")
    missing = facts.missing_medications() or facts.missing_inputs(p.progression_input)
    exposures = facts.exposures
    if not exposures:
        return CriterionResult(
            cid, "unknown", requirement,
            note=join(f"data could not be obtained ({missing})" if missing else None,
                      "no prior immune checkpoint inhibitor found in the medication history; "
                      "check outside records"))
    dated = [e for e in exposures if e.start is not None]
    first = min(dated, key=lambda e: e.start) if dated else None  # type: ignore[arg-type,return-value]
    statuses = facts.observations.all_in_window(p.progression_input, None)
    outcome = answers().disease_status
    worsened = [m for m in statuses if any(outcome.get(c) == "worsened" for c in m.concepts)]
    drug_text = (f"{first.drug} from {first.start_text}" if first else f"{exposures[0].drug} (undated)")
    by_name = [f"{e.drug} matched by name, not RxNorm code" for e in exposures[:1] if e.by_name]
    ici_refs = [e.ref or "" for e in exposures]
    if first is None:
        return CriterionResult(
            cid, "unknown", requirement, observed=drug_text, evidence=ici_refs,
            note=join("the ICI therapy has no date, so progression after it cannot be placed", *by_name))
    assert first.start is not None
    after = [m for m in worsened if m.when > first.start]
    if after:
        progression = after[0]
        return CriterionResult(
            cid, "met", requirement, observed=f"{drug_text}; progression {progression.when_text}",
            evidence=[*ici_refs, progression.ref or ""], note=join(*by_name))
    return CriterionResult(
        cid, "unknown", requirement, observed=drug_text, evidence=ici_refs,
        note=join("no disease progression documented after the ICI started; the protocol accepts "
                  "clinical or radiological progression (physician's rationale)", *by_name))
