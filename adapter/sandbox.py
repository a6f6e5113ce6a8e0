"""`axiom-cds sandbox`: a FHIR server with the demo patients plus the CDS Hooks service, on 127.0.0.1.

What an integrator needs before wiring an EHR: a real FHIR R4 server (sekmet-fhir) holding patients
whose verdicts are known, the service reading it through `fhirServer` (the path an EHR without
prefetch takes), and hook calls to copy. `--check` runs two of those calls itself and verifies the
verdicts, so `make demo` shows real cards and terminates. Both servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shlex
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import uvicorn

from .cds.app import SERVICE_ID, create_app
from .cds.protocol import uvicorn_limits
from .cds.settings import Settings
from .fhir_sandbox import FhirSandboxError, post_transaction, running_server, to_transaction
from .logs import bound_values
from .report.card import NEEDS, NOT_MET_HEADING, OVERALL_TEXT
from .synth.generator import Case, scenario_cases

DEFAULT_FHIR_PORT = 8090
DEFAULT_PORT = 8080
SERVICE_START_TIMEOUT_S = 30.0
SERVICE_STOP_TIMEOUT_S = 10.0
HOOK_TIMEOUT_S = 30.0
PUBLIC_SANDBOX = "https://sandbox.cds-hooks.org/"
USER_ID = "Practitioner/sandbox-clinician"
# Browser pages the sandbox lets call it (CORS): the public CDS Hooks sandbox, and any page served on this
# machine (a CDS Hooks sandbox built locally, on any port). `serve` allows none unless configured.
SANDBOX_CORS_ORIGINS = ["https://sandbox.cds-hooks.org"]
SANDBOX_CORS_ORIGIN_REGEX = r"https?://(localhost|127\.0\.0\.1)(:\d+)?"

Echo = Callable[[str], None]


class SandboxError(RuntimeError):
    """The sandbox could not start (port taken, service failed); one line for the user."""


@dataclass(frozen=True)
class Example:
    """A demo patient whose hook call the sandbox prints (and `--check` runs), and what its card must say."""

    scenario: str
    label: str
    summary_must_contain: tuple[str, ...]


EXAMPLES = (
    Example("asps-likely-eligible", "likely eligible", (OVERALL_TEXT["likely-eligible"],)),
    Example("asps-low-platelets-not-eligible", "not eligible: platelets 85 K/uL",
            (OVERALL_TEXT["not-eligible"], "platelets")),
)


@dataclass(frozen=True)
class SandboxOptions:
    directory: Path
    as_of: date
    fhir_port: int | None = None  # None: 8090, or a free port with --check
    port: int | None = None  # None: 8080, or a free port with --check
    check: bool = False
    keep_data: bool = False


def patient_id(case: Case) -> str:
    for entry in case.bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            return str(resource["id"])
    raise ValueError(f"{case.name} has no Patient")


def hook_body(patient: str, fhir_server: str) -> dict[str, Any]:
    """A patient-view request with `fhirServer` and no prefetch: the service must read the server."""
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir_server,
            "context": {"userId": USER_ID, "patientId": patient}}


def load_demo_patients(base_url: str, as_of: date | None = None, wait_s: float = 0.0) -> list[Case]:
    """PUT every demo patient into the FHIR server at `base_url` (one transaction each, ids kept).

    `wait_s`: how long to wait for the server to answer /metadata first (a container still starting;
    docker/compose.yaml uses this with HAPI FHIR).
    """
    cases = scenario_cases(as_of or date.today())
    with httpx.Client(timeout=60.0, trust_env=False) as http:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if http.get(f"{base_url}/metadata", timeout=5.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise FhirSandboxError(f"the FHIR server at {base_url} does not answer /metadata")
            time.sleep(2.0)
        for case in cases:
            post_transaction(http, base_url, to_transaction(case.bundle), f"accept the demo patient {case.name}")
    return cases


def sandbox_settings(**values: Any) -> Settings:
    """The service's settings in the sandbox: `values`, the environment, and the sandbox's CORS origins
    unless AXIOM_CORS_ORIGINS / AXIOM_CORS_ORIGIN_REGEX (or the AXIOM_CONFIG file) set others."""
    settings = Settings(**values)
    defaults = {"cors_origins": list(SANDBOX_CORS_ORIGINS), "cors_origin_regex": SANDBOX_CORS_ORIGIN_REGEX}
    return settings.model_copy(update={k: v for k, v in defaults.items() if k not in settings.model_fields_set})


def bind(port: int) -> socket.socket:
    """A socket bound to 127.0.0.1:port for the service (port 0: any free port); a clear error if taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SandboxError(f"127.0.0.1:{port} is already in use (another sandbox?): stop it or choose "
                               "another --port") from None
        raise
    return sock


