"""Talking to a FHIR R4 server: one request, one search with its pages.

fhirpy builds the requests (base URL handling, parameter encoding). The transport is a shared aiohttp
session with orjson parsing: fhirpy's async client opens a new connection per request and wraps every
resource, which costs more than the evaluation itself (shared/reference/performance.md). `next` links
are followed only within the server's base: fhirpy merely checks that a link *contains* the base URL,
and the bearer token must never travel to another host or path. Redirects are never followed: a 3xx
could send the request (and the token, on the same host) past the allow-list, and its data would
build the card. The token is sent, never logged; messages and logs show the URL without secrets.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from fhirpy import AsyncFHIRClient
from yarl import URL

from ..errors import FhirServerError, InputError
from .breaker import CircuitBreaker, Outcome
from .bundle import bundle_entries
from .queries import Search
from .slots import PATIENT, SEARCH, Slots, SlotWaitTimeout
from .urls import has_userinfo, shown
from .wire import Entry, Lazy, bundle_links, bundle_size, is_bundle, load_resource

log = logging.getLogger("axiom_cds.fhir")

MAX_PAGES = 50
DEFAULT_RETRIES = 2
DEFAULT_MAX_RESPONSE_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_ENTRIES_PER_PAGE = 5000  # the searches ask for 1000 a page
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 2.0
# A retry is only worth sending when this much of the deadline is left after waiting for it.
RETRY_MARGIN_S = 0.1
RETRIED_STATUSES = (429, 503)
MAX_RETRY_WAIT_S = 60.0  # without a deadline (benchmarks), a longer Retry-After is not waited for


@dataclass(frozen=True)
class _Failure:
    """One failed exchange: what the user is told, whether a retry may help, what the breaker records."""

    message: str
    outcome: Outcome
    short: str = ""  # for the breaker's message: the status or error, without the server's address
    retry: bool = False
    retry_after: float | None = None
    issue: str = "transient"  # FHIR issue-type code of the 412 it may become (errors.FhirServerError)


class _TooLargeError(Exception):
    pass


class SessionClient(AsyncFHIRClient):
    """fhirpy's async client, sending through a shared aiohttp session and returning plain dicts.

    Fault handling (one place, so every read, search and page gets it): a GET answered 429 or 503, or
    whose connection was reset before any byte came back, is retried with exponential backoff and
    jitter (or after the server's Retry-After), at most `retries` times and only while the retry fits
    in the hook's deadline; the per-server circuit breaker is asked before every attempt; a body over
    `max_response_bytes` is refused while reading it, never buffered whole; anything that is not a
    FHIR JSON resource is a FhirServerError, never an exception for the web layer to turn into a 500.
    """

    def __init__(self, url: str, session: aiohttp.ClientSession, token: str | None, timeout: float, *,
                 retries: int = DEFAULT_RETRIES, breaker: CircuitBreaker | None = None,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 max_entries_per_page: int = DEFAULT_MAX_ENTRIES_PER_PAGE, deadline: float | None = None,
                 slots: Slots | None = None) -> None:
        super().__init__(url, authorization=f"Bearer {token}" if token else None)
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.retries = max(0, retries)
        self.breaker = breaker
        self.max_response_bytes = max_response_bytes
        self.max_entries_per_page = max_entries_per_page
        self.deadline = deadline  # time.monotonic() by which the hook needs its data; None: no limit
        self.slots = slots  # the requests in flight to this server, shared with every other hook
        self.shown_url = shown(url)  # for messages and logs

    def set_deadline(self, at: float) -> None:
        """Hold retries to `at` (monotonic); an earlier deadline already set wins."""
        self.deadline = at if self.deadline is None else min(self.deadline, at)

    async def get_json(self, path: str, params: dict[str, str] | None = None, priority: int = SEARCH) -> Any:
        """A FHIR resource (a JSON object with a resourceType) from the server; raises FhirServerError.

        `priority` orders the wait for a connection when every one is busy (fhir/slots.py)."""
        url = self._build_request_url(path, params)
        what = path if "://" not in path else "a next page"
        attempt = 0
        while True:
            result = await self._attempt(url, what, priority)
            if not isinstance(result, _Failure):
                return result
            if not result.retry or attempt >= self.retries:
                tries = f" ({attempt + 1} attempts)" if attempt else ""
                raise FhirServerError(result.message + tries, result.issue)
            delay = result.retry_after if result.retry_after is not None else _backoff(attempt)
            asked = f" (Retry-After {result.retry_after:g} s)" if result.retry_after is not None else ""
            if self.deadline is not None and time.monotonic() + delay + RETRY_MARGIN_S > self.deadline:
                raise FhirServerError(f"{result.message}; a retry{asked} would not fit in the hook's deadline",
                                      result.issue)
            if delay > MAX_RETRY_WAIT_S:
                raise FhirServerError(f"{result.message}; a retry{asked} is too far away", result.issue)
            # the server and the reason only: `what` may hold a patient id
            log.info("FHIR request retried", extra={"fhir_server": self.shown_url, "attempt": attempt + 2,
                                                     "reason": result.short, "delay_s": round(delay, 3)})
            await asyncio.sleep(delay)
            attempt += 1

    async def _attempt(self, url: str, what: str, priority: int) -> Any:
        """One exchange, reported to the breaker: the parsed resource, or a _Failure. The breaker is asked
        first, without a connection slot: a request waiting for another's trial (a half-open probe) must
        not keep a slot that requests to a healthy base on the same host could use."""
        probe = await self.breaker.admit() if self.breaker is not None else False
        outcome, short = Outcome.NEUTRAL, ""
        try:
            result = await self._sent(url, what, priority)
            outcome, short = (result.outcome, result.short) if isinstance(result, _Failure) else (Outcome.OK, "")
            return result
        finally:  # also on cancellation (the hook's deadline): the breaker must hear of every probe
            if self.breaker is not None:
                self.breaker.record(outcome, probe, short)

    async def _sent(self, url: str, what: str, priority: int) -> Any:
        """The exchange, once a connection slot is free (fhir/slots.py)."""
        if self.slots is None:
            return await self._exchange(url, what)
        wait = None if self.deadline is None else max(0.0, self.deadline - time.monotonic() - RETRY_MARGIN_S)
        try:
            async with self.slots.hold(priority, wait):
                return await self._exchange(url, what)
        except SlotWaitTimeout:  # the server was never asked: neutral for its breaker, no retry
            log.warning("FHIR connections all busy until the deadline: request not sent",
                        extra={"fhir_server": self.shown_url, "connections": self.slots.limit})
            return _Failure(f"all {self.slots.limit} connections this service keeps to the FHIR server at "
                            f"{self.shown_url} stayed busy with other requests until the hook's deadline: "
                            f"{what} was not sent", Outcome.NEUTRAL, issue="throttled")

    async def _exchange(self, url: str, what: str) -> Any:
        answered = False
        try:
            async with self._session.get(url, headers=self._build_request_headers(), timeout=self._timeout,
                                         allow_redirects=False) as r:
                answered = True
                status = r.status
                if 300 <= status < 400:
                    return _redirect_failure(status, r.headers.get("Location"), url, what)
                if status >= 400:
                    return _status_failure(status, r.headers.get("Retry-After"), what)
                body = await self._read_limited(r)
                content_type = r.headers.get("Content-Type", "")
        except TimeoutError:
            return _Failure(f"the FHIR server at {self.shown_url} did not answer {what} in time", Outcome.FAILED,
                            "timeout", issue="timeout")
        except _TooLargeError:
            return _Failure(f"the FHIR server sent more than {self.max_response_bytes / 1048576:g} MB for "
                            f"{what}; refused", Outcome.NEUTRAL, issue="too-costly")
        except aiohttp.ClientConnectorError as exc:
            return _Failure(f"cannot reach the FHIR server at {self.shown_url} ({type(exc).__name__})", Outcome.FAILED,
                            type(exc).__name__)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
            if answered:  # part of the answer came: resending is not known to be safe for the server
                return _Failure(f"the connection to the FHIR server broke while it was sending {what}",
                                Outcome.FAILED, "connection broken")
            # reset before any byte: the server (or a proxy in front of it) dropped the request, safe to resend
            return _Failure(f"cannot reach the FHIR server at {self.shown_url} ({type(exc).__name__})", Outcome.FAILED,
                            "connection reset", retry=True)
        except aiohttp.ClientResponseError:
            return _Failure(f"the FHIR server at {self.shown_url} sent a malformed HTTP response for {what}",
                            Outcome.FAILED, "malformed HTTP", issue="invalid")
        except aiohttp.ClientError as exc:
            return _Failure(f"cannot reach the FHIR server at {self.shown_url} ({type(exc).__name__})", Outcome.FAILED,
                            type(exc).__name__)
        return _parse_resource(body, content_type, what)

    async def _read_limited(self, response: aiohttp.ClientResponse) -> bytes:
        """The body, refused as soon as it passes the limit (declared or while streaming)."""
        limit = self.max_response_bytes
        if response.content_length is not None and response.content_length > limit:
            raise _TooLargeError
        body = bytearray()
        async for chunk in response.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise _TooLargeError
        return bytes(body)


def _backoff(attempt: int) -> float:
    """Exponential, with jitter so that parallel searches refused together do not come back together."""
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** attempt) * random.uniform(0.5, 1.0))


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _redirect_failure(status: int, location: str | None, url: str, what: str) -> _Failure:
    """A 3xx, not followed: said with where it pointed (scheme, host and port only), never the Location
    itself, which may carry a patient id or a key. The server answered: its breaker hears OK."""
    where = ""
    try:
        target = URL(url).join(URL(location)) if location else None
    except ValueError:
        target = None
    if target is not None and target.is_absolute() and target.host:
        same_origin = (target.scheme, target.host, target.port) == (URL(url).scheme, URL(url).host, URL(url).port)
        where = " to another path on the same host" if same_origin else f" to {target.origin()}"
    return _Failure(f"the FHIR server answered with a redirect ({status} for {what}{where}), which is not followed",
                    Outcome.OK, str(status), issue="not-supported")


def _status_failure(status: int, retry_after: str | None, what: str) -> _Failure:
    if status == 404:
        return _Failure(f"{what} not found on the FHIR server (404)", Outcome.OK, issue="not-found")
    if status in (401, 403):
        return _Failure(f"the FHIR server refused access to {what} ({status})", Outcome.OK, issue="forbidden")
    message = f"the FHIR server answered {status} for {what}"
    if status in RETRIED_STATUSES:
        # 429 is the server protecting itself, not failing: it does not count towards the breaker
        return _Failure(message, Outcome.NEUTRAL if status == 429 else Outcome.FAILED, str(status), retry=True,
                        retry_after=retry_after_seconds(retry_after),
                        issue="throttled" if status == 429 else "transient")
    return _Failure(message, Outcome.FAILED if status >= 500 else Outcome.OK, str(status),
                    issue="transient" if status >= 500 else "processing")


def _parse_resource(body: bytes, content_type: str, what: str) -> Any:
    """A FHIR resource, or a _Failure saying in words what came instead."""
    start = body.lstrip()[:14].lower()
    if "html" in content_type.lower() or start.startswith((b"<!doctype html", b"<html")):
        return _Failure(f"the FHIR server sent an HTML page, not FHIR JSON, for {what}", Outcome.NEUTRAL,
                        issue="invalid")
    if "xml" in content_type.lower() or start.startswith(b"<"):
        return _Failure(f"the FHIR server sent XML, not FHIR JSON, for {what}", Outcome.NEUTRAL,
                        issue="invalid")
    if not body.strip():
        return _Failure(f"the FHIR server sent an empty answer for {what}", Outcome.NEUTRAL,
                        issue="invalid")
    try:
        resource = load_resource(body)  # a Bundle lazily: see wire.py
    except InputError as exc:
        kind = "truncated JSON" if "unexpected end" in str(exc).lower() else "non-JSON"
        return _Failure(f"the FHIR server sent {kind} for {what}", Outcome.NEUTRAL,
                        issue="invalid")
    if isinstance(resource, Lazy):
        return resource
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return _Failure(f"the FHIR server sent JSON that is not a FHIR resource for {what}", Outcome.NEUTRAL,
                        issue="invalid")
    return resource


def same_server(link: str, base_url: str) -> bool:
    """Does `link` point at or under `base_url` (same scheme, host, port, and base path)?

    HAPI pages with `{base}?_getpages=…`, others with `{base}/Observation?…`; both qualify. Not a
    link with a user name or password, nor one whose path holds an encoded slash or a backslash
    (`{base}/..%2Fadmin`): a server that decodes before resolving `..` would serve another path.
    """
    try:
        target, base = URL(link), URL(base_url)
    except ValueError:
        return False
    if not target.is_absolute() or has_userinfo(link):
        return False
    raw = target.raw_path.lower()
    if "%2f" in raw or "%5c" in raw or "\\" in target.path:
        return False
    base_path = base.path.rstrip("/")
    return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port) and \
        (target.path.rstrip("/") == base_path or target.path.startswith(base_path + "/"))


def absolute_link(link: str, base_url: str) -> str:
    """A relative `next` link, resolved against the server's base."""
    return link if "://" in link else str(URL(base_url.rstrip("/") + "/").join(URL(link)))


def next_link(bundle: Any) -> str | None:
    links = bundle_links(bundle) if is_bundle(bundle) else None
    for link in links if isinstance(links, list) else ():
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


async def pages(client: SessionClient | None, page: Any, label: str, first_fetched: bool = False
                ) -> AsyncIterator[Any]:
    """A search result's first page and every page after it: bounded (MAX_PAGES), no next link followed
    twice, none off the server. Pages fetched from the server are held to the client's entries-per-page
    limit (`first_fetched`: the first page came from the server too, not from the hook's prefetch)."""
    seen: set[str] = set()
    fetched = first_fetched
    for number in range(1, MAX_PAGES + 1):
        if not is_bundle(page):
            raise FhirServerError(f"the {label} search did not come back as a Bundle")
        if fetched and client is not None:
            _check_page_size(page, label, client.max_entries_per_page)
        yield page
        nxt = next_link(page)
        if nxt is None:
            return
        if client is None:
            raise FhirServerError(f"the {label} results are paged and there is no FHIR server to page through")
        try:
            nxt = absolute_link(nxt, client.url)
        except ValueError:
            raise FhirServerError(f"the next link of the {label} search is not a URL") from None
        if nxt in seen:
            raise FhirServerError(f"the FHIR server repeated a next link in the {label} search")
        if not same_server(nxt, client.url):
            raise FhirServerError(f"the next link of the {label} search leaves the FHIR server")
        if number == MAX_PAGES:  # before fetching a page that would not be read
            break
        seen.add(nxt)
        page = await client.get_json(nxt)
        fetched = True
    raise FhirServerError(f"the {label} search has more than {MAX_PAGES} pages")


async def collect_pages(client: SessionClient | None, page: Any, label: str, first_fetched: bool = False,
                        since: str | None = None, floor_type: str = "Observation") -> list[Entry]:
    """Entries of a search result and of every page after it (`pages`). `since`, `floor_type`: see
    `bundle_entries`."""
    entries: list[Entry] = []
    async for each in pages(client, page, label, first_fetched):
        try:
            entries.extend(bundle_entries(each, since, floor_type)[1])
        except InputError as exc:  # the page, not the hook's request, is malformed
            raise FhirServerError(f"the {label} search came back as a malformed Bundle ({exc})") from None
    return entries


def _check_page_size(page: Any, label: str, limit: int) -> None:
    if (size := bundle_size(page)) > limit:
        raise FhirServerError(f"the FHIR server sent {size} entries in one page of the {label} search "
                              f"(more than {limit}); refused")


async def search_all(client: SessionClient, search: Search) -> list[Entry]:
    """Every entry of a search, all pages."""
    return await collect_pages(client, await client.get_json(search.resource_type, search.params), search.key,
                               first_fetched=True)


async def read_patient(client: SessionClient, patient_id: str) -> dict[str, Any]:
    """The Patient asked for, or FhirServerError: a server that answers with another patient (a bug, a
    cache, a wrong route) must not get a card about this one built on someone else's chart."""
    patient = await client.get_json(f"Patient/{patient_id}", priority=PATIENT)
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise FhirServerError(f"Patient/{patient_id} did not come back as a Patient resource", "invalid")
    got = patient.get("id")
    if not isinstance(got, str) or not got:
        raise FhirServerError(f"the FHIR server answered the read of Patient/{patient_id} with a Patient without "
                              "an id; refused", "invalid")
    if got != patient_id:  # the other id is not shown: it names another patient
        raise FhirServerError(f"the FHIR server answered the read of Patient/{patient_id} with another patient; "
                              "refused", "invalid")
    return patient
