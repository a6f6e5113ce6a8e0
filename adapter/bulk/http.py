"""HTTP for Bulk Data: httpx, only to the allowed server, bounded answers, the token only where it belongs.

The server hands back URLs (the status endpoint in Content-Location, the files of the manifest,
redirects): each is requested only when it is on the allowed server — the FHIR base's scheme, host and
port, or a file-server origin the user configured — with the same rules as the FHIR layer's next links
(no user name or password, no encoded slash; adapter/fhir/urls.py, client.py). Redirects are followed
only while they stay there (at most `MAX_REDIRECTS`), never off it. JSON answers are read up to a
bound; files are streamed to disk, never held in memory. A 429 or 503 is retried after its Retry-After
(bounded), a 401 once with a fresh token. The token is sent, never logged; messages show URLs by
`shown()` (no query: a pre-signed file URL's query is a credential).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
from yarl import URL

from ..fhir.client import retry_after_seconds
from ..fhir.urls import has_userinfo, shown
from .errors import BulkError, ExportTimeoutError, ResponseTooLargeError, UnsafeUrlError, bounded
from .state import create_private

log = logging.getLogger("axiom_cds.bulk")

MAX_JSON_BYTES = 16 * 1024 * 1024  # a manifest of many thousand files fits; a status answer is tiny
MAX_ERROR_BODY_BYTES = 64 * 1024  # an OperationOutcome explaining a refusal
MAX_REDIRECTS = 3
RETRIED = (429, 503)
MAX_RETRIES = 3
MAX_RETRY_WAIT_S = 300.0
DEFAULT_RETRY_WAIT_S = 2.0
CHUNK_BYTES = 1024 * 1024

Sleep = Callable[[float], Awaitable[None]]


class _WithoutQuery(logging.Filter):
    """httpx logs each request's URL at INFO; a pre-signed file URL's query is a credential: drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(a.copy_with(query=None) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


_HTTPX_LOG = logging.getLogger("httpx")
if not any(isinstance(f, _WithoutQuery) for f in _HTTPX_LOG.filters):
    _HTTPX_LOG.addFilter(_WithoutQuery())


class TokenSource(Protocol):
    """Something that supplies a bearer token (adapter/bulk/auth.py BackendServicesAuth)."""

    async def token(self) -> str: ...

    def invalidate(self) -> None: ...


def origin_of(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an absolute http(s) URL without credentials; None otherwise."""
    try:
        parsed = URL(url)
    except ValueError:
        return None
    if not parsed.is_absolute() or parsed.scheme not in ("http", "https") or not parsed.host or has_userinfo(url):
        return None
    return parsed.scheme, parsed.host, parsed.port


@dataclass(frozen=True)
class AllowedServer:
    """Where requests may go: the FHIR base's origin, plus configured file-server origins."""

    base_url: str
    file_origins: tuple[str, ...] = ()

    def origins(self) -> set[tuple[str, str, int | None]]:
        found = {origin_of(u) for u in (self.base_url, *self.file_origins)}
        return {o for o in found if o is not None}

    def allows(self, url: str) -> bool:
        """On an allowed origin, and no path trick a server could resolve elsewhere (`..%2F`, `\\`)."""
        where = origin_of(url)
        if where is None or where not in self.origins():
            return False
        parsed = URL(url)
        raw = parsed.raw_path.lower()
        return "%2f" not in raw and "%5c" not in raw and "\\" not in parsed.path

    def check(self, url: str, what: str) -> str:
        if not self.allows(url):
            raise UnsafeUrlError(f"the server sent {what} off the allowed server ({_where(url)}); not followed "
                                 "(allow a file server with --allow-file-origin if it is yours)")
        return url


def _where(url: str) -> str:
    try:
        parsed = URL(url)
    except ValueError:
        return "not a URL"
    if not parsed.is_absolute() or not parsed.host:
        return "not an absolute URL"
    return str(parsed.origin()) if not has_userinfo(url) else "a URL with credentials"


def diagnostics(body: bytes) -> str | None:
    """An OperationOutcome's diagnostics (or issue details text), bounded; None if there are none."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    issues = doc.get("issue") if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome" else None
    said = []
    for issue in issues if isinstance(issues, list) else ():
        if not isinstance(issue, dict):
            continue
        details = issue.get("details")
        text = issue.get("diagnostics") or (details.get("text") if isinstance(details, dict) else None)
        if isinstance(text, str) and text.strip():
            said.append(text)
    return bounded("; ".join(said)) if said else None


@dataclass
class Answer:
    """A response whose body (bounded) has been read."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str

    def json(self, what: str) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise BulkError(f"the server's {what} is not JSON") from None


class SafeHttp:
    """An httpx client held to the allowed server; see the module docstring."""

    def __init__(self, client: httpx.AsyncClient, allowed: AllowedServer, auth: TokenSource | None = None,
                 sleep: Sleep | None = None) -> None:
        self.client = client
        self.allowed = allowed
        self.auth = auth
        self.sleep: Sleep = sleep or asyncio.sleep

    async def _headers(self, extra: dict[str, str], with_token: bool) -> dict[str, str]:
        headers = dict(extra)
        if with_token and self.auth is not None:
            headers["Authorization"] = f"Bearer {await self.auth.token()}"
        return headers

    async def json(self, method: str, url: str, what: str, *, headers: dict[str, str] | None = None,
                   params: dict[str, str] | None = None, limit: int = MAX_JSON_BYTES,
                   with_token: bool = True) -> Answer:
        """One exchange whose whole body is read (up to `limit`): kick-off, status, manifest, DELETE."""
        async def read(response: httpx.Response) -> bytes:
            cap = limit if response.status_code < 400 else MAX_ERROR_BODY_BYTES
            return await _read_bounded(response, cap, what, strict=response.status_code < 400)
        return await self._exchange(method, url, what, headers or {}, params, with_token, read)

    async def download(self, url: str, part: Path, what: str, *, headers: dict[str, str] | None = None,
                       with_token: bool = True) -> Answer:
        """GET `url` streamed into `part` (the body is not in the Answer): raw bytes when the server
        gzips (Content-Encoding gzip is kept, the file is .ndjson.gz), decoded otherwise. `with_token`:
        False for files the manifest says need no token (pre-signed URLs must not get it)."""
        async def write(response: httpx.Response) -> bytes:
            if response.status_code != 200:
                return await _read_bounded(response, MAX_ERROR_BODY_BYTES, what, strict=False)
            encoding = response.headers.get("content-encoding", "").strip().lower()
            chunks = response.aiter_raw(CHUNK_BYTES) if encoding == "gzip" else response.aiter_bytes(CHUNK_BYTES)
            with create_private(part) as fh:
                async for chunk in chunks:
                    fh.write(chunk)
            return b""
        return await self._exchange("GET", url, what, headers or {}, None, with_token, write)

    async def _exchange(self, method: str, url: str, what: str, headers: dict[str, str],
                        params: dict[str, str] | None, with_token: bool,
                        consume: Callable[[httpx.Response], Awaitable[bytes]]) -> Answer:
        target = self.allowed.check(url, what)
        refreshed = False
        retries = 0
        hops = 0
        while True:
            sent = await self._headers(headers, with_token)
            try:
                async with self.client.stream(method, target, headers=sent, params=params) as response:
                    status = response.status_code
                    if 300 <= status < 400 and status != 304:
                        location = response.headers.get("location")
                        nxt = str(URL(target).join(URL(location))) if location else ""
                        if not location or not self.allowed.allows(nxt) or hops >= MAX_REDIRECTS or method != "GET":
                            raise UnsafeUrlError(f"the server redirected {what} ({status}) to {_where(nxt)}; "
                                                 "not followed")
                        target, params, hops = nxt, None, hops + 1
                        continue
                    body = await consume(response)
                    answer = Answer(status, response.headers, body, target)
            except httpx.TimeoutException:
                raise ExportTimeoutError(f"the server did not answer {what} in time ({shown(target)})") from None
            except httpx.TransportError as exc:
                raise BulkError(f"cannot reach the server for {what} ({type(exc).__name__}, {shown(target)})") \
                    from None
            if status == 401 and self.auth is not None and with_token and not refreshed:
                self.auth.invalidate()  # expired or revoked: one more try with a new token
                refreshed = True
                continue
            if status in RETRIED and retries < MAX_RETRIES:
                wait = retry_after_seconds(answer.headers.get("retry-after"))
                wait = min(MAX_RETRY_WAIT_S, DEFAULT_RETRY_WAIT_S * 2 ** retries if wait is None else wait)
                log.info("bulk request retried", extra={"what": what, "status": status, "delay_s": round(wait, 3)})
                await self.sleep(wait)
                retries += 1
                continue
            return answer


async def _read_bounded(response: httpx.Response, limit: int, what: str, *, strict: bool) -> bytes:
    """The body up to `limit` bytes; over it: ResponseTooLargeError (`strict`) or the first `limit` bytes."""
    declared = response.headers.get("content-length")
    if strict and declared and declared.isdigit() and int(declared) > limit:
        raise ResponseTooLargeError(f"the server's {what} is larger than {limit // 1024} KiB; refused")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            if strict:
                raise ResponseTooLargeError(f"the server's {what} is larger than {limit // 1024} KiB; refused")
            return bytes(body[:limit])
    return bytes(body)

