"""`axiom-cds serve` stopped by SIGTERM or SIGINT while a hook is in flight (issue 10 item 4).

The service runs as a real process, as deployed (one worker, and two under uvicorn's supervisor); the
FHIR server is sekmet-fhir behind the scripted proxy (tests/faulty_server.py), which holds the
hook's Patient read until the test lets it go: the hook is certainly in flight when the signal
arrives, and stays so while the test checks that new connections are refused. No prefetch is sent,
so the service must fetch. Nothing asserts how fast anything happens; waits are bounded generously.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from adapter.engine import evaluate_bundle
from adapter.fhir_sandbox import free_port
from adapter.store import Store
from tests.faulty_server import FaultyFhirServer, held
from tests.fhir_server import FhirTestServer
from tests.serve_process import log_records, log_tail, serve_environment, serve_process
from tests.service_server import AS_OF

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "asps-likely-eligible.json"
GRACE_S = 30  # AXIOM_SHUTDOWN_GRACE_S here: the exit is awaited within it (plus the drain)
DRAIN_S = 8.0  # AXIOM_SHUTDOWN_DRAIN_S in the drain test: long enough to look at the service meanwhile
WAIT_S = 20.0  # bound of every other wait (start-up excepted)
pytestmark = pytest.mark.fhir_server


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    database_url: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_records(self) -> list[dict[str, Any]]:
        return log_records(self.log_path)

    def exit_status(self, bound_s: float) -> int:
        try:
            return self.process.wait(bound_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve did not exit within {bound_s:g} s:\n{self.log_tail()}") from None

    def log_tail(self) -> str:
        return log_tail(self.log_path)


@contextlib.contextmanager
def serving(workdir: Path, fhir_base: str, **extra: str) -> Iterator[Served]:
    """`axiom-cds serve --no-auth` on a free port, allowed to call `fhir_base` only, with FHIR time-outs
    far beyond the time the test holds a read (the hook must wait, not give up)."""
    port = free_port()
    database_url = f"sqlite:///{workdir / 'cds.db'}"
    env = serve_environment(port, AXIOM_DATABASE_URL=database_url, AXIOM_FHIR_SERVERS=json.dumps([fhir_base]),
                            AXIOM_FHIR_DEADLINE_S="60", AXIOM_FHIR_REQUEST_TIMEOUT_S="60",
                            AXIOM_SHUTDOWN_GRACE_S=str(GRACE_S), **extra)
    log_path = workdir / "serve.log"
    with serve_process(["--no-auth"], env, log_path, lambda: healthy(port)) as process:
        yield Served(process, port, log_path, database_url)


def healthy(port: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0).status_code == 200
    return False


def refused(port: int) -> bool:
    """A new connection is refused (not accepted, nor left queued unanswered)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0):
            return False
    except ConnectionRefusedError:
        return True


def wait_until(condition: Callable[[], bool], what: str, served: Served) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_S:g} s: {what}\n{served.log_tail()}")
        time.sleep(0.05)


