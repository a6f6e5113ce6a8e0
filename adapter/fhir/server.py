"""Pull one patient's resources from a FHIR R4 server.

fhirpy builds the requests (base URL handling, parameter encoding). The transport is one shared
aiohttp session per call with orjson parsing: fhirpy's async client opens a new connection per
request and wraps every resource, which costs more than the evaluation itself
(shared/reference/performance.md). Searches run in parallel and follow `next` links, only to the same
server: fhirpy merely checks that a link *contains* the base URL, and the bearer token must never
travel to another host. The token is sent, never logged.
"""

from __future__ import annotations

import asyncio
import re
from datetime import date
from typing import Any

import aiohttp
import orjson
from fhirpy import AsyncFHIRClient
from yarl import URL

from ..errors import FhirServerError
from ..tables import Trial
from .bundle import bundle_entries
from .queries import Search, searches
from .record import Entry, PatientRecord, assemble

MAX_PAGES = 50
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class SessionClient(AsyncFHIRClient):
    """fhirpy's async client, sending through one shared aiohttp session and returning plain dicts."""

    def __init__(self, url: str, session: aiohttp.ClientSession, token: str | None,
                 timeout: float) -> None:
        super().__init__(url, authorization=f"Bearer {token}" if token else None)
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = self._build_request_url(path, params)
        async with self._session.get(url, headers=self._build_request_headers(), timeout=self._timeout) as r:
            body = await r.read()
            if r.status == 404:
                raise FhirServerError(f"{path} not found on the FHIR server (404)")
            if r.status in (401, 403):
                raise FhirServerError(f"the FHIR server refused access to {path} ({r.status})")
            if r.status >= 400:
                raise FhirServerError(f"the FHIR server answered {r.status} for {path}")
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                raise FhirServerError(f"the FHIR server sent non-JSON for {path}") from None


def same_server(link: str, base_url: str) -> bool:
    """Does `link` point under `base_url` (same scheme, host, port, and base path)?"""
    try:
        target, base = URL(link), URL(base_url)
    except ValueError:
        return False
    if not target.is_absolute():
        return False
    base_path = base.path.rstrip("/") + "/"
    return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port) and \
        target.path.startswith(base_path)


def _next_link(bundle: Any) -> str | None:
    for link in bundle.get("link") or () if isinstance(bundle, dict) else ():
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


async def search_all(client: SessionClient, search: Search) -> list[Entry]:
    """Every entry of a search, following `next` links (bounded, no repeats)."""
    entries: list[Entry] = []
    page = await client.get_json(search.resource_type, search.params)
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        if not isinstance(page, dict) or page.get("resourceType") != "Bundle":
            raise FhirServerError(f"the FHIR server did not answer the {search.resource_type} search "
                                  "with a Bundle")
        _, found = bundle_entries(page)
        entries.extend(found)
        nxt = _next_link(page)
        if nxt is None:
            return entries
        if nxt in seen:
            raise FhirServerError(f"the FHIR server repeated a next link in the {search.resource_type} search")
        if not same_server(nxt, client.url):
            raise FhirServerError(f"the FHIR server's next link for {search.resource_type} leaves the server")
        seen.add(nxt)
        page = await client.get_json(nxt)
    raise FhirServerError(f"the {search.resource_type} search has more than {MAX_PAGES} pages")


async def fetch_record(base_url: str, patient_id: str, trial: Trial, as_of: date | None,
                       token: str | None = None, timeout: float = 30.0) -> PatientRecord:
    """The patient's record; raises FhirServerError when the Patient itself cannot be had."""
    if not FHIR_ID.fullmatch(patient_id):
        raise FhirServerError(f"{patient_id!r} is not a FHIR id")
    try:
        async with aiohttp.ClientSession() as session:
            client = SessionClient(base_url, session, token, timeout)
            plan = searches(patient_id, trial, as_of)
            results = await asyncio.gather(
                client.get_json(f"Patient/{patient_id}"),
                *(search_all(client, s) for s in plan),
                return_exceptions=True,
            )
    except aiohttp.InvalidURL as exc:
        raise FhirServerError(f"invalid FHIR server URL {exc}") from None
    patient = results[0]
    if isinstance(patient, BaseException):
        raise _as_server_error(patient, base_url)
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise FhirServerError(f"Patient/{patient_id} did not come back as a Patient resource")
    entries: list[Entry] = []
    unavailable: dict[str, str] = {}
    for search, result in zip(plan, results[1:], strict=True):
        if isinstance(result, BaseException):
            unavailable[search.resource_type] = str(_as_server_error(result, base_url))
        else:
            entries.extend(result)
    record = assemble(patient, None, entries)
    record.unavailable.update(unavailable)
    return record


def _as_server_error(exc: BaseException, base_url: str) -> FhirServerError:
    if isinstance(exc, FhirServerError):
        return exc
    if isinstance(exc, asyncio.TimeoutError):
        return FhirServerError(f"the FHIR server at {base_url} did not answer in time")
    if isinstance(exc, aiohttp.ClientError):
        return FhirServerError(f"cannot reach the FHIR server at {base_url} ({type(exc).__name__})")
    if isinstance(exc, ValueError):  # fhirpy: a next link pointing off the server
        return FhirServerError(f"unsafe or invalid link from the FHIR server: {exc}")
    raise exc
