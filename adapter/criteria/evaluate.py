"""Facts + trial definition → EligibilityReport: every criterion, the cohort and the verdict.

Verdict (DESIGN.md): `diagnosis` not-met → not-applicable (no card); a closed cohort → not-eligible;
any not-met → not-eligible; every criterion met or not-applicable → likely-eligible; else needs-review.
"""

from __future__ import annotations

from collections.abc import Callable

from ..mapping.facts import Facts
from ..tables import Trial
from . import disease, labs, patient, renal
from .model import CRITERION_IDS, CriterionResult, EligibilityReport, Overall

Rule = Callable[[Facts, Trial], CriterionResult]

RULES: dict[str, Rule] = {
    "advanced-disease": disease.advanced_disease,
    "measurable-disease": disease.measurable_disease,
    "age": patient.age,
    "performance-status": patient.performance_status,
    "anc": lambda f, t: labs.threshold("anc", f, t),
    "platelets": lambda f, t: labs.threshold("platelets", f, t),
    "hemoglobin": lambda f, t: labs.threshold("hemoglobin", f, t),
    "total-bilirubin": lambda f, t: labs.uln_multiple("total-bilirubin", f, t),
    "ast": lambda f, t: labs.uln_multiple("ast", f, t),
    "alt": lambda f, t: labs.uln_multiple("alt", f, t),
    "renal-function": renal.evaluate,
    "albumin": lambda f, t: labs.threshold("albumin", f, t),
    "sodium": lambda f, t: labs.threshold("sodium", f, t),
    "hiv": patient.hiv,
    "pregnancy-breastfeeding": patient.pregnancy_breastfeeding,
}


def verdict(criteria: list[CriterionResult], cohort: str | None, trial: Trial) -> tuple[Overall, list[str]]:
    by_id = {c.id: c for c in criteria}
    if by_id["diagnosis"].status == "not-met":
        return "not-applicable", ["no sarcoma diagnosis"]
    reasons: list[str] = []
    if cohort is not None and not trial.cohorts[cohort].open:
        reasons.append(f"the {trial.cohorts[cohort].title} is closed (trial version {trial.version})")
    failed = [c for c in criteria if c.status == "not-met"]
    reasons += [f"{c.id}: " + ", ".join(p for p in (c.observed, c.note) if p) if c.observed or c.note
                else f"{c.id}: not met" for c in failed]
    if reasons:
        return "not-eligible", reasons
    unknown = [c.id for c in criteria if c.status == "unknown"]
    if unknown:
        return "needs-review", [f"to review: {', '.join(unknown)}"]
    return "likely-eligible", []


def evaluate(facts: Facts, trial: Trial) -> EligibilityReport:
    diagnosis, cohort = disease.diagnosis(facts, trial)
    results = {"diagnosis": diagnosis,
               "prior-ici-progression": disease.prior_ici_progression(facts, trial, cohort)}
    for cid, rule in RULES.items():
        results[cid] = rule(facts, trial)
    criteria = [results[cid] for cid in CRITERION_IDS]
    overall, reasons = verdict(criteria, cohort, trial)
    return EligibilityReport(trial=trial, patient=facts.patient_ref, as_of=facts.as_of, cohort=cohort,
                             overall=overall, criteria=criteria, reasons=reasons,
                             data_notes=facts.record_notes)