@pytest.fixture
def patient(fhir_server: FhirTestServer) -> Iterator[tuple[str, str]]:
    """A likely-eligible ASPS patient of its own (a renamed fixture): (its id, the CLI's verdict)."""
    bundle = json.loads(FIXTURE.read_text())
    (old,) = [e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    new = f"shutdown-{uuid.uuid4().hex[:8]}"
    renamed = json.loads(json.dumps(bundle).replace(old, new))
    verdict = evaluate_bundle(orjson.dumps(renamed), AS_OF).overall
    with fhir_server.loaded(renamed):
        yield new, verdict


def send_hook(pool: ThreadPoolExecutor, served: Served, pid: str, fhir_base: str) -> tuple[str, Future[httpx.Response]]:
    """A patient-view hook without prefetch, sent on a new connection in the background."""
    instance = str(uuid.uuid4())
    body = {"hook": "patient-view", "hookInstance": instance, "fhirServer": fhir_base,
            "context": {"patientId": pid, "userId": "Practitioner/1"}}
    url = served.base_url + "/cds-services/axiom-eligibility"
    return instance, pool.submit(httpx.post, url, json=body, timeout=WAIT_S + GRACE_S)


def audited(database_url: str) -> dict[str, str]:
    """hookInstance → verdict of every evaluation the service wrote to its database."""
    store = Store(database_url)
    try:
        return {row["hook_instance"]: row["verdict"] for row in store.audit_rows()}
    finally:
        store.close()


def card_summary(response: httpx.Response) -> str:
    """The summary of the one card answered (it names the verdict)."""
    assert response.status_code == 200, response.text[:300]
    (card,) = response.json()["cards"]
    return str(card["summary"])


@pytest.mark.parametrize(("workers", "sig"), [(1, signal.SIGTERM), (2, signal.SIGTERM), (1, signal.SIGINT)],
                         ids=["one-worker-sigterm", "two-workers-sigterm", "one-worker-sigint"])
def test_a_hook_in_flight_is_answered_new_connections_are_refused_and_serve_exits_0(
        workers: int, sig: signal.Signals, tmp_path: Path, fhir_server: FhirTestServer,
        patient: tuple[str, str]) -> None:
    pid, verdict = patient
    gate = threading.Event()
    with FaultyFhirServer(fhir_server.base_url).running() as fhir, \
            serving(tmp_path, fhir.base_url, AXIOM_WORKERS=str(workers)) as served, \
            ThreadPoolExecutor(1) as pool:
        fhir.script("Patient", held(gate))  # every Patient read waits for the gate
        instance, answer = send_hook(pool, served, pid, fhir.base_url)
        wait_until(lambda: fhir.count("Patient") >= 1, "the service reads the Patient", served)

        served.process.send_signal(sig)
        wait_until(lambda: refused(served.port), "a new connection is refused", served)
        assert not answer.done(), "the hook cannot have been answered: its Patient read is still held"

        gate.set()
        response = answer.result(WAIT_S)
        status = served.exit_status(GRACE_S)

    assert status == 0, served.log_tail()
    assert verdict.replace("-", " ") in card_summary(response).lower()
    assert audited(served.database_url) == {instance: verdict}, "the hook's audit row was written before exit"
    messages = [r.get("event", "") for r in served.log_records()]
    closing = [i for i, m in enumerate(messages) if m.startswith("stopping: closing")]
    assert len(closing) == workers, "every worker closed its FHIR sessions and database"
    assert max(closing) > messages.index("hook evaluated"), "closed after the last hook"


def test_with_a_drain_readyz_is_503_while_hooks_are_still_answered(
        tmp_path: Path, fhir_server: FhirTestServer, patient: tuple[str, str]) -> None:
    """AXIOM_SHUTDOWN_DRAIN_S: from the signal on /readyz says 503 (a load balancer stops sending), the
    service still answers what comes meanwhile, and only after the drain refuses connections."""
    pid, verdict = patient
    gate = threading.Event()
    with FaultyFhirServer(fhir_server.base_url).running() as fhir, \
            serving(tmp_path, fhir.base_url, AXIOM_SHUTDOWN_DRAIN_S=str(DRAIN_S)) as served, \
            ThreadPoolExecutor(2) as pool:
        assert httpx.get(served.base_url + "/readyz", timeout=5.0).status_code == 200
        fhir.script("Patient", held(gate))
        _, first = send_hook(pool, served, pid, fhir.base_url)
        wait_until(lambda: fhir.count("Patient") >= 1, "the service reads the Patient", served)

        served.process.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(served.base_url + "/readyz", timeout=5.0).status_code == 503,
                   "/readyz answers 503", served)
        ready = httpx.get(served.base_url + "/readyz", timeout=5.0)
        assert ready.json()["resourceType"] == "OperationOutcome"
        assert httpx.get(served.base_url + "/healthz", timeout=5.0).status_code == 200, "alive: no restart"

        gate.set()
        assert verdict.replace("-", " ") in card_summary(first.result(WAIT_S)).lower()
        _, second = send_hook(pool, served, pid, fhir.base_url)  # a new connection, during the drain
        assert verdict.replace("-", " ") in card_summary(second.result(WAIT_S)).lower()

        wait_until(lambda: refused(served.port), "after the drain, a new connection is refused", served)
        status = served.exit_status(GRACE_S + DRAIN_S)
    assert status == 0, served.log_tail()
