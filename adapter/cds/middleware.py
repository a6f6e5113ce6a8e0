"""ASGI middleware for every request: a request id, and hostile-input limits before any parsing.

Pure ASGI (no BaseHTTPMiddleware): it sits on the hot path of every hook.
- Request id: `X-Request-ID` from the caller (if sane) or a new UUID; echoed in the response and put
  on every log line of the request.
- POST bodies: JSON content types only (415), at most `max_body_bytes` (413) — checked on the declared
  Content-Length and again while reading, so a chunked upload cannot get past it — and in at most
  `body_timeout_s` (408, connection closed): a body sent a byte at a time holds no connection for ever.
- The access log: one line per request with method, path (never the query string: tokens end up there),
  status, duration and request id. CORS preflights are answered before this middleware and not logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..logs import request_id_var
from .outcome import operation_outcome

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPES = ("application/json", "application/fhir+json")
# the review app's HTML forms (adapter/review; CSRF-checked there) post what browsers send for a form
FORM_TYPE, FORM_PATHS = "application/x-www-form-urlencoded", "/review/"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

access_log = logging.getLogger("axiom_cds.access")


class GuardMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float = 60.0) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        given = headers.get("x-request-id", "")
        request_id = given if _SANE_ID.fullmatch(given) else str(uuid.uuid4())
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500  # what the client gets if the application raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            if scope["method"] == "POST":
                problem = self._content_problem(headers, scope["path"])
                if problem is not None:
                    await problem(scope, receive, send_with_id)
                    return
                try:
                    body = await self._read_limited(receive)
                except TimeoutError:
                    late = operation_outcome(408, f"request body not complete within {self.body_timeout_s:g} s")
                    late.headers["connection"] = "close"  # what is still on its way is not read
                    await late(scope, receive, send_with_id)
                    return
                if body is None:
                    await operation_outcome(413, f"request body over {self.max_body} bytes")(scope, receive,
                                                                                            send_with_id)
                    return
                receive = _replay(body)
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info("request", extra={"method": scope["method"], "path": scope["path"], "status": status,
                                              "duration_ms": round((time.perf_counter() - started) * 1000, 1)})
            request_id_var.reset(token)

    def _content_problem(self, headers: dict[str, str], path: str) -> Any:
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in JSON_TYPES and not (media == FORM_TYPE and path.startswith(FORM_PATHS)):
            return operation_outcome(415, "Content-Type must be application/json")
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return operation_outcome(413, f"request body over {self.max_body} bytes")
        return None

    async def _read_limited(self, receive: Receive) -> bytes | None:
        """The body, or None when it is over the limit; TimeoutError when it takes too long."""
        async with asyncio.timeout(self.body_timeout_s):
            return await self._read_body(receive)

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
