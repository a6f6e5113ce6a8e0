"""A FHIR server that misbehaves on purpose: a reverse proxy in front of sekmet-fhir with scripted faults.

Why a real socket rather than a mock: the faults under test live below the FHIR client — a connection
reset before the status line, a body cut short of its Content-Length, a chunked body that never ends,
a Retry-After header — and only a real HTTP exchange makes aiohttp behave as it does in production.

Every request is recorded (method, resource type, path). A request whose resource type has a scripted
rule gets that rule's behaviour (for its first `times` requests, or always); everything else is
forwarded to the real server, with the server's absolute URLs rewritten to this proxy's. Requests for
`?_getpages=` are answered from pages this proxy cut itself (`hapi_pages`), the way HAPI pages.

127.0.0.1 only; every stream and delay is bounded and stops when the server stops.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
from yarl import URL

from tests.service_server import FORWARDED_HEADERS, STOP_TIMEOUT_S

Json = dict[str, Any]
FHIR_JSON = "application/fhir+json"
CHUNK = 64 * 1024
MAX_STREAM_BYTES = 64 * 1024 * 1024  # an "endless" body still ends: a test never hangs on it
PAGE_ID = "_getpages"

Behaviour = Callable[["FaultyHandler"], None]


@dataclass(frozen=True)
class SeenRequest:
    method: str
    resource: str  # first path segment after the base ("Patient", "Observation", …), or "_getpages"
    path: str  # path and query as received


@dataclass
class Rule:
    resource: str
    behaviour: Behaviour
    times: int | None  # None: every matching request
    query: str = ""  # the request's query must contain this


class FaultyHandler(BaseHTTPRequestHandler):
    """One connection; `self.proxy` is the FaultyFhirServer it belongs to (set on a subclass)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the service's aiohttp sessions expect
    proxy: FaultyFhirServer

    # ------------------------------------------------------------------ answering

    def send_body(self, status: int, body: bytes, content_type: str = FHIR_JSON,
                  headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.send_body(status, orjson.dumps(body), headers=headers)

    def upstream(self) -> tuple[int, bytes, str]:
        """The real server's answer to this request, its URLs rewritten to the proxy's."""
        headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED_HEADERS}
        response = self.proxy.http.get(self.proxy.origin + self.path, headers=headers)
        data = response.content.replace(self.proxy.upstream.rstrip("/").encode(), self.proxy.base_url.encode())
        return response.status_code, data, response.headers.get("content-type", FHIR_JSON)

    def forward(self) -> None:
        status, data, content_type = self.upstream()
        self.send_body(status, data, content_type)

    def abort(self) -> None:
        """Drop the connection with a TCP reset (SO_LINGER 0), not an orderly close."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.proxy.abort_on_close(self.connection)

    def stream(self, head: bytes, total: int, *, chunked: bool) -> None:
        """A JSON body of `total` bytes (declared, or chunked with no length), written until the client leaves."""
        self.send_response(200)
        self.send_header("Content-Type", FHIR_JSON)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(total))
        self.end_headers()
        tail = b'"}'
        sent = 0
        with contextlib.suppress(OSError):
            while sent < total and not self.proxy.stopping.is_set():
                if sent == 0:
                    piece = head
                elif total - sent <= len(tail):
                    piece = tail[len(tail) - (total - sent):]
                else:
                    piece = b"x" * min(CHUNK, total - sent - len(tail))
                sent += len(piece)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    # ------------------------------------------------------------------ dispatch

    def do_GET(self) -> None:
        resource = self.proxy.resource_of(self.path)
        self.proxy.record(SeenRequest(self.command, resource, self.path))
        if resource == PAGE_ID:
            self.proxy.serve_page(self)
            return
        rule = self.proxy.take_rule(resource, self.path)
        (rule.behaviour if rule is not None else FaultyHandler.forward)(self)

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the service opens one connection per parallel search
    aborted: set[int]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that gave up, connections we reset on purpose

    def shutdown_request(self, request: Any) -> None:
        if id(request) in self.aborted:  # no FIN before the RST: the client must see a reset
            self.aborted.discard(id(request))
            self.close_request(request)
            return
        super().shutdown_request(request)


@dataclass
class FaultyFhirServer:
    """The misbehaving server: `script` faults, `count` what arrived, `heal` to forward everything again."""

    upstream: str  # the real FHIR base URL (sekmet-fhir)
    requests: list[SeenRequest] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    pages: dict[str, list[Json]] = field(default_factory=dict)  # _getpages id → the whole result's entries
    stopping: threading.Event = field(default_factory=threading.Event)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30.0, trust_env=False))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: _QuietServer | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ for tests

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the faulty server is not running"
        return str(URL(self.upstream).with_host("127.0.0.1").with_port(self._server.server_address[1])).rstrip("/")

    @property
    def origin(self) -> str:
        up = URL(self.upstream)
        return f"{up.scheme}://{up.host}:{up.port}"

    def script(self, resource: str, behaviour: Behaviour, times: int | None = None, query: str = "") -> None:
        """Requests for `resource` ('*': any) get `behaviour`: the first `times` of them, or all."""
        with self._lock:
            self.rules.append(Rule(resource, behaviour, times, query))

    def heal(self) -> None:
        with self._lock:
            self.rules.clear()

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def seen(self) -> list[SeenRequest]:
        with self._lock:
            return list(self.requests)

    def count(self, resource: str | None = None) -> int:
        return sum(1 for r in self.seen() if resource is None or r.resource == resource)

    def by_resource(self) -> Counter[str]:
        return Counter(r.resource for r in self.seen())

    # ------------------------------------------------------------------ for the handler

    def resource_of(self, path: str) -> str:
        parts = urlsplit(path)
        if PAGE_ID in parse_qs(parts.query):
            return PAGE_ID
        base_path = URL(self.upstream).path.rstrip("/")
        rest = parts.path.removeprefix(base_path).strip("/")
        return rest.split("/")[0] if rest else ""

    def record(self, request: SeenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def take_rule(self, resource: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.resource in (resource, "*") and rule.query in path and rule.times != 0:
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    def abort_on_close(self, connection: socket.socket) -> None:
        assert self._server is not None
        self._server.aborted.add(id(connection))

    def store_pages(self, entries: list[Json]) -> str:
        page_id = uuid.uuid4().hex
        with self._lock:
            self.pages[page_id] = entries
        return page_id

    def serve_page(self, handler: FaultyHandler) -> None:
        query = parse_qs(urlsplit(handler.path).query)
        with self._lock:
            entries = self.pages.get(query[PAGE_ID][0])
        if entries is None:
            handler.send_json(410, outcome("gone", "unknown or expired page set"))
            return
        offset, size = int(query["_getpagesoffset"][0]), int(query["_count"][0])
        style = query.get("_style", ["absolute"])[0]
        handler.send_json(200, page_bundle(entries, offset, size, query[PAGE_ID][0], self.base_url, style))

    @contextlib.contextmanager
    def running(self) -> Iterator[FaultyFhirServer]:
        handler = type("Handler", (FaultyHandler,), {"proxy": self})
        server = _QuietServer(("127.0.0.1", 0), handler)
        server.aborted = set()
        self._server = server
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="faulty-fhir",
                                  daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.stopping.set()
            server.shutdown()
            server.server_close()
            thread.join(STOP_TIMEOUT_S)
            self.http.close()


# --------------------------------------------------------------------------- behaviours


def outcome(code: str, diagnostics: str) -> Json:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code,
                                                           "diagnostics": diagnostics}]}


def status(code: int, retry_after: str | None = None) -> Behaviour:
    """An error status with an OperationOutcome body (and Retry-After, if given)."""
    def behave(h: FaultyHandler) -> None:
        h.send_json(code, outcome("transient" if code >= 500 or code == 429 else "security", f"scripted {code}"),
                    headers={"Retry-After": retry_after} if retry_after is not None else None)
    return behave


def delay(seconds: float, then: Behaviour = FaultyHandler.forward) -> Behaviour:
    def behave(h: FaultyHandler) -> None:
        if not h.proxy.stopping.wait(seconds):
            then(h)
    return behave


def held(gate: threading.Event, then: Behaviour = FaultyHandler.forward, bound_s: float = 60.0) -> Behaviour:
    """A server as slow as a test needs: the answer waits until `gate` is set (at most `bound_s`, and never
    past the server's stop; then no answer at all)."""
    def behave(h: FaultyHandler) -> None:
        deadline = time.monotonic() + bound_s
        while not gate.wait(0.05):
            if h.proxy.stopping.is_set() or time.monotonic() > deadline:
                return
        then(h)
    return behave


def html_page(code: int = 200) -> Behaviour:
    """What a proxy or an SSO gateway sends instead of FHIR."""
    def behave(h: FaultyHandler) -> None:
        h.send_body(code, b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head>"
                          b"<body><h1>Down for maintenance</h1></body></html>", "text/html; charset=utf-8")
    return behave


def raw(code: int, data: bytes, content_type: str = FHIR_JSON) -> Behaviour:
    def behave(h: FaultyHandler) -> None:
        h.send_body(code, data, content_type)
    return behave


def garbage() -> Behaviour:
    def behave(h: FaultyHandler) -> None:
        h.send_body(200, bytes(range(256)) * 8)
    return behave


def not_a_resource() -> Behaviour:
    """Valid JSON that is no FHIR resource."""
    def behave(h: FaultyHandler) -> None:
        h.send_json(200, [{"patient": "someone", "value": 1}])
    return behave


def truncated() -> Behaviour:
    """The real answer cut in half, with a Content-Length that matches the cut (HTTP is fine, JSON is not)."""
    def behave(h: FaultyHandler) -> None:
        code, data, content_type = h.upstream()
        h.send_body(code, data[: len(data) // 2], content_type)
    return behave


def reset() -> Behaviour:
    """The connection is reset before a single byte of the answer."""
    return FaultyHandler.abort


def reset_mid_response() -> Behaviour:
    """Status line, headers and half the body, then a reset."""
    def behave(h: FaultyHandler) -> None:
        code, data, content_type = h.upstream()
        h.send_response(code)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[: len(data) // 2])
        h.wfile.flush()
        h.abort()
    return behave


def oversized(megabytes: float, *, chunked: bool = False) -> Behaviour:
    """A `megabytes` JSON body: declared up front, or chunked with no length (seen only while reading)."""
    total = min(int(megabytes * 1024 * 1024), MAX_STREAM_BYTES)

    def behave(h: FaultyHandler) -> None:
        h.stream(b'{"resourceType":"Bundle","type":"searchset","padding":"', total, chunked=chunked)
    return behave


def many_entries(n: int) -> Behaviour:
    """One page with `n` entries."""
    def behave(h: FaultyHandler) -> None:
        h.send_json(200, {"resourceType": "Bundle", "type": "searchset", "total": n, "entry": [
            {"fullUrl": f"{h.proxy.base_url}/Basic/b{i}", "resource": {"resourceType": "Basic", "id": f"b{i}"}}
            for i in range(n)]})
    return behave


def next_loop() -> Behaviour:
    """The real first page, whose `next` link points back at itself."""
    def behave(h: FaultyHandler) -> None:
        _, data, _ = h.upstream()
        bundle = orjson.loads(data)
        bundle["link"] = [{"relation": "self", "url": h.proxy.base_url + h.path.removeprefix(
            URL(h.proxy.upstream).path.rstrip("/"))}]
        bundle["link"].append({"relation": "next", "url": bundle["link"][0]["url"]})
        h.send_json(200, bundle)
    return behave


def endless_pages() -> Behaviour:
    """Empty pages, each with a `next` link to a new page, for ever."""
    def behave(h: FaultyHandler) -> None:
        page = int(parse_qs(urlsplit(h.path).query).get("_page", ["0"])[0])
        base = h.proxy.base_url + urlsplit(h.path).path.removeprefix(URL(h.proxy.upstream).path.rstrip("/"))
        h.send_json(200, {"resourceType": "Bundle", "type": "searchset", "link": [
            {"relation": "next", "url": f"{base}?patient=x&_page={page + 1}"}]})
    return behave


def hapi_pages(size: int, style: str = "absolute") -> Behaviour:
    """The real result, cut into pages of `size` linked the HAPI way: `{base}?_getpages=…` (absolute)
    or `?_getpages=…` (relative to the base)."""
    def behave(h: FaultyHandler) -> None:
        code, data, _ = h.upstream()
        bundle = orjson.loads(data)
        if code != 200 or (bundle.get("link") and any(link["relation"] == "next" for link in bundle["link"])):
            raise AssertionError("hapi_pages needs a search that fits one upstream page")
        entries = bundle.get("entry", [])
        h.send_json(200, page_bundle(entries, 0, size, h.proxy.store_pages(entries), h.proxy.base_url, style))
    return behave


def page_bundle(entries: list[Json], offset: int, size: int, page_id: str, base_url: str, style: str) -> Json:
    bundle: Json = {"resourceType": "Bundle", "type": "searchset", "total": len(entries),
                    "entry": entries[offset: offset + size]}
    if offset + size < len(entries):
        query = (f"?{PAGE_ID}={page_id}&_getpagesoffset={offset + size}&_count={size}&_bundletype=searchset"
                 f"&_style={style}")
        bundle["link"] = [{"relation": "next", "url": query if style == "relative" else base_url + query}]
    return bundle
