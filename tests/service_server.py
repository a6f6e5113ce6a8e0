"""The real CDS Hooks service over real HTTP, and a recording reverse proxy to put in front of a FHIR server.

Why run uvicorn rather than FastAPI's TestClient: the service's FHIR calls go out through aiohttp
sessions bound to the service's own event loop, its deadline is enforced on that loop, and CORS,
content types and error bodies are what a browser or an EHR really gets only over a socket. The
service runs in a background thread on 127.0.0.1 on a port the OS chose, with settings built per
test module (a temporary SQLite database, a fixed evaluation date matching the fixtures).

Why a proxy: sekmet-fhir does not tell us which headers it received, and a slow FHIR server cannot
be made from a fast one. `RecordingProxy` records method, path and Authorization of every request,
forwards it to the real server, rewrites the server's absolute URLs (`next` links) to point at the
proxy, and can delay every answer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from yarl import URL

from adapter.cds.app import create_app
from adapter.cds.protocol import uvicorn_limits
from adapter.cds.settings import Settings
from adapter.sandbox import SANDBOX_CORS_ORIGIN_REGEX, SANDBOX_CORS_ORIGINS
from adapter.store import Store

AS_OF = date(2026, 11, 21)  # the fixtures' evaluation date (tests/fixtures/README.md)
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
FORWARDED_HEADERS = ("accept", "authorization", "content-type", "prefer")


# --------------------------------------------------------------------------- the service


def service_settings(workdir: Path, **overrides: Any) -> Settings:
    """Settings for one test service: its own SQLite file, the fixtures' date, no global gc changes.

    `overrides` are Settings fields (fhir_deadline_s, fhir_request_timeout_s, suppress_days, …).
    """
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{workdir / 'cds.db'}",
        "as_of": AS_OF,
        "gc_tuning": False,  # gc.freeze() in a test process would leak into every later test
        "log_level": "WARNING",
        "auth_required": False,  # the JWT tests (tests/test_service_auth.py) turn it on
        # browser access as in `axiom-cds sandbox` (the CORS tests call it as the sandbox does); `serve`
        # allows no origin by default (tests/test_security_server.py)
        "cors_origins": SANDBOX_CORS_ORIGINS,
        "cors_origin_regex": SANDBOX_CORS_ORIGIN_REGEX,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class ServiceServer:
    """A running service: where it answers, and the settings it was started with."""

    base_url: str
    settings: Settings
    app: Any = None

    def flush_writes(self) -> None:
        """Wait for the background writer (issued cards, audit rows) to commit what it has."""
        self.app.state.service.writer.flush()

    @property
    def hook_url(self) -> str:
        return f"{self.base_url}/cds-services/axiom-eligibility"

    @property
    def feedback_url(self) -> str:
        return f"{self.hook_url}/feedback"

    @contextlib.contextmanager
    def store(self) -> Iterator[Store]:
        """The service's database, opened separately: what was really persisted, not what was answered."""
        store = Store(self.settings.database_url)
        try:
            yield store
        finally:
            store.close()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def running_service(settings: Settings) -> Iterator[ServiceServer]:
    """Serve `create_app(settings)` with uvicorn in a thread; yield once it accepts connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the OS picks a free port and we hold it: no race with other processes
    host, port = sock.getsockname()[:2]
    # log_config=None: do not reconfigure the test process's logging
    app = create_app(settings)
    # the head limits of `serve` (adapter/cds/protocol.py): every end-to-end test runs behind them
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False,
                            log_level="warning", **uvicorn_limits(settings))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"cds-service-{port}",
                              daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (server.started and _accepts(host, port)):
            if not thread.is_alive():
                raise RuntimeError("the CDS service stopped during start-up (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the CDS service did not start within {START_TIMEOUT_S:g} s")
            time.sleep(0.02)
        yield ServiceServer(f"http://{host}:{port}", settings, app)
    finally:
        server.should_exit = True  # graceful: runs the lifespan shutdown (sessions, store closed)
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            server.force_exit = True
            thread.join(STOP_TIMEOUT_S)
        sock.close()


@pytest.fixture(scope="module")
def cds_service_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServiceServer]]:
    """Start a service with given Settings overrides; every one started is stopped at the module's end."""
    with contextlib.ExitStack() as stack:

        def start(**overrides: Any) -> ServiceServer:
            settings = service_settings(tmp_path_factory.mktemp("cds-service"), **overrides)
            return stack.enter_context(running_service(settings))

        yield start


@pytest.fixture(scope="module")
def cds_service(cds_service_factory: Callable[..., ServiceServer]) -> ServiceServer:
    """The service with default settings (suppression on, 3 s FHIR deadline), one per test module."""
    return cds_service_factory()


# --------------------------------------------------------------------------- the recording proxy


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str  # path and query as received, e.g. /fhir/Observation?patient=…
    authorization: str | None


@dataclass
class RecordingProxy:
    """A reverse proxy on 127.0.0.1 in front of `upstream` (a FHIR base URL such as …/fhir).

    Its base URL has the same path as the upstream's, so only scheme, host and port change; every
    occurrence of the upstream base in a response body (absolute `next` links, fullUrls) is rewritten
    to the proxy's, so a client that follows links keeps talking to the proxy.
    """

    upstream: str
    delay_s: float = 0.0
    requests: list[ProxiedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the proxy is not running"
        up = URL(self.upstream)
        return str(up.with_host("127.0.0.1").with_port(self._server.server_address[1])).rstrip("/")

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def seen(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self.requests)

    def _record(self, request: ProxiedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    @contextlib.contextmanager
    def running(self) -> Iterator[RecordingProxy]:
        upstream = URL(self.upstream)
        origin = f"{upstream.scheme}://{upstream.host}:{upstream.port}"
        proxy = self
        http = httpx.Client(timeout=30.0, trust_env=False)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the service's aiohttp sessions expect

            def _forward(self) -> None:
                proxy._record(ProxiedRequest(self.command, self.path, self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED_HEADERS}
                if proxy.delay_s and proxy._stopping.wait(proxy.delay_s):
                    return  # shutting down: do not answer
                try:
                    upstream_response = http.request(self.command, origin + self.path, content=body,
                                                     headers=headers)
                except httpx.HTTPError:
                    self.send_error(502)
                    return
                data = upstream_response.content.replace(proxy.upstream.rstrip("/").encode(),
                                                         proxy.base_url.encode())
                self.send_response(upstream_response.status_code)
                self.send_header("Content-Type",
                                 upstream_response.headers.get("content-type", "application/fhir+json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _forward  # noqa: N815 (http.server's naming)
            do_POST = _forward  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
                pass

        class QuietServer(ThreadingHTTPServer):
            daemon_threads = True
            # socketserver's default backlog is 5: the service opens one connection per parallel search
            # (8 at once), and a dropped SYN is retried only after 1 s — longer than a test deadline
            request_queue_size = 128

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (the service's deadline) closes the socket under us

        server = QuietServer(("127.0.0.1", 0), Handler)
        self._server = server
        thread = threading.Thread(target=server.serve_forever, name="fhir-proxy", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stopping.set()
            server.shutdown()
            server.server_close()
            thread.join(STOP_TIMEOUT_S)
            http.close()
