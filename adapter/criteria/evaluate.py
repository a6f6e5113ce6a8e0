"""Facts + trial definition → EligibilityReport: every criterion, the cohort and the verdict.

Verdict (DESIGN.md): the diagnosis not-met → not-applicable (no card); deceased → not-eligible (no card);
a closed cohort → not-eligible; any not-met → not-eligible; every criterion met or not-applicable →
likely-eligible; else needs-review.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mapping.facts import Facts
from .kinds import COHORT_KINDS, KINDS, Context
from .model import CriterionResult, EligibilityReport, Overall

if TYPE_CHECKING:
    from ..trials import Trial


def verdict(criteria: list[CriterionResult], cohort: str | None, trial: Trial,
            deceased: str | None = None) -> tuple[Overall, list[str]]:
    """The overall verdict and its reasons. A deceased patient (DESIGN.md "Real charts") is not-eligible
    with the death as the first reason; no diagnosis the trial enrols still comes first (the trial does
    not apply at all)."""
    kinds = {c.id: c.kind for c in trial.specs}
    if any(kinds[c.id] in COHORT_KINDS and c.status == "not-met" for c in criteria):
        return "not-applicable", ["no diagnosis the trial enrols"]
    reasons: list[str] = [deceased] if deceased else []
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
    """Every criterion of the trial, through its kind's rule; the diagnosis first, for the cohort."""
    results: dict[str, CriterionResult] = {}
    cohort: str | None = None
    for spec in (s for s in trial.specs if s.kind in COHORT_KINDS):
        results[spec.id] = result = KINDS[spec.kind].rule(facts, spec, Context(trial, None))
        cohort = cohort or result.cohort
    ctx = Context(trial, cohort)
    for spec in trial.specs:
        if spec.id not in results:
            results[spec.id] = KINDS[spec.kind].rule(facts, spec, ctx)
    criteria = [results[spec.id] for spec in trial.specs]
    overall, reasons = verdict(criteria, cohort, trial, facts.deceased)
    return EligibilityReport(trial=trial, patient=facts.patient_ref, as_of=facts.as_of, cohort=cohort,
                             overall=overall, criteria=criteria, reasons=reasons,
                             data_notes=facts.record_notes, deceased=facts.deceased)
