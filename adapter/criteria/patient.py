"""Patient-level criteria: age, performance status, HIV, pregnancy and breastfeeding."""

from __future__ import annotations

from ..mapping.facts import Facts
from ..mapping.values import Measurement
from ..tables import Trial, answers
from .common import fmt, join
from .model import CriterionResult, Status


def age(facts: Facts, trial: Trial) -> CriterionResult:
    minimum = int(trial.rule("age")["min_years"])
    requirement = f">= {minimum} years"
    if facts.age is None:
        return CriterionResult("age", "unknown", requirement, evidence=[facts.patient_ref],
                               note="birth date not recorded or unreadable")
    youngest, oldest = facts.age
    shown = f"{youngest} years" if youngest == oldest else f"{youngest}-{oldest} years"
    observed = f"{shown} (born {facts.birth_date}, on {facts.as_of.isoformat()})"
    if youngest >= minimum:
        return CriterionResult("age", "met", requirement, observed=observed, evidence=[facts.patient_ref])
    if oldest < minimum:
        return CriterionResult("age", "not-met", requirement, observed=observed, evidence=[facts.patient_ref],
                               note=f"younger than {minimum} on the evaluation date")
    return CriterionResult("age", "unknown", requirement, observed=observed, evidence=[facts.patient_ref],
                           note=f"partial birth date {facts.birth_date}: the patient may or may not "
                                f"have turned {minimum}")


def _ecog_score(m: Measurement) -> float | None:
    if m.value is not None and m.value.is_point:
        return m.value.lo
    table = answers().ecog
    return next((float(table[c]) for c in m.concepts if c in table), None)


def performance_status(facts: Facts, trial: Trial) -> CriterionResult:
    rule = trial.rule("performance-status")
    ecog_max, kps_min = float(rule["ecog_max"]), float(rule["karnofsky_min"])
    requirement = f"ECOG <= {fmt(ecog_max)} or Karnofsky >= {fmt(kps_min)}"
    window = trial.window("performance-status")
    missing = facts.missing_inputs("ecog", "karnofsky")
    ecog = facts.observations.latest("ecog", window)
    kps = facts.observations.latest("karnofsky", window)
    results: list[tuple[str, bool | None, Measurement]] = []
    if ecog.chosen is not None:
        score = _ecog_score(ecog.chosen)
        results.append(("ECOG", None if score is None else score <= ecog_max, ecog.chosen))
    if kps.chosen is not None:
        k = kps.chosen.value
        results.append(("Karnofsky", None if k is None else k.ge(kps_min), kps.chosen))
    observed = "; ".join(f"{name} {m.dated}" for name, _, m in results) or None
    evidence = [m.ref or "" for _, _, m in results]
    if any(ok for _, ok, _ in results):
        disagree = "ECOG and Karnofsky disagree; either meeting its threshold is enough by the protocol" \
            if any(ok is False for _, ok, _ in results) else None
        return CriterionResult("performance-status", "met", requirement, observed=observed, evidence=evidence,
                               note=join(disagree, *ecog.unreadable, *kps.unreadable))
    if results and all(ok is False for _, ok, _ in results):
        return CriterionResult("performance-status", "not-met", requirement, observed=observed,
                               evidence=evidence, note=f"performance status worse than ECOG {fmt(ecog_max)} "
                                                       f"/ Karnofsky {fmt(kps_min)}")
    if results:
        return CriterionResult("performance-status", "unknown", requirement, observed=observed,
                               evidence=evidence, note="performance status value could not be read")
    stale = ecog.stale or kps.stale
    return CriterionResult(
        "performance-status", "unknown", requirement,
        observed=stale.dated if stale else None, evidence=[stale.ref or ""] if stale else [],
        note=join(f"data could not be obtained ({missing})" if missing else None,
                  ecog.absence("ECOG or Karnofsky score", window)))


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


