"""Start a real FHIR R4 server (sekmet-fhir) on 127.0.0.1 and load patients into it.

One launcher for the tests' `fhir_server` fixture, the local sandbox (`axiom-cds sandbox`) and the
service benchmark, so all three run the server the same way (shared/reference/fhir-test-server.md):
127.0.0.1 only, `base_url` with the exact port clients use (next links are absolute), a data dir we
own, the order simulator off. sekmet-fhir is a development dependency (`pip install -e '.[dev]'`);
production talks to the EHR's server and never imports this module.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it
LOG_TAIL_LINES = 40
# sekmet reads these from the environment over settings.yaml; a developer's shell must not redirect us
SEKMET_ENV = ("SEKMET_CONFIG", "SEKMET_BASE_URL", "SEKMET_DB", "SEKMET_PUBLIC_URL", "SEKMET_PORT")
Resource = dict[str, Any]


class FhirSandboxError(RuntimeError):
    """The FHIR server could not be started or refused our data; the message says what to do."""


class ServerExitedError(FhirSandboxError):
    """sekmet stopped before answering (for example, the port was taken): worth another try."""


def sekmet_executable() -> Path:
    """The `sekmet` console script beside the running Python (any venv), else on PATH."""
    name = "sekmet.exe" if os.name == "nt" else "sekmet"
    path = Path(sys.executable).parent / name
    if path.exists():
        return path
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FhirSandboxError(f"{path} not found: install the dev extras (pip install -e '.[dev]') to get "
                           "sekmet-fhir, the local FHIR server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Can a server listen on 127.0.0.1:port? (SO_REUSEADDR, as servers bind: TIME_WAIT does not count.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def to_transaction(bundle: Resource) -> Resource:
    """Any Bundle → a transaction of `PUT Type/id`, so the server keeps our ids and reports stay citable."""
    entries = []
    for i, item in enumerate(bundle.get("entry") or ()):
        resource = item.get("resource")
        if not isinstance(resource, dict):
            continue
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if not rtype or not rid:
            raise ValueError(f"entry {i}: a resource needs resourceType and id to be PUT "
                             f"(got {rtype!r}/{rid!r})")
        entry: Resource = {"resource": resource, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}
        if isinstance(item.get("fullUrl"), str):
            entry["fullUrl"] = item["fullUrl"]  # lets the server rewrite urn:uuid references to Type/id
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _diagnostics(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    issues = body.get("issue") if isinstance(body, dict) else None
    if isinstance(issues, list):
        return "; ".join(str(i.get("diagnostics", i)) for i in issues if isinstance(i, dict))
    return response.text[:500]


def post_transaction(http: httpx.Client, base_url: str, transaction: Resource, what: str) -> None:
    response = http.post(base_url, json=transaction, headers={"Content-Type": "application/fhir+json"})
    if response.status_code != 200:
        raise FhirSandboxError(f"the FHIR server did not {what} ({response.status_code}): "
                               f"{_diagnostics(response)}")


@dataclass
class SekmetServer:
    """A running sekmet-fhir server: where it is, and how to put test data into it."""

    base_url: str
    workdir: Path
    log_path: Path
    startup_seconds: float
    _process: subprocess.Popen[bytes] = field(repr=False)
    _http: httpx.Client = field(repr=False)

    def load(self, bundle: Resource) -> None:
        """Store every resource of `bundle` under its own id, atomically (one transaction)."""
        post_transaction(self._http, self.base_url, to_transaction(bundle), "accept the bundle")

    def unload(self, bundle: Resource) -> None:
        """Delete what `load(bundle)` stored, so the next test sees a clean server."""
        entries = [{"request": {"method": "DELETE", "url": f"{r['resourceType']}/{r['id']}"}}
                   for r in (e.get("resource") for e in bundle.get("entry") or ())
                   if isinstance(r, dict) and r.get("resourceType") and r.get("id")]
        post_transaction(self._http, self.base_url,
                         {"resourceType": "Bundle", "type": "transaction", "entry": entries}, "delete the bundle")

    @contextlib.contextmanager
    def loaded(self, bundle: Resource) -> Iterator[None]:
        self.load(bundle)
        try:
            yield
        finally:
            self.unload(bundle)

    def get(self, url: str, params: dict[str, str] | None = None,
            headers: dict[str, str] | None = None) -> httpx.Response:
        """GET a path relative to base_url, or an absolute URL (a next link)."""
        target = url if url.startswith("http") else f"{self.base_url}/{url}"
        return self._http.get(target, params=params, headers=headers)

    def running(self) -> bool:
        return self._process.poll() is None

    def log_tail(self) -> str:
        return _tail(self.log_path)


def _write_settings(workdir: Path, port: int, base_url: str, name: str,
                    extra: dict[str, Any] | None = None) -> Path:
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "base_url": base_url,
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(data_dir.resolve()),
        "simulator": {"enabled": False},
        "log_inbound": False,
        "software_name": name,  # echoed by /metadata: proves the server answering is ours
        **(extra or {}),  # e.g. server_auth for a test of SMART Backend Services
    }
    path = workdir / "settings.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
    except OSError:
        return "(no log)"


def _answers_as(http: httpx.Client, url: str, name: str) -> bool:
    """True once GET /metadata is 200 and comes from our process (not another server on a reused port)."""
    try:
        response = http.get(f"{url}/metadata", timeout=1.0)
    except httpx.TransportError:
        return False
    if response.status_code != 200:
        return False
    try:
        software = response.json().get("software") or {}
    except ValueError:
        return False
    return bool(software.get("name") == name)


def _start_once(workdir: Path, port: int, base_url: str | None, http: httpx.Client,
                extra: dict[str, Any] | None = None) -> SekmetServer:
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"axiom-cds FHIR server {secrets.token_hex(8)}"
    listen_url = f"http://127.0.0.1:{port}/fhir"
    settings_path = _write_settings(workdir, port, base_url or listen_url, name, extra)
    log_path = workdir / "sekmet.log"
    env = {k: v for k, v in os.environ.items() if k not in SEKMET_ENV}
    started = time.monotonic()
    with log_path.open("wb") as log:  # the child keeps its own handle
        # its own session: a Ctrl-C in the terminal reaches us, and we stop it with SIGTERM in order
        process = subprocess.Popen([str(sekmet_executable()), "serve", "-c", str(settings_path.resolve())],
                                   cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = started + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise ServerExitedError(f"sekmet exited with status {process.returncode} before answering "
                                        f"{listen_url}/metadata; log tail:\n{_tail(log_path)}")
            if _answers_as(http, listen_url, name):
                break
            if time.monotonic() > deadline:
                raise FhirSandboxError(f"sekmet did not answer {listen_url}/metadata within "
                                       f"{START_TIMEOUT_S:g} s; log tail:\n{_tail(log_path)}")
            time.sleep(0.05)
    except BaseException:
        _stop(process)
        raise
    return SekmetServer(base_url or listen_url, workdir, log_path, time.monotonic() - started, process, http)


@contextlib.contextmanager
def running_server(workdir: Path, port: int | None = None, *, keep_data: bool = False,
                   base_url: str | None = None, settings: dict[str, Any] | None = None) -> Iterator[SekmetServer]:
    """Start sekmet-fhir with its settings, SQLite data and log under `workdir`; stop it with SIGTERM.

    `port` None: a free port, with a fresh `workdir/attempt-N` per try (tests, benchmarks). A fixed
    `port` (the sandbox) uses `workdir` itself and wipes its data first unless `keep_data`.
    `base_url`: the URL clients use when it is not the one listened on (a proxy in front of it); sekmet
    writes it into every next link. `settings`: more sekmet settings (e.g. `server_auth`).
    """
    if base_url is not None and port is None:
        raise ValueError("base_url needs a fixed port")
    with httpx.Client(timeout=30.0, trust_env=False) as http:  # no proxy for 127.0.0.1
        server: SekmetServer | None = None
        if port is not None:
            if not port_is_free(port):
                raise FhirSandboxError(f"127.0.0.1:{port} is already in use (another sandbox?): stop it or "
                                       "choose another --fhir-port")
            if not keep_data:
                shutil.rmtree(workdir / "data", ignore_errors=True)
            server = _start_once(workdir, port, base_url, http, settings)
        else:
            errors: list[str] = []
            for attempt in range(START_ATTEMPTS):
                try:
                    server = _start_once(workdir / f"attempt-{attempt}", free_port(), None, http, settings)
                    break
                except ServerExitedError as exc:
                    errors.append(str(exc))
            if server is None:
                raise FhirSandboxError("could not start the sekmet-fhir server:\n\n" + "\n\n".join(errors))
        try:
            yield server
        finally:
            _stop(server._process)
