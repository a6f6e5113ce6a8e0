"""A real FHIR R4 server (sekmet-fhir) for tests, started once per test session.

Why a real server: respx cannot mock aiohttp (which the adapter's FHIR client uses), and a mock would
only check that we send the requests we think are right. A real server checks that the searches mean
what we think they mean (token OR lists, date prefixes, paging, _include).
Setup follows shared/reference/fhir-test-server.md: 127.0.0.1 only, base_url with the exact port
(next links are absolute), a fresh data_dir, the order simulator disabled.
"""

from __future__ import annotations

import contextlib
import os
import secrets
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
import pytest
import yaml

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it
LOG_TAIL_LINES = 40
# sekmet reads these from the environment over settings.yaml; a developer's shell must not redirect us
SEKMET_ENV = ("SEKMET_CONFIG", "SEKMET_BASE_URL", "SEKMET_DB", "SEKMET_PUBLIC_URL", "SEKMET_PORT")
Resource = dict[str, Any]


class ServerExitedError(RuntimeError):
    """sekmet stopped before answering (for example, the port was taken): worth another try."""


def sekmet_executable() -> Path:
    """The `sekmet` console script of the Python running pytest (works in any fresh venv)."""
    name = "sekmet.exe" if os.name == "nt" else "sekmet"
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{path} not found: install the dev extras (pip install -e '.[dev]') "
                    "to get sekmet-fhir", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@dataclass
class FhirTestServer:
    """A running sekmet-fhir server: where it is, and how to put test data into it."""

    base_url: str
    workdir: Path
    log_path: Path
    startup_seconds: float
    _process: subprocess.Popen[bytes] = field(repr=False)
    _http: httpx.Client = field(repr=False)

    def load(self, bundle: Resource) -> None:
        """Store every resource of `bundle` under its own id, atomically (one transaction)."""
        response = self._http.post(self.base_url, json=to_transaction(bundle),
                                   headers={"Content-Type": "application/fhir+json"})
        if response.status_code != 200:
            raise RuntimeError(f"the FHIR server rejected the bundle ({response.status_code}): "
                               f"{_diagnostics(response)}")

    def unload(self, bundle: Resource) -> None:
        """Delete what `load(bundle)` stored, so the next test sees a clean server."""
        entries = [{"request": {"method": "DELETE", "url": f"{r['resourceType']}/{r['id']}"}}
                   for r in (e.get("resource") for e in bundle.get("entry") or ())
                   if isinstance(r, dict) and r.get("resourceType") and r.get("id")]
        response = self._http.post(self.base_url, json={"resourceType": "Bundle", "type": "transaction",
                                                        "entry": entries},
                                   headers={"Content-Type": "application/fhir+json"})
        if response.status_code != 200:
            raise RuntimeError(f"the FHIR server did not delete the bundle ({response.status_code}): "
                               f"{_diagnostics(response)}")

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

    def log_tail(self) -> str:
        return _tail(self.log_path)


def _write_settings(workdir: Path, port: int, name: str) -> tuple[Path, str]:
    base_url = f"http://127.0.0.1:{port}/fhir"
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "base_url": base_url,
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(data_dir),
        "simulator": {"enabled": False},
        "log_inbound": False,
        "software_name": name,  # echoed by /metadata: proves the server answering is ours
    }
    path = workdir / "settings.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path, base_url


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


def _answers_as(http: httpx.Client, base_url: str, name: str) -> bool:
    """True once GET /metadata is 200 and comes from our process (not another server on a reused port)."""
    try:
        response = http.get(f"{base_url}/metadata", timeout=1.0)
    except httpx.TransportError:
        return False
    if response.status_code != 200:
        return False
    try:
        software = response.json().get("software") or {}
    except ValueError:
        return False
    return bool(software.get("name") == name)


def _start_once(workdir: Path, http: httpx.Client) -> FhirTestServer:
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"axiom-cds test server {secrets.token_hex(8)}"
    settings_path, base_url = _write_settings(workdir, free_port(), name)
    log_path = workdir / "sekmet.log"
    env = {k: v for k, v in os.environ.items() if k not in SEKMET_ENV}
    started = time.monotonic()
    with log_path.open("wb") as log:  # the child keeps its own handle
        process = subprocess.Popen([str(sekmet_executable()), "serve", "-c", str(settings_path)],
                                   cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    deadline = started + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise ServerExitedError(f"sekmet exited with status {process.returncode} before answering "
                                        f"{base_url}/metadata; log tail:\n{_tail(log_path)}")
            if _answers_as(http, base_url, name):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"sekmet did not answer {base_url}/metadata within {START_TIMEOUT_S:g} s; "
                                   f"log tail:\n{_tail(log_path)}")
            time.sleep(0.05)
    except BaseException:
        _stop(process)
        raise
    return FhirTestServer(base_url, workdir, log_path, time.monotonic() - started, process, http)


@contextlib.contextmanager
def running_server(workdir: Path) -> Iterator[FhirTestServer]:
    """Start sekmet-fhir in `workdir` (settings, SQLite data, log), yield it, stop it with SIGTERM."""
    with httpx.Client(timeout=30.0, trust_env=False) as http:  # no proxy for 127.0.0.1
        server: FhirTestServer | None = None
        errors: list[str] = []
        for attempt in range(START_ATTEMPTS):
            try:
                server = _start_once(workdir / f"attempt-{attempt}", http)
                break
            except ServerExitedError as exc:
                errors.append(str(exc))
        if server is None:
            raise RuntimeError("could not start the sekmet-fhir test server:\n\n" + "\n\n".join(errors))
        try:
            yield server
        finally:
            _stop(server._process)


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirTestServer]:
    """One sekmet-fhir server for the whole session; tests load their own patients (unique ids)."""
    with running_server(tmp_path_factory.mktemp("sekmet")) as server:
        yield server
