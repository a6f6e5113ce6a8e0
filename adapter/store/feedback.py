"""CDS Hooks 2.0 feedback request body → Feedback items, or one specific FeedbackError; and feedback
stored only about cards this service issued.

Messages name the offending field (``feedback[2].outcomeTimestamp``) but never echo a value: the body
carries clinician free text, and whatever we put in an error ends up in an OperationOutcome and in logs.
Empty containers (``acceptedSuggestions: []``, ``overrideReason: {}``) and JSON null count as absent, so a
sloppy but harmless client does not lose its feedback to a 400 (EHRs do not resend feedback).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .model import Feedback, is_uuid
from .store import Store

OUTCOMES = ("accepted", "overridden")
# RFC 3339 / ISO 8601 extended date-time with an explicit offset (seconds optional, any fraction digits).
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})", re.IGNORECASE)


class FeedbackError(ValueError):
    """A malformed feedback request; the web layer answers `http_status` with this one-line message."""

    http_status = 400


class UnknownCardError(FeedbackError):
    """Well-formed feedback about a card this service never issued (or one past its retention).

    422, not 404: the feedback endpoint exists — a 404 would tell the EHR its feedback URL is wrong — and
    the request is valid JSON of the right shape; what it names is not something the service knows."""

    http_status = 422


def record_feedback(store: Store, items: list[Feedback], pending: Callable[[], None] = lambda: None) -> int:
    """Store feedback only when every item names a card this service issued; how many items were new.

    Otherwise UnknownCardError naming the first such item, and nothing is stored: feedback about an
    unknown card is forged or misrouted, and kept it would fill the database and the feedback record with
    outcomes no clinician gave on a card of ours. `pending`: waits until cards already answered are
    written (the background writer), asked only when a card is not found, so feedback sent the moment a
    card was shown is not refused for a card still on its way to the database.
    """
    wanted = [item.card_uuid for item in items]
    known = store.issued(wanted)
    if not known.issuperset(u.lower() for u in wanted):
        pending()
        known = store.issued(wanted)
    for i, card in enumerate(wanted):
        if card.lower() not in known:
            raise UnknownCardError(f"feedback[{i}].card is not a card this service issued (or it is older than "
                                   "the cards the service keeps)")
    return store.add_feedback(items)


def parse_feedback(body: Any) -> list[Feedback]:
    """Validate a feedback request body ``{"feedback": [...]}`` and return its items in order."""
    if not isinstance(body, dict):
        raise FeedbackError("feedback request body must be a JSON object")
    items = body.get("feedback")
    if not isinstance(items, list) or not items:
        raise FeedbackError("feedback must be a non-empty list")
    return [_item(item, f"feedback[{i}]") for i, item in enumerate(items)]


def _present(value: Any) -> bool:
    return value not in (None, [], {})


def _item(item: Any, where: str) -> Feedback:
    if not isinstance(item, dict):
        raise FeedbackError(f"{where} must be an object")
    card = item.get("card")
    if not isinstance(card, str) or not is_uuid(card):
        raise FeedbackError(f"{where}.card must be the card's uuid (a UUID string)")
    outcome = item.get("outcome")
    if outcome not in OUTCOMES:
        raise FeedbackError(f'{where}.outcome must be "accepted" or "overridden"')
    suggestions = item.get("acceptedSuggestions")
    reason = item.get("overrideReason")
    if outcome == "overridden" and _present(suggestions):
        raise FeedbackError(f'{where}.acceptedSuggestions is only allowed with outcome "accepted"')
    if outcome == "accepted" and _present(reason):
        raise FeedbackError(f'{where}.overrideReason is only allowed with outcome "overridden"')
    code, system, comment = _override_reason(reason, f"{where}.overrideReason")
    return Feedback(
        card_uuid=card.lower(),
        outcome=outcome,
        outcome_timestamp=_timestamp(item.get("outcomeTimestamp"), f"{where}.outcomeTimestamp"),
        accepted_suggestions=_suggestions(suggestions, f"{where}.acceptedSuggestions"),
        override_reason_code=code,
        override_reason_system=system,
        user_comment=comment,
    )


def _timestamp(value: Any, where: str) -> datetime:
    if value is None:
        raise FeedbackError(f"{where} is required")
    if not isinstance(value, str) or not _DATETIME.fullmatch(value):
        raise FeedbackError(f"{where} must be an ISO 8601 date-time with a timezone (e.g. 2026-11-21T10:00:00Z)")
    try:
        # at the ends of the calendar (0001-01-01T00:00:00+14:00, 9999-12-31T23:59:59-14:00) the instant
        # itself is outside what a datetime holds once in UTC: OverflowError, the same refusal
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        raise FeedbackError(f"{where} is not a valid date-time (years 0001-9999, in UTC)") from None


def _suggestions(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FeedbackError(f"{where} must be a list of {{id}} objects")
    ids: list[str] = []
    for i, entry in enumerate(value):
        sid = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(sid, str) or not sid:
            raise FeedbackError(f"{where}[{i}] must be an object with a non-empty string id")
        ids.append(sid)
    return tuple(ids)


def _override_reason(value: Any, where: str) -> tuple[str | None, str | None, str | None]:
    """(code, system, userComment); the reason Coding is optional — a user may only leave a comment."""
    if value is None:
        return None, None, None
    if not isinstance(value, dict):
        raise FeedbackError(f"{where} must be an object")
    comment = value.get("userComment")
    if comment is not None and not isinstance(comment, str):
        raise FeedbackError(f"{where}.userComment must be a string")
    reason = value.get("reason")
    if reason is None:
        return None, None, comment or None
    if not isinstance(reason, dict):
        raise FeedbackError(f"{where}.reason must be a Coding object")
    code, system = reason.get("code"), reason.get("system")
    if not isinstance(code, str) or not code:
        raise FeedbackError(f"{where}.reason must be a Coding with a non-empty string code")
    if system is not None and (not isinstance(system, str) or not system):
        raise FeedbackError(f"{where}.reason.system must be a non-empty string (a URI)")
    return code, system, comment or None
