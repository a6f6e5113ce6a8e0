"""The referral and the lab orders the card suggests, written to the EHR as drafts with the clinician's token,
then read back: the page shows what the EHR stored, not what we sent.

The resources are the card's own (report/card.py `card`: the same ServiceRequest, the same policy on
when a referral is offered), so the card's suggestion and the app's button never differ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from ..criteria.model import EligibilityReport
from ..errors import FhirServerError
from ..fhir.client import FHIR_ID, SessionClient
from ..fhir.elements import concept_text
from ..report.card import card
from ..report.referral import StudyTeam
from ..report.text import plain
from .errors import ReviewError

log = logging.getLogger("axiom_cds.review")

MAX_ANSWER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Draft:
    kind: str  # "referral" | "lab-order"
    description: str
    resource: dict[str, Any]


def drafts(report: EligibilityReport, team: StudyTeam | None) -> tuple[Draft | None, list[Draft]]:
    """(the referral, when the card would offer one; the lab orders for what is missing or stale)."""
    shown = card(report, team=team)
    referral_code = report.trial.card["referral"]["code"]
    referral, labs = None, []
    for suggestion in (shown or {}).get("suggestions", ()):
        for action in suggestion["actions"]:
            resource = action["resource"]
            if referral_code in resource["code"]["coding"]:
                referral = Draft("referral", action["description"], resource)
            else:
                labs.append(Draft("lab-order", action["description"], resource))
    return referral, labs


async def create(http: aiohttp.ClientSession, fhir_base: str, token: str, draft: Draft, timeout_s: float) -> str:
    """POST the ServiceRequest (redirects not followed); its id, from the body or the Location header."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json",
               "Accept": "application/fhir+json", "Prefer": "return=representation"}
    refused = ReviewError(502, "The EHR did not store the draft", "Its FHIR server could not be reached.")
    try:
        async with http.post(f"{fhir_base}/ServiceRequest", data=orjson.dumps(draft.resource), headers=headers,
                             allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            status = response.status
            location = response.headers.get("Location", "")
            body = await response.content.read(MAX_ANSWER_BYTES)
    except (TimeoutError, aiohttp.ClientError):
        raise refused from None
    if status not in (200, 201):
        said = " (not allowed by the access the EHR granted)" if status in (401, 403) else ""
        raise ReviewError(502, "The EHR did not store the draft", f"Its FHIR server answered HTTP {status}{said}.")
    rid = _created_id(body, location)
    if rid is None:
        raise ReviewError(502, "The EHR did not say what it stored",
                          "Its FHIR server accepted the draft without naming the new ServiceRequest.")
    return rid


def _created_id(body: bytes, location: str) -> str | None:
    try:
        data = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and data.get("resourceType") == "ServiceRequest" and isinstance(data.get("id"), str):
        rid: str = data["id"]
    else:  # `{base}/ServiceRequest/{id}/_history/{v}`
        parts = location.rstrip("/").split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        rid = parts[-1] if len(parts) >= 2 and parts[-2] == "ServiceRequest" else ""
    return rid if FHIR_ID.fullmatch(rid) else None


async def read_back(client: SessionClient, rid: str, patient: str, draft: Draft) -> dict[str, Any]:
    """What the EHR stored under that id, checked to be this patient's draft of this code."""
    try:
        stored = await client.get_json(f"ServiceRequest/{rid}")
    except FhirServerError as exc:
        raise ReviewError(502, "The draft could not be read back",
                          f"ServiceRequest/{rid} was created, but reading it back failed: {plain(str(exc))}.",
                          relaunch=False) from None
    subject = stored.get("subject") if isinstance(stored, dict) else None
    codes = stored.get("code", {}).get("coding") if isinstance(stored, dict) and isinstance(stored.get("code"),
                                                                                             dict) else None
    if not (isinstance(subject, dict) and subject.get("reference") == f"Patient/{patient}"
            and isinstance(codes, list) and any(c in codes for c in draft.resource["code"]["coding"])):
        raise ReviewError(502, "The EHR stored something else",
                          f"ServiceRequest/{rid} as read back is not this patient's draft of this order.",
                          relaunch=False)
    return {"kind": draft.kind, "id": rid, "what": plain(concept_text(stored.get("code"))) or draft.description,
            "status": plain(str(stored.get("status", ""))), "intent": plain(str(stored.get("intent", "")))}
