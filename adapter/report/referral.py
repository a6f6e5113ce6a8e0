"""The referral a card suggests: to whom, at which site, and whether that site is recruiting.

The study team is the hospital's, not the trial's: configured per deployment (`AXIOM_STUDY_TEAM`), never
in mappings/. Whether each cohort is open is the trial record's (the trial file's `cohorts`). Configured
text is escaped like chart text before it enters the card.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..criteria.model import EligibilityReport

SiteStatus = Literal["recruiting", "not-yet-recruiting", "suspended", "closed"]
SITE_STATUS_TEXT: dict[str, str] = {
    "recruiting": "recruiting at this site",
    "not-yet-recruiting": "not yet recruiting at this site",
    "suspended": "enrolment suspended at this site",
    "closed": "closed to enrolment at this site",
}
REFERENCE = r"^(PractitionerRole|Practitioner|Organization|CareTeam|HealthcareService)/[A-Za-z0-9\-.]{1,64}$"


class StudyTeam(BaseModel):
    """Who receives the referral (AXIOM_STUDY_TEAM, JSON, or `study_team:` in AXIOM_CONFIG)."""

    name: str = Field(min_length=1, max_length=120, description="e.g. Sarcoma Research Team")
    site: str = Field(min_length=1, max_length=120, description="e.g. Hospital Cancer Center, Building B")
    phone: str | None = Field(None, max_length=40)
    email: str | None = Field(None, max_length=120)
    performer: str | None = Field(None, pattern=REFERENCE, description="The EHR's reference for the team, "
                                  "e.g. PractitionerRole/123: the referral's performer")
    site_status: SiteStatus = Field("recruiting", description="Whether this site enrols now; referrals are "
                                    "suggested only while it is recruiting")

    @property
    def contact(self) -> str:
        return ", ".join(p for p in (self.name, self.site, self.phone, self.email) if p)


def referable(report: EligibilityReport, team: StudyTeam | None) -> bool:
    """A referral is suggested when the patient may be eligible, her cohort is open and the site enrols."""
    if report.overall == "not-eligible":
        return False
    if report.cohort is not None and not report.trial.cohorts[report.cohort].open:
        return False
    return team is None or team.site_status == "recruiting"


def recruitment_line(report: EligibilityReport, team: StudyTeam | None) -> str:
    """One plain sentence: the cohort's state in the trial record, the site's, and whom to contact."""
    trial = report.trial
    parts = []
    if report.cohort is not None:
        cohort = trial.cohorts[report.cohort]
        state = "open" if cohort.open else "closed"
        parts.append(f"{cohort.title.split(' (')[0]} {state} in the trial record ({trial.version})")
    if team is None:
        parts.append("study team: not configured here — see the contacts on ClinicalTrials.gov")
    else:
        parts.append(f"{SITE_STATUS_TEXT[team.site_status]}; study team: {team.contact}")
    return "; ".join(parts)


def performer(team: StudyTeam | None) -> dict[str, Any]:
    """ServiceRequest fields naming the team (nothing when no team is configured)."""
    if team is None:
        return {}
    out: dict[str, Any] = {"note": [{"text": f"Study team: {team.contact}"}]}
    if team.performer:
        out["performer"] = [{"reference": team.performer, "display": team.name}]
    else:
        out["performer"] = [{"display": team.name}]
    return out


def referral_identifier(report: EligibilityReport) -> dict[str, Any]:
    """ServiceRequest.identifier of the trial's referral for this patient (one per trial and patient), so an
    open referral is found before another is made; nothing when the trial file names no system."""
    system = report.trial.card["referral"].get("identifier_system")
    if not system:
        return {}
    return {"identifier": [{"system": system, "value": f"{report.trial.id}-{report.patient.split('/')[-1]}"}]}
