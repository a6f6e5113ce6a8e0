"""Prior-therapy criteria that read the medication history: "no prior checkpoint inhibitor" (ICI-naive).

The ICI-refractory rule (progression after a prior ICI) is `disease.prior_ici_progression`; a protocol
that asks for the opposite is a different criterion with its own id (`no-prior-ici`), so reports of the
two versions are never confused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mapping.facts import Facts
from .common import join
from .model import CriterionResult
from .params import NoPriorTherapy

if TYPE_CHECKING:
    from ..trials import Criterion
    from .kinds import Context


def no_prior_therapy(facts: Facts, criterion: Criterion, ctx: Context) -> CriterionResult:
    """Any recorded exposure (by RxNorm code or by name) fails; an empty history is what the trial says."""
    params = criterion.params
    assert isinstance(params, NoPriorTherapy)
    requirement = params.text
    if ctx.cohort not in params.cohorts():
        return CriterionResult(criterion.id, "not-applicable", requirement,
                               note=f"applies to the {', '.join(params.cohorts())} cohort only")
    exposures = facts.exposures
    if exposures:
        dated = sorted((e for e in exposures if e.start_text), key=lambda e: e.start_text or "")
        first = dated[0] if dated else exposures[0]
        shown = f"{first.drug} from {first.start_text}" if first.start_text else f"{first.drug} (undated)"
        by_name = f"{first.drug} matched by name, not RxNorm code" if first.by_name else None
        return CriterionResult(criterion.id, "not-met", requirement, observed=shown,
                               evidence=[e.ref or "" for e in exposures],
                               note=join("a prior immune checkpoint inhibitor is recorded", by_name))
    missing = facts.missing_medications()
    if missing:
        return CriterionResult(criterion.id, "unknown", requirement,
                               note=f"medication history could not be obtained ({missing})")
    outside = "no checkpoint inhibitor in the medication history; confirm with outside records"
    return CriterionResult(criterion.id, params.when_none_recorded, requirement, note=outside)
