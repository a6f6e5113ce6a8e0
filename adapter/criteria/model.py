"""The eligibility report: its shape is a contract (shared/contract/eligibility-report.schema.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..trials import Trial

Status = Literal["met", "not-met", "unknown", "not-applicable"]
Overall = Literal["likely-eligible", "needs-review", "not-eligible", "not-applicable"]

@dataclass
class CriterionResult:
    id: str
    status: Status
    requirement: str
    observed: str | None = None
    evidence: list[str] = field(default_factory=list)
    note: str | None = None
    # why a value is missing, for what the card suggests (not part of the JSON contract):
    # "absent" or "stale" (order the test) vs "unavailable" (the FHIR server failed: ordering would be wrong)
    missing: str | None = field(default=None, compare=False)
    # the cohort a diagnosis puts the patient in (diagnosis kinds only; the report carries it)
    cohort: str | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status, "requirement": self.requirement}
        if self.observed:
            out["observed"] = self.observed
        out["evidence"] = list(dict.fromkeys(e for e in self.evidence if e))
        if self.note:
            out["note"] = self.note
        return out


def decide(outcome: bool | None) -> Status:
    return "met" if outcome is True else "not-met" if outcome is False else "unknown"


@dataclass
class EligibilityReport:
    trial: Trial
    patient: str
    as_of: date
    cohort: str | None
    overall: Overall
    criteria: list[CriterionResult]
    reasons: list[str] = field(default_factory=list)
    data_notes: list[str] = field(default_factory=list)
    deceased: str | None = None  # set: no card (the reason is also the first of `reasons`)

    def criterion(self, cid: str) -> CriterionResult:
        return next(c for c in self.criteria if c.id == cid)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "trial": {"id": self.trial.id, "nct": self.trial.nct, "version": self.trial.version},
            "patient": self.patient,
            "asOf": self.as_of.isoformat(),
            "cohort": self.cohort,
            "overall": self.overall,
            "criteria": [c.to_json() for c in self.criteria],
            "attestations": [{"id": a.id, "text": a.text} for a in self.trial.attestations],
        }
        if self.reasons:
            out["reasons"] = self.reasons
        if self.data_notes:
            out["dataNotes"] = self.data_notes
        return out
