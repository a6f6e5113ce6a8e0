"""Limits on the request head in the HTTP server itself, before any ASGI code runs: its size and its time.

uvicorn bounds neither. httptools (its parser whenever installed) accepts a head of any size — a 128 MB
header took seconds of parsing on the event loop, stalling every other request — and neither parser
closes a connection that never finishes its head: uvicorn's keep-alive timeout starts only after a
response, so slowloris connections (or silent ones) stay open for ever. h11 has a size limit
(`h11_max_incomplete_event_size`) but no time limit.

The guard wraps whichever parser uvicorn would use, without changing how either parses: it counts the
bytes received while a head is pending and arms one timer per pending head. A reverse proxy in front
should set the same limits (docs/service.md); these hold even without one.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
from typing import TYPE_CHECKING, Any, cast

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from .settings import Settings

log = logging.getLogger("axiom_cds.http")

LINGER_S = 2.0  # after a refusal, read (and drop) what the client is still sending, so it can read the answer
REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}

if TYPE_CHECKING:
    _Base = H11Protocol
else:
    _Base = object


def refusal(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, with an OperationOutcome like every error."""
    body = orjson.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "too-costly" if status == 431 else "timeout", "diagnostics": message}]})
    head = (f"HTTP/1.1 {status} ".encode() + REASONS[status] + b"\r\ncontent-type: application/fhir+json\r\n"
            + f"content-length: {len(body)}\r\n".encode() + b"connection: close\r\n\r\n")
    return head + body


class HeadLimits(_Base):
    """What is added to uvicorn's protocol class (h11 or httptools).

    Size: the bytes that can only be a request head — everything received while no request is open or
    after the open request's body is complete — are counted up to the blank line that ends the head,
    before the parser sees them. A head over `max_head_bytes` is answered 431 without being parsed, and
    a body (not counted) is never mistaken for a head.

    Time: a head is pending from the opening of the connection, and again from the end of each response,
    until the parser has the next request's head; `head_timeout_s` after that, 408 and closed.
    """

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, max_head_bytes: int,
                 head_timeout_s: float) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes = max_head_bytes
        self.head_timeout_s = head_timeout_s
        self.head_bytes = 0  # of the head being received, before this read
        self.head_tail = b""  # its last 3 bytes: the blank line may be split across two reads
        self.head_timer: asyncio.TimerHandle | None = None
        self.refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_pending()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # lingering after a refusal: what the client still sends is dropped unparsed
        in_head = self.cycle is None or not self.cycle.more_body  # these bytes begin or continue a head
        if in_head and self._head_size_after(data) > self.max_head_bytes:
            log.info("request head too large: refused", extra={"limit_bytes": self.max_head_bytes})
            self._refuse(431, f"request head over {self.max_head_bytes} bytes")
            return
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # the parser has a complete head: a request is running
            self._head_done()

    def _head_size_after(self, data: bytes) -> int:
        """The size of the pending head with `data`: up to its blank line if `data` has it, else all."""
        seen = self.head_tail + data
        end = seen.find(b"\r\n\r\n")
        if end < 0:
            self.head_bytes += len(data)
            self.head_tail = seen[-3:]
            return self.head_bytes
        size = self.head_bytes + end + 4 - len(self.head_tail)
        self.head_bytes, self.head_tail = 0, b""  # a pipelined head after this one counts from the next read
        return size

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # pending unless a pipelined request (whose head the parser already had) is now running
        if self.cycle.response_complete and not self.transport.is_closing():
            self._head_pending()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown closes an idle connection; over TLS that close waits for the client's
        close_notify (asyncio: up to 30 s), which a kept-alive client sends only when it next uses the
        connection — so the shutdown would wait the whole AXIOM_SHUTDOWN_GRACE_S. Idle, nothing is lost
        by dropping it at once (docs/service.md "Shutdown")."""
        idle = self.cycle is None or self.cycle.response_complete
        super().shutdown()
        if idle and self.transport.get_extra_info("sslcontext") is not None:
            self.transport.abort()

    def _head_pending(self) -> None:
        """Start the head's clock (its bytes may have been counted already, behind a running request)."""
        self._stop_timer()
        self.head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _head_done(self) -> None:
        self.head_bytes, self.head_tail = 0, b""
        self._stop_timer()

    def _stop_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if not self.transport.is_closing():
            log.info("request head not complete in time: closed", extra={"timeout_s": self.head_timeout_s})
            self._refuse(408, f"request head not complete within {self.head_timeout_s:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """Answer and close. Closing a socket with unread input resets it, and the client may lose the
        answer: so stop sending, drop the input for a moment, then close."""
        self._head_done()
        self.refused = True
        self.transport.write(refusal(status, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


class GuardedH11Protocol(HeadLimits, H11Protocol):
    """uvicorn's h11 protocol with head limits (its own size limit is set to the same value)."""


def protocol_class() -> type[HeadLimits]:
    """The parser uvicorn's "auto" would choose (httptools when installed, else h11), with head limits."""
    if importlib.util.find_spec("httptools") is None:
        return GuardedH11Protocol
    from .protocol_httptools import GuardedHttpToolsProtocol  # noqa: PLC0415 (imports httptools)
    return GuardedHttpToolsProtocol


def uvicorn_limits(settings: Settings, protocol: type[HeadLimits] | None = None) -> dict[str, Any]:
    """uvicorn options for every way the service is served (`serve`, `sandbox`, the tests' service).

    `http` is the protocol class bound to the limits (a partial of an importable class: worker processes
    receive it pickled)."""
    max_head = int(settings.max_header_kb * 1024)
    bound = functools.partial(protocol or protocol_class(), max_head_bytes=max_head,
                              head_timeout_s=settings.header_timeout_s)
    # ws "none": the service has no WebSocket endpoint, so an upgrade request is not handed to one
    return {"http": cast(type[asyncio.Protocol], bound), "h11_max_incomplete_event_size": max_head, "ws": "none"}
