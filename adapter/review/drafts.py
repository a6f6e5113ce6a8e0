"""The referral and the lab orders the card suggests, written to the EHR as drafts with the clinician's token,
then read back: the page shows what the EHR stored, not what we sent.

The resources are the card's own (report/card.py `card`: the same ServiceRequest, the same policy on
when a referral is offered), so the card's suggestion and the app's button never differ — down to the
referral's business identifier (report/referral.py `referral_identifier`, one per trial and patient), by
which an open referral — draft or active, made from this app, another session or the card — is found
before another is created. The app adds what only it knows: the signed-in clinician as `requester`
(identity.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from ..criteria.model import EligibilityReport
from ..errors import FhirServerError, InputError
from ..fhir.client import SessionClient, pages
from ..fhir.elements import concept_text
from ..fhir.wire import FHIR_ID, is_lazy, load_json
from ..report.card import card
from ..report.referral import StudyTeam
from ..report.text import plain
from .errors import ReviewError
from .identity import requester

log = logging.getLogger("axiom_cds.review")

MAX_ANSWER_BYTES = 1024 * 1024
OPEN_STATUSES = "draft,active"  # a referral in one of these is not made again


@dataclass(frozen=True)
class Draft:
    kind: str  # "referral" | "lab-order"
    description: str
    resource: dict[str, Any]


@dataclass(frozen=True)
class Existing:
    """An open referral already in the EHR (what the page shows instead of the button)."""

    id: str
    status: str
    updated: str | None  # meta.lastUpdated as the server recorded it
    requester: str | None


def drafts(report: EligibilityReport, team: StudyTeam | None,
           fhir_user: str | None = None) -> tuple[Draft | None, list[Draft]]:
    """(the referral, when the card would offer one; the lab orders for what is missing or stale), each
    requested by the signed-in clinician when the EHR identified one."""
    shown = card(report, team=team)
    referral_code = report.trial.card["referral"]["code"]
    by = requester(fhir_user)
    referral, labs = None, []
    for suggestion in (shown or {}).get("suggestions", ()):
        for action in suggestion["actions"]:
            resource = action["resource"]
            if referral_code in resource["code"]["coding"]:
                referral = Draft("referral", action["description"], {**resource, **by})
            else:
                labs.append(Draft("lab-order", action["description"], {**resource, **by}))
    return referral, labs


def identifier_query(draft: Draft) -> str | None:
    """`system|value` of the referral's identifier (None: the trial names no system, nothing to search by)."""
    found = draft.resource.get("identifier") or ()
    return f"{found[0]['system']}|{found[0]['value']}" if found else None


async def find_open(client: SessionClient, patient: str, draft: Draft) -> list[Existing]:
    """The patient's open (draft or active) ServiceRequests with the referral's identifier, searched with
    the clinician's token; ReviewError (502) when the EHR does not answer: then nothing is created."""
    token = identifier_query(draft)
    if token is None:
        return []
    entries: list[Any] = []
    try:  # every page: a server that ignores `identifier` (or `subject`) sends all its ServiceRequests
        first = await client.get_json("ServiceRequest", {"subject": f"Patient/{patient}", "identifier": token,
                                                         "status": OPEN_STATUSES, "_count": "50"})
        async for bundle in pages(client, first, "ServiceRequest", first_fetched=True):
            entries += [load_json(e.resource) if e.resource is not None else None for e in bundle.entry or ()] \
                if is_lazy(bundle) else [e.get("resource") for e in bundle.get("entry") or () if isinstance(e, dict)]
    except (FhirServerError, InputError) as exc:
        raise ReviewError(502, "The EHR could not be asked for an existing referral",
                          f"Searching its ServiceRequests failed: {plain(str(exc))}. No referral was created, so "
                          "none is made twice.", relaunch=False) from None
    found = []
    for resource in entries:
        if not isinstance(resource, dict) or resource.get("resourceType") != "ServiceRequest" \
                or not isinstance(resource.get("id"), str) or not FHIR_ID.fullmatch(resource["id"]) \
                or (resource.get("subject") or {}).get("reference") != f"Patient/{patient}" \
                or str(resource.get("status")) not in OPEN_STATUSES.split(",") \
                or not any(i in (resource.get("identifier") or ()) for i in draft.resource["identifier"]):
            continue  # a server that ignored a search parameter: only what matches is shown
        meta, by = resource.get("meta"), resource.get("requester")
        who = by.get("display") or by.get("reference") if isinstance(by, dict) else None
        found.append(Existing(resource["id"], str(resource["status"]),
                              _instant(meta.get("lastUpdated") if isinstance(meta, dict) else None),
                              plain(who)[:120] if isinstance(who, str) and who.strip() else None))
    return found


def _instant(value: Any) -> str | None:
    """A FHIR instant as the page shows times (`2026-11-21 09:30 UTC`); None when it is not one."""
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if at is not None and at.tzinfo else None


async def create(http: aiohttp.ClientSession, fhir_base: str, token: str, draft: Draft,
                 timeout_s: float) -> tuple[str, bool]:
    """POST the ServiceRequest (redirects not followed): its id, from the body or the Location header, and
    whether it is new. The referral is a conditional create (`If-None-Exist` on its identifier, draft or
    active): a server that supports it answers 200 with the open one made meanwhile by another session."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json",
               "Accept": "application/fhir+json", "Prefer": "return=representation"}
    token_query = identifier_query(draft)
    if token_query is not None:
        headers["If-None-Exist"] = f"identifier={quote(token_query, safe=':/|.-_~')}&status={OPEN_STATUSES}"
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
    return rid, not (status == 200 and token_query is not None)


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
