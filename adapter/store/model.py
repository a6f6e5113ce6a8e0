"""What the store keeps: cards we issued and the feedback EHRs sent about them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


@dataclass(frozen=True)
class IssuedCard:
    card_uuid: str
    patient_key: str  # opaque hash of (fhirServer, patientId) from the caller — never a raw id
    verdict: str  # "likely-eligible" | "needs-review" | "not-eligible"
    trial_version: str
    issued_at: datetime  # timezone-aware


@dataclass(frozen=True)
class Feedback:
    card_uuid: str
    outcome: str  # "accepted" | "overridden"
    outcome_timestamp: datetime  # timezone-aware
    accepted_suggestions: tuple[str, ...] = ()  # suggestion uuids
    override_reason_code: str | None = None
    override_reason_system: str | None = None
    user_comment: str | None = None  # clinician free text: may hold PHI, never log it


def is_uuid(text: str) -> bool:
    return bool(_UUID.fullmatch(text))


def canonical_uuid(text: str) -> str:
    """Lower-case a card uuid so feedback matches the card whatever case the EHR echoes it in."""
    if not is_uuid(text):
        raise ValueError("card uuid is not a UUID (8-4-4-4-12 hex digits)")
    return text.lower()


def require_aware(value: datetime, name: str) -> datetime:
    """Refuse naive datetimes: a local time taken for UTC would shift suppression windows by hours."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value