@contextlib.contextmanager
def serving(settings: Settings, sock: socket.socket) -> Iterator[uvicorn.Server]:
    """Run the service (uvicorn, the app factory's app) in a thread, until the block ends.

    A thread, not the main thread: uvicorn then installs no signal handlers, so the sandbox decides
    the shutdown order (service first, then the FHIR server) on Ctrl-C or SIGTERM.
    """
    config = uvicorn.Config(create_app(settings), log_level="warning", access_log=False, lifespan="on",
                            **uvicorn_limits(settings))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="axiom-cds service",
                              daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive():
                raise SandboxError("the CDS Hooks service did not start (see the log above)")
            if time.monotonic() > deadline:
                raise SandboxError(f"the CDS Hooks service did not start within {SERVICE_START_TIMEOUT_S:g} s")
            time.sleep(0.02)
        yield server
    finally:
        server.should_exit = True
        thread.join(SERVICE_STOP_TIMEOUT_S)
        if thread.is_alive():
            server.force_exit = True
            thread.join(SERVICE_STOP_TIMEOUT_S)
        sock.close()


def wait_for_stop(alive: Callable[[], str | None]) -> str:
    """Block until SIGINT/SIGTERM, or until `alive()` names a server that died; say which."""
    stop = threading.Event()
    received: list[str] = []

    def handler(signum: int, _: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            dead = alive()
            if dead:
                return f"{dead} stopped unexpectedly"
        return received[0]
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class HookResult:
    ok: bool
    line: str


def run_example(http: httpx.Client, service_url: str, example: Example, body_path: Path,
                expected: str | None) -> HookResult:
    """POST one saved hook body and check the card against what the demo patient was designed to get."""
    started = time.perf_counter()
    try:
        response = http.post(service_url, content=body_path.read_bytes(),
                             headers={"Content-Type": "application/json"})
    except httpx.HTTPError as exc:
        return HookResult(False, f"no answer from the service ({type(exc).__name__})")
    ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        return HookResult(False, f"HTTP {response.status_code} in {ms:.0f} ms: {response.text[:300]}")
    cards = response.json().get("cards") or []
    if len(cards) != 1:
        return HookResult(False, f"HTTP 200 in {ms:.0f} ms but {len(cards)} cards (expected 1, {expected})")
    card = cards[0]
    summary = str(card.get("summary", ""))
    suggestions = ", ".join(str(s.get("label")) for s in card.get("suggestions") or ())
    ok = all(text in summary for text in example.summary_must_contain)
    verdict = "OK" if ok else f"UNEXPECTED (wanted {' + '.join(example.summary_must_contain)!r})"
    lines = [f"HTTP 200 in {ms:.0f} ms, card: \"{summary}\"  [{verdict}]"]
    lines += [f"      not met: {row}" for row in failed_rows(str(card.get("detail", "")))]
    if suggestions:
        lines.append(f"      suggestions: {suggestions}")
    return HookResult(ok, "\n".join(lines))


def failed_rows(detail: str) -> list[str]:
    """'criterion: patient value (requirement)' for each item of the card's "Not met" list."""
    rows = []
    section = None
    for line in detail.splitlines():
        if line.startswith("**"):
            section = line
        elif section == NOT_MET_HEADING and line.startswith("- **") and ":** " in line and NEEDS in line:
            name, rest = line[4:].split(":** ", 1)
            shown, requirement = rest.rsplit(NEEDS, 1)
            rows.append(f"{name}: {shown.split(' — ')[0]} (required {requirement})")  # the value, not its note
    return rows


def _curl(service_url: str, body_path: Path) -> str:
    return (f"curl -s {shlex.quote(service_url)} -H 'Content-Type: application/json' "
            f"--data @{shlex.quote(str(body_path))}")


def _interrupt(signum: int, _: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_sandbox(opts: SandboxOptions, echo: Echo) -> int:
    """Start both servers, load the demo patients, print how to use them; then check or wait.

    Returns the exit status: 0, or 1 when `--check` got an unexpected card. Raises SandboxError or
    FhirSandboxError when a server cannot start. SIGTERM during start-up unwinds like Ctrl-C, so the
    FHIR server (in its own session, out of reach of the terminal's Ctrl-C) is always stopped.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        return _run(opts, echo)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _run(opts: SandboxOptions, echo: Echo) -> int:
    root = opts.directory / "check" if opts.check else opts.directory
    if opts.check:
        shutil.rmtree(root, ignore_errors=True)  # a check always starts from nothing
    hooks_dir = root / "hooks"
    hooks_dir.mkdir(parents=True, exist_ok=True)
    db_path = feedback_database(root, opts.keep_data)
    fhir_port = opts.fhir_port if opts.fhir_port is not None else (None if opts.check else DEFAULT_FHIR_PORT)
    sock = bind(opts.port if opts.port is not None else (0 if opts.check else DEFAULT_PORT))
    port = int(sock.getsockname()[1])
    base = f"http://127.0.0.1:{port}"
    discovery_url = f"{base}/cds-services"
    service_url = f"{discovery_url}/{SERVICE_ID}"
    try:
        with running_server(root / "fhir", fhir_port, keep_data=opts.keep_data) as fhir:
            cases = load_demo_patients(fhir.base_url, opts.as_of)
            by_name = {c.name: c for c in cases}
            bodies: dict[str, Path] = {}
            for example in EXAMPLES:
                path = hooks_dir / f"{example.scenario}.json"
                path.write_bytes(orjson.dumps(hook_body(patient_id(by_name[example.scenario]), fhir.base_url),
                                              option=orjson.OPT_INDENT_2))
                bodies[example.scenario] = path
            # --no-auth: the sandbox's example calls carry no JWT; it listens on 127.0.0.1 only
            settings = sandbox_settings(host="127.0.0.1", port=port, as_of=opts.as_of, auth_required=False,
                                        database_url=f"sqlite:///{db_path.resolve()}")
            with serving(settings, sock):
                _describe(echo, opts, discovery_url, fhir.base_url, fhir.workdir, db_path, cases)
                if opts.check:
                    return _check(echo, service_url, bodies, by_name)
                _print_examples(echo, service_url, bodies, discovery_url, fhir.base_url, by_name)
                echo("\nRunning: each hook is logged below. Ctrl-C stops the service, then the FHIR server.")
                _log_hooks()
                reason = wait_for_stop(lambda: None if fhir.running() else "the FHIR server")
                echo(f"\n{reason}: stopping the service and the FHIR server …")
    finally:
        sock.close()
    echo("stopped.")
    return 0


def feedback_database(root: Path, keep: bool) -> Path:
    """The sandbox's database, emptied like its FHIR data unless `keep`: a card dismissed in an earlier
    session would otherwise stay hidden (alert-fatigue suppression) in this one."""
    if not keep:
        for old in root.glob("axiom-cds.db*"):  # the file and its WAL / shared-memory companions
            old.unlink()
    return root / "axiom-cds.db"


class HookLine(logging.Formatter):
    """A log record as one readable line: the message and the fields a sandbox user wants to see."""

    FIELDS = ("verdict", "cohort", "cards", "fhir_calls", "fhir_failed", "total_ms", "status", "reason", "items")

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={getattr(record, k)}" for k in self.FIELDS if getattr(record, k, None) is not None)
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.getMessage()} {fields}".rstrip()
        if getattr(record, "suppressed", False):
            line += " (no card: this patient's card was overridden recently; see AXIOM_SUPPRESS_DAYS)"
        return line


def _log_hooks() -> None:
    """Show the service's one line per hook (ids, verdict, timings; never clinical values) on stderr."""
    handler = logging.StreamHandler()
    handler.addFilter(bound_values())
    handler.addFilter(lambda record: record.name != "axiom_cds.access")  # one line per hook, not per request
    handler.setFormatter(HookLine())
    logger = logging.getLogger("axiom_cds")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _describe(echo: Echo, opts: SandboxOptions, discovery_url: str, fhir_base: str, fhir_dir: Path,
              db_path: Path, cases: list[Case]) -> None:
    kind = "sandbox check (temporary ports; stops when done)" if opts.check else "sandbox"
    echo(f"AXIOM eligibility CDS Hooks {kind}, evaluation date {opts.as_of.isoformat()}\n")
    echo(f"  CDS Hooks discovery   {discovery_url}")
    echo(f"  FHIR R4 server        {fhir_base}   (sekmet-fhir; data in {fhir_dir / 'data'})")
    echo(f"  feedback store        {db_path}")
    echo("  authentication        OFF (--no-auth): 127.0.0.1 only, synthetic patients only\n")
    echo(f"Demo patients on the FHIR server ({len(cases)}), each designed for one verdict:")
    width = max(len(patient_id(c)) for c in cases)
    for case in cases:
        verdict = case.expected_overall or "-"
        note = " (no card: no sarcoma)" if verdict == "not-applicable" else ""
        echo(f"  {patient_id(case):<{width}}  {verdict}{note}")


def _print_examples(echo: Echo, service_url: str, bodies: dict[str, Path], discovery_url: str, fhir_base: str,
                    by_name: dict[str, Case]) -> None:
    echo("\nExample hook calls (fhirServer, no prefetch: the service reads the FHIR server itself):")
    for example in EXAMPLES:
        echo(f"  # {patient_id(by_name[example.scenario])}: expect {example.label}")
        echo(f"  {_curl(service_url, bodies[example.scenario])}")
    first = patient_id(by_name[EXAMPLES[0].scenario])
    public = PUBLIC_SANDBOX + "?" + urlencode({"fhirServiceUrl": fhir_base, "patientId": first,
                                               "serviceDiscoveryURL": discovery_url})
    echo("\nFrom a browser (CORS allows https://sandbox.cds-hooks.org and any localhost / 127.0.0.1 port; "
         "AXIOM_CORS_ORIGINS='[\"https://…\"]' replaces the first, AXIOM_CORS_ORIGIN_REGEX the second):")
    echo(f"  public CDS Hooks sandbox:  {public}")
    echo(f"  or any client: discovery URL {discovery_url}, FHIR server {fhir_base}, a patient id above")
    echo("  (the browser calls 127.0.0.1 itself; it may ask to allow access to local network devices)")


def _check(echo: Echo, service_url: str, bodies: dict[str, Path], by_name: dict[str, Case]) -> int:
    echo("\nCalling the service as an EHR without prefetch would (fhirServer only):")
    failures = 0
    with httpx.Client(timeout=HOOK_TIMEOUT_S, trust_env=False) as http:
        for example in EXAMPLES:
            case = by_name[example.scenario]
            echo(f"  Patient/{patient_id(case)} (designed: {case.expected_overall})")
            result = run_example(http, service_url, example, bodies[example.scenario], case.expected_overall)
            echo(f"    {result.line}")
            failures += not result.ok
    if failures:
        echo(f"\nsandbox check FAILED: {failures} of {len(EXAMPLES)} cards are not the expected verdict")
        return 1
    echo(f"\nsandbox check passed: {len(EXAMPLES)} cards with the expected verdicts. "
         "`make sandbox` keeps both servers running (ports 8080 and 8090) and prints calls to try.")
    return 0