def hiv(facts: Facts, trial: Trial) -> CriterionResult:
    rule = trial.rule("hiv")
    requirement = rule["text"]
    window = trial.window("hiv")
    below = float(rule["undetectable_below"])
    infected = facts.having("hiv")
    sel = facts.observations.latest("hiv-viral-load", window)
    vl = sel.chosen
    result = _viral_load_undetectable(vl, below, float(rule["assay_limit_max"])) if vl else None
    if not infected:
        if vl is not None and result is False:
            return CriterionResult("hiv", "not-met", requirement, observed=vl.dated, evidence=[vl.ref or ""],
                                   note="HIV-1 RNA detected, with no HIV diagnosis on the problem list")
        missing = facts.missing_conditions()
        if missing:
            return CriterionResult("hiv", "unknown", requirement, note=f"conditions could not be obtained "
                                                                       f"({missing})")
        return CriterionResult("hiv", "not-applicable", requirement, note="no HIV infection recorded")
    refs = [c.ref or "" for c in infected]
    if vl is None:
        missing = facts.missing_inputs("hiv-viral-load")
        return CriterionResult("hiv", "unknown", requirement, evidence=refs,
                               observed=sel.stale.dated if sel.stale else None,
                               note=f"data could not be obtained ({missing})" if missing
                               else sel.absence("HIV-1 viral load", window))
    if result is True:
        return CriterionResult("hiv", "met", requirement, observed=vl.dated, evidence=[*refs, vl.ref or ""],
                               note=join("undetectable viral load; confirm the patient is on effective ART",
                                         *sel.unreadable))
    if result is False:
        return CriterionResult("hiv", "not-met", requirement, observed=vl.dated, evidence=[*refs, vl.ref or ""],
                               note="detectable HIV-1 viral load")
    return CriterionResult("hiv", "unknown", requirement, observed=vl.dated, evidence=[*refs, vl.ref or ""],
                           note=join(f"viral load {vl.original} cannot be read as detectable or not",
                                     vl.unit_error))


def _pregnancy_evidence(facts: Facts, trial: Trial) -> tuple[list[Measurement], list[Measurement], list[str]]:
    """Positive and negative observations inside the window, plus undecided notes."""
    rule = trial.rule("pregnancy-breastfeeding")
    window = trial.window("pregnancy-breastfeeding")
    table = answers()
    positive: list[Measurement] = []
    negative: list[Measurement] = []
    notes: list[str] = []
    checks = (("pregnancy-status", table.pregnancy_positive, table.pregnancy_negative),
              ("hcg-presence", table.presence_positive, table.presence_negative),
              ("breastfeeding", table.breastfeeding_positive, table.breastfeeding_negative))
    for input_id, pos, neg in checks:
        m = facts.observations.latest(input_id, window).chosen
        if m is None:
            continue
        if m.concepts & pos:
            positive.append(m)
        elif m.concepts & neg:
            negative.append(m)
    hcg = facts.observations.latest("hcg-quantitative", window).chosen
    if hcg is not None and hcg.value is not None and not hcg.unit_error:
        if hcg.value.ge(float(rule["hcg_positive_min"])):
            positive.append(hcg)
        elif hcg.value.lt(float(rule["hcg_negative_below"])):
            negative.append(hcg)
        else:
            notes.append(f"quantitative hCG {hcg.dated} is indeterminate")
    return positive, negative, notes


def pregnancy_breastfeeding(facts: Facts, trial: Trial) -> CriterionResult:
    requirement = trial.rule("pregnancy-breastfeeding")["text"]
    pregnant = facts.having("pregnancy")
    positive, negative, notes = _pregnancy_evidence(facts, trial)
    if pregnant or positive:
        shown = [f"{c.display} (active condition)" for c in pregnant] + [f"{m.original} ({m.when_text})"
                                                                        for m in positive]
        return CriterionResult("pregnancy-breastfeeding", "not-met", requirement, observed="; ".join(shown),
                               evidence=[c.ref or "" for c in pregnant] + [m.ref or "" for m in positive],
                               note="pregnancy or breastfeeding documented")
    missing = facts.missing_conditions() or facts.missing_inputs(
        "pregnancy-status", "hcg-presence", "hcg-quantitative", "breastfeeding")
    status: Status
    if missing or notes:
        status = "unknown"
    elif facts.gender == "male" and not negative:
        return CriterionResult("pregnancy-breastfeeding", "not-applicable", requirement,
                               evidence=[facts.patient_ref], note="male patient")
    else:
        status = "met"
    observed = "; ".join(f"{m.original} ({m.when_text})" for m in negative) or None
    return CriterionResult(
        "pregnancy-breastfeeding", status, requirement, observed=observed,
        evidence=[m.ref or "" for m in negative],
        note=join(f"data could not be obtained ({missing})" if missing else None, *notes,
                  None if negative else "no pregnancy or breastfeeding documented; confirm per protocol "
                                        "(pregnancy test for people who can become pregnant)"))
