"""Talking to a FHIR R4 server: one request, one search with its pages.

fhirpy builds the requests (base URL handling, parameter encoding). The transport is a shared aiohttp
session with orjson parsing: fhirpy's async client opens a new connection per request and wraps every
resource, which costs more than the evaluation itself (shared/reference/performance.md). `next` links
are followed only on the same server: fhirpy merely checks that a link *contains* the base URL, and the
bearer token must never travel to another host. The token is sent, never logged.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import orjson
from fhirpy import AsyncFHIRClient
from yarl import URL

from ..errors import FhirServerError
from .bundle import bundle_entries
from .queries import Search
from .record import Entry

MAX_PAGES = 50
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class SessionClient(AsyncFHIRClient):
    """fhirpy's async client, sending through a shared aiohttp session and returning plain dicts."""

    def __init__(self, url: str, session: aiohttp.ClientSession, token: str | None, timeout: float) -> None:
        super().__init__(url, authorization=f"Bearer {token}" if token else None)
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = self._build_request_url(path, params)
        what = path if "://" not in path else "a next page"
        try:
            async with self._session.get(url, headers=self._build_request_headers(),
                                         timeout=self._timeout) as r:
                body = await r.read()
                status = r.status
        except TimeoutError:
            raise FhirServerError(f"the FHIR server at {self.url} did not answer {what} in time") from None
        except aiohttp.ClientError as exc:
            raise FhirServerError(f"cannot reach the FHIR server at {self.url} ({type(exc).__name__})") from None
        if status == 404:
            raise FhirServerError(f"{what} not found on the FHIR server (404)")
        if status in (401, 403):
            raise FhirServerError(f"the FHIR server refused access to {what} ({status})")
        if status >= 400:
            raise FhirServerError(f"the FHIR server answered {status} for {what}")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise FhirServerError(f"the FHIR server sent non-JSON for {what}") from None


def same_server(link: str, base_url: str) -> bool:
    """Does `link` point at or under `base_url` (same scheme, host, port, and base path)?

    HAPI pages with `{base}?_getpages=…`, others with `{base}/Observation?…`; both qualify.
    """
    try:
        target, base = URL(link), URL(base_url)
    except ValueError:
        return False
    if not target.is_absolute():
        return False
    base_path = base.path.rstrip("/")
    return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port) and \
        (target.path.rstrip("/") == base_path or target.path.startswith(base_path + "/"))


def absolute_link(link: str, base_url: str) -> str:
    """A relative `next` link, resolved against the server's base."""
    return link if "://" in link else str(URL(base_url.rstrip("/") + "/").join(URL(link)))


def next_link(bundle: Any) -> str | None:
    for link in bundle.get("link") or () if isinstance(bundle, dict) else ():
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


async def collect_pages(client: SessionClient | None, page: Any, label: str) -> list[Entry]:
    """Entries of a search result and of every page after it (bounded, no repeats, same server)."""
    entries: list[Entry] = []
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        if not isinstance(page, dict) or page.get("resourceType") != "Bundle":
            raise FhirServerError(f"the {label} search did not come back as a Bundle")
        entries.extend(bundle_entries(page)[1])
        nxt = next_link(page)
        if nxt is None:
            return entries
        if client is None:
            raise FhirServerError(f"the {label} results are paged and there is no FHIR server to page through")
        nxt = absolute_link(nxt, client.url)
        if nxt in seen:
            raise FhirServerError(f"the FHIR server repeated a next link in the {label} search")
        if not same_server(nxt, client.url):
            raise FhirServerError(f"the next link of the {label} search leaves the FHIR server")
        seen.add(nxt)
        page = await client.get_json(nxt)
    raise FhirServerError(f"the {label} search has more than {MAX_PAGES} pages")


async def search_all(client: SessionClient, search: Search) -> list[Entry]:
    """Every entry of a search, all pages."""
    return await collect_pages(client, await client.get_json(search.resource_type, search.params), search.key)


async def read_patient(client: SessionClient, patient_id: str) -> dict[str, Any]:
    patient = await client.get_json(f"Patient/{patient_id}")
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise FhirServerError(f"Patient/{patient_id} did not come back as a Patient resource")
    return patient
