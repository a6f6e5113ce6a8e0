"""Benchmark: the CDS Hooks service under sustained load, and while its FHIR server dies and comes back.

Issue 4's "Load and faults". Everything is the real thing, on 127.0.0.1 only: sekmet-fhir (the shared
launcher, adapter/fhir_sandbox.py) holding the demo patients, and `axiom-cds serve --workers 2` started
through its CLI as a subprocess, with authentication ON — every request carries a fresh ES384 JWT
signed by a key generated here and trusted through AXIOM_TRUSTED_ISSUERS (so the JWT checks and the
replay store are part of what is measured, as in production).

(1) sanity: a hook without a token is refused (401), a valid token is accepted, a replayed one refused.
(2) load: --clients simulated EHRs for --duration s, each looping over random demo patients, half the
    hooks with a full prefetch, half with fhirServer only (the service reads sekmet). Requests/s,
    latency percentiles, status codes, degraded cards, and the service's memory (RSS of the uvicorn
    parent and its workers) after warm-up and at the end: it must stay flat.
(3) faults: the same load for --fault-duration s; sekmet is SIGKILLed a third of the way in and
    restarted on the same port with the same data two thirds of the way in. Per phase: answers by
    status, latencies, requests slower than the FHIR deadline + 1 s (should be none), and when fetch
    hooks got full cards again without any help. The run is extended (at most --recovery-timeout s
    after the restart) until recovery is seen, because the service's circuit breaker may keep the
    restarted server out of use for its cool-down.

A card counts as "full" when it equals (summary and detail) the card the same hook got before any
load; anything else answered 200 is "degraded" (some search failed; the card says which). Prefetch
hooks carry fhirServer too, as an EHR sends it: a complete prefetch must not touch the FHIR server.

This prints measurements from one run on a noisy 2-core machine (the client, the service's two
workers and sekmet share it); nothing is asserted.

    .venv/bin/python bench/bench_load.py [--duration 60] [--fault-duration 40] [--clients 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
from bench_service import AS_OF, hook_request, pct, prefetch_for, wait_healthy
from cryptography.hazmat.primitives.asymmetric import ec

from adapter.cds.app import SERVICE_ID
from adapter.fhir.queries import PATIENT_KEY
from adapter.fhir_sandbox import SekmetServer, free_port, running_server
from adapter.sandbox import patient_id
from adapter.synth.generator import scenario_cases

AXIOM_CDS = Path(sys.executable).parent / "axiom-cds"
HOOK_PATH = f"/cds-services/{SERVICE_ID}"
ISSUER = "https://ehr.bench.example/axiom-load"
KID = f"bench-{uuid.uuid4().hex[:8]}"
WORKERS = 2
WARM_UP_S = 5.0
MEMORY_EVERY_S = 10.0
RECOVERY_TAIL_S = 5.0  # load kept on after the first recovered fetch hook, to see that every worker recovered
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=30)  # a hung request still ends; counted as a transport error
SERVICE_START_TIMEOUT_S = 60.0
SERVICE_STOP_TIMEOUT_S = 15.0
Json = dict[str, Any]


# --------------------------------------------------------------------------- the EHR's signing key


class Issuer:
    """The simulated EHR's identity: an ES384 key whose public half the service trusts inline."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP384R1())

    def jwks(self) -> Json:
        public = jwt.algorithms.ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": KID, "alg": "ES384", "use": "sig"}]}

    def trusted_issuers_env(self) -> str:
        """AXIOM_TRUSTED_ISSUERS: this issuer alone, with its key set inline (no JWKS fetch)."""
        return json.dumps([{"iss": ISSUER, "jwks": self.jwks(), "algorithms": ["ES384"]}])

    def token(self, audience: str) -> str:
        """A fresh token for one call: aud is the exact URL called, a new jti every time (replays are refused)."""
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": "bench-ehr", "aud": audience, "iat": now, "exp": now + 300,
                  "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self._key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})


# --------------------------------------------------------------------------- the FHIR server (killable)


class FhirServer:
    """sekmet-fhir on a fixed port and data dir, so that after a SIGKILL it can come back as it was."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self._stack = contextlib.ExitStack()
        self._server: SekmetServer | None = None
        self._closed = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self, keep_data: bool = False) -> SekmetServer:
        """Start (or restart) sekmet; from a worker thread during the fault run."""
        self._server = self._stack.enter_context(running_server(self.workdir, self.port, keep_data=keep_data))
        if self._closed:  # the benchmark was interrupted while this restart was under way: stop it again
            self._stack.close()
            raise RuntimeError("the benchmark stopped while the FHIR server was restarting")
        return self._server

    def kill(self) -> None:
        """SIGKILL sekmet's whole process group: no shutdown, no goodbye, like a crashed server.

        SekmetServer has no public handle on its process (tests never need to crash it), so this reaches
        for the private one; running_server's own clean-up then finds it dead and does nothing.
        """
        assert self._server is not None
        process = self._server._process
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # start_new_session=True: its pgid is its pid
        process.wait(timeout=10)
        self._stack.close()  # the dead server's context (and its httpx client)
        self._stack = contextlib.ExitStack()
        self._server = None

    def patients_present(self, ids: list[str]) -> int:
        """How many of `ids` the server can read (after a restart: did the data survive the SIGKILL?)."""
        assert self._server is not None
        return sum(self._server.get(f"Patient/{pid}").status_code == 200 for pid in ids)

    def close(self) -> None:
        self._closed = True
        self._stack.close()


# --------------------------------------------------------------------------- the service (the real CLI)


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def service_env(issuer: Issuer, workdir: Path, deadline_s: float, as_of: date) -> dict[str, str]:
    """The caller's environment without any AXIOM_* of a developer's shell, plus the benchmark's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AXIOM_")}
    env.update({
        "AXIOM_AS_OF": as_of.isoformat(),
        "AXIOM_DATABASE_URL": f"sqlite:///{workdir / 'axiom-cds.db'}",
        "AXIOM_TRUSTED_ISSUERS": issuer.trusted_issuers_env(),
        "AXIOM_FHIR_DEADLINE_S": f"{deadline_s:g}",
        "AXIOM_LOG_LEVEL": "WARNING",
    })
    return env


@contextlib.contextmanager
def running_service(env: dict[str, str], workdir: Path) -> Iterator[Service]:
    """`axiom-cds serve --workers 2` in its own process group, on a free port; the whole group is stopped after."""
    for attempt in range(3):  # a free port can be taken before the service binds it
        port = free_port()
        log = workdir / f"service-{attempt}.log"
        with log.open("wb") as fh:
            process = subprocess.Popen([str(AXIOM_CDS), "serve", "--workers", str(WORKERS), "--port", str(port)],
                                       env={**env, "AXIOM_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"},  # JWT aud
                                       cwd=workdir, stdout=fh, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        if wait_healthy(url, process, SERVICE_START_TIMEOUT_S):
            break
        _stop_group(process)
    else:
        raise RuntimeError(f"`axiom-cds serve` did not start:\n{log.read_text(errors='replace')[-3000:]}")
    try:
        yield Service(url, process, log)
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the uvicorn parent (it stops its workers in order); SIGKILL the whole group if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=SERVICE_STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):  # workers left behind by a parent that died
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=SERVICE_STOP_TIMEOUT_S)


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, from /proc (psutil is not a dependency)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may contain spaces
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(service: Service) -> dict[int, int]:
    """RSS in kB of the uvicorn parent and every process under it (workers, multiprocessing helpers)."""
    return {pid: rss_kb(pid) for pid in process_tree(service.process.pid)}


async def sample_memory(service: Service, every_s: float, out: list[int]) -> None:
    """Total RSS (kB) of the service every `every_s` s until cancelled: a plateau vs a steady climb."""
    while True:
        out.append(sum(memory(service).values()))
        await asyncio.sleep(every_s)


def fmt_memory(snapshot: dict[int, int], parent: int) -> str:
    parts = [f"{'parent' if pid == parent else 'pid'} {pid}: {kb / 1024:.0f} MB" for pid, kb in snapshot.items()]
    return f"{sum(snapshot.values()) / 1024:.0f} MB total ({', '.join(parts)})"


# --------------------------------------------------------------------------- hook traffic


@dataclass(frozen=True)
class Patient:
    id: str
    scenario: str
    prefetch: Json


@dataclass
class Sample:
    """One hook call as the EHR saw it; `status` 0 is a transport error (no HTTP answer)."""

    started: float  # seconds since the run began
    kind: str  # "fetch" (fhirServer only) or "prefetch"
    patient: str
    status: int
    ms: float
    full: bool = False  # 200 and the same card(s) as before any load
    error: str = ""


def fingerprint(data: bytes) -> tuple[tuple[str, str], ...]:
    """What makes two answers the same card: summary and detail (the card's uuid differs every time)."""
    return tuple((str(c.get("summary")), str(c.get("detail"))) for c in orjson.loads(data).get("cards") or ())


class Ehr:
    """What every simulated EHR client shares: the hook URL, the signing key, the patients and their cards."""

    def __init__(self, service: Service, fhir_base: str, issuer: Issuer, patients: list[Patient]) -> None:
        self.url = service.url + HOOK_PATH
        self.fhir_base = fhir_base
        self.issuer = issuer
        self.patients = patients
        self.baseline: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}

    def body(self, patient: Patient, kind: str) -> bytes:
        """A new hookInstance each call; prefetch hooks also carry fhirServer, as EHRs send it."""
        return hook_request(patient.id, prefetch=patient.prefetch if kind == "prefetch" else None,
                            fhir_server=self.fhir_base)

    async def call(self, session: aiohttp.ClientSession, patient: Patient, kind: str, t0: float) -> Sample:
        body = self.body(patient, kind)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.issuer.token(self.url)}"}
        started = time.perf_counter()
        try:
            async with session.post(self.url, data=body, headers=headers) as response:
                data = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Sample(started - t0, kind, patient.id, 0, (time.perf_counter() - started) * 1000,
                          error=type(exc).__name__)
        ms = (time.perf_counter() - started) * 1000
        sample = Sample(started - t0, kind, patient.id, response.status, ms)
        if response.status == 200:
            sample.full = fingerprint(data) == self.baseline.get((patient.id, kind))
        else:
            sample.error = data[:200].decode(errors="replace")
        return sample


def demo_patients(as_of: date) -> tuple[list[Json], list[Patient]]:
    """The sandbox's demo patients: their Bundles (for sekmet) and, for each, the prefetch an EHR would send."""
    bundles, patients = [], []
    for case in scenario_cases(as_of):
        prefetch, _ = prefetch_for(case.bundle)
        assert prefetch[PATIENT_KEY]["id"] == patient_id(case)
        bundles.append(case.bundle)
        patients.append(Patient(patient_id(case), case.name, prefetch))
    return bundles, patients


async def record_baseline(ehr: Ehr, session: aiohttp.ClientSession) -> None:
    """Each patient's card, fetched and prefetched, one call at a time before any load: the 'full' card."""
    for patient in ehr.patients:
        for kind in ("fetch", "prefetch"):
            body = ehr.body(patient, kind)
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {ehr.issuer.token(ehr.url)}"}
            async with session.post(ehr.url, data=body, headers=headers) as response:
                data = await response.read()
            if response.status != 200:
                raise RuntimeError(f"baseline {kind} hook for {patient.scenario}: {response.status} {data[:300]!r}")
            ehr.baseline[(patient.id, kind)] = fingerprint(data)
    differ = [p.scenario for p in ehr.patients if ehr.baseline[(p.id, "fetch")] != ehr.baseline[(p.id, "prefetch")]]
    print(f"  baseline cards recorded for {len(ehr.patients)} patients × (fetch, prefetch); fetched and "
          f"prefetched cards differ for {len(differ)}{': ' + ', '.join(differ) if differ else ''}")


async def sanity(ehr: Ehr, session: aiohttp.ClientSession) -> None:
    """The service really checks tokens: none → 401, ours → 200, the same one again (replay) → 401."""
    body = ehr.body(ehr.patients[0], "prefetch")
    json_only = {"Content-Type": "application/json"}
    async with session.post(ehr.url, data=body, headers=json_only) as response:
        no_token = response.status
    token = ehr.issuer.token(ehr.url)
    statuses = []
    for _ in range(2):
        async with session.post(ehr.url, data=ehr.body(ehr.patients[0], "prefetch"),
                                headers={**json_only, "Authorization": f"Bearer {token}"}) as response:
            await response.read()
            statuses.append(response.status)
    ok = (no_token, *statuses) == (401, 200, 401)
    print(f"  sanity: no token → {no_token}, fresh token → {statuses[0]}, replayed token → {statuses[1]}  "
          f"[{'as expected' if ok else 'UNEXPECTED: wanted 401, 200, 401'}]")
    if no_token != 401:
        raise RuntimeError("the service accepted a hook without a token: not the configuration to measure")


async def run_load(ehr: Ehr, clients: int, t0: float, should_stop: Callable[[float], bool],
                   on_sample: Callable[[Sample], None] | None = None, seed: int = 0) -> list[Sample]:
    """`clients` EHRs posting back to back until `should_stop(seconds since t0)`; every call's Sample.

    Each client draws patients and hook kinds (50/50) from its own seeded generator, so two runs send
    the same sequence of requests.
    """
    samples: list[Sample] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=CLIENT_TIMEOUT) as session:

        async def client(n: int) -> None:
            rng = random.Random(seed * 1000 + n)
            while not should_stop(time.perf_counter() - t0):
                sample = await ehr.call(session, rng.choice(ehr.patients), rng.choice(("fetch", "prefetch")), t0)
                samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)

        await asyncio.gather(*(client(n) for n in range(clients)))
    return samples


# --------------------------------------------------------------------------- reporting


def latency_line(ms: list[float]) -> str:
    if len(ms) < 2:
        return f"{'(too few samples)':>38}"
    return f"p50 {statistics.median(ms):7.1f}  p95 {pct(ms, 95):7.1f}  p99 {pct(ms, 99):7.1f}  max {max(ms):7.1f} ms"


def status_histogram(samples: list[Sample]) -> str:
    counts = Counter(str(s.status) if s.status else f"transport error ({s.error})" for s in samples)
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def error_examples(samples: list[Sample], limit: int = 3) -> list[str]:
    seen: dict[str, int] = {}
    for s in samples:
        if s.status != 200:
            key = f"{s.status or 'transport'} {s.kind}: {s.error[:160]}"
            seen[key] = seen.get(key, 0) + 1
    return [f"{n}× {key}" for key, n in sorted(seen.items(), key=lambda kv: -kv[1])[:limit]]


def report_load(samples: list[Sample], elapsed: float, deadline_s: float) -> None:
    errors = [s for s in samples if s.status != 200]
    degraded = [s for s in samples if s.status == 200 and not s.full]
    print(f"  {len(samples)} hooks in {elapsed:.1f} s: {len(samples) / elapsed:.1f} requests/s   "
          f"errors (not 200, or no answer): {len(errors)}   degraded 200s (card differs from baseline): "
          f"{len(degraded)}")
    print(f"  status codes: {status_histogram(samples)}")
    print(f"  all        n {len(samples):5d}  {latency_line([s.ms for s in samples])}")
    for kind in ("prefetch", "fetch"):
        of_kind = [s for s in samples if s.kind == kind]
        slow = sum(s.ms > (deadline_s + 1) * 1000 for s in of_kind)
        print(f"  {kind:<10} n {len(of_kind):5d}  {latency_line([s.ms for s in of_kind])}   "
              f"> {deadline_s + 1:g} s: {slow}")
    for line in error_examples(samples):
        print(f"  !! {line}")
    for kind in ("prefetch", "fetch"):
        bad = Counter(s.patient for s in degraded if s.kind == kind)
        if bad:
            print(f"  !! degraded {kind} cards by patient: {dict(bad.most_common(5))}")


@dataclass
class Timeline:
    """When the fault run's events happened, in seconds since the run began."""

    killed: float | None = None
    restart_begun: float | None = None
    up: float | None = None  # the restarted server answers /metadata
    recovered: float | None = None  # the first full-card fetch hook that started after `up` came back
    patients_after_restart: int | None = None
    failure: str | None = None


def phases(tl: Timeline, end: float) -> list[tuple[str, Callable[[Sample], bool]]]:
    """Named groups of requests, by when they started; the ones in flight at the kill get their own."""
    killed = tl.killed if tl.killed is not None else end
    up = tl.up if tl.up is not None else end
    recovered = tl.recovered if tl.recovered is not None else end

    def started_in(start: float, stop: float) -> Callable[[Sample], bool]:
        return lambda s: start <= s.started < stop

    return [("before kill", lambda s: s.started + s.ms / 1000 < killed),
            ("in flight at the kill", lambda s: s.started < killed <= s.started + s.ms / 1000),
            ("while down", started_in(killed, up)),
            ("restarted, not recovered", started_in(up, recovered)),
            ("after recovery", started_in(recovered, end))]


def report_fault(samples: list[Sample], tl: Timeline, end: float, deadline_s: float) -> None:
    limit_ms = (deadline_s + 1) * 1000
    print(f"  {len(samples)} hooks in {end:.1f} s; sekmet SIGKILLed at {tl.killed or float('nan'):.1f} s, restart "
          f"begun at {tl.restart_begun or float('nan'):.1f} s, answering again at {tl.up or float('nan'):.1f} s "
          f"(patients readable after restart: {tl.patients_after_restart})")
    if tl.failure:
        print(f"  !!!!! fault controller failed: {tl.failure}")
    print(f"  {'phase (by request start)':<26} {'kind':<9} {'n':>5} {'200 full':>9} {'200 degr':>9} {'412':>5} "
          f"{'other':>6}   {'p50':>7} {'p99':>7} {'max':>7} ms   > {deadline_s + 1:g} s")
    for name, belongs in phases(tl, end):
        for kind in ("prefetch", "fetch"):
            rows = [s for s in samples if s.kind == kind and belongs(s)]
            if not rows:
                print(f"  {name:<26} {kind:<9} {0:5d}")
                continue
            ms = [s.ms for s in rows]
            full = sum(s.status == 200 and s.full for s in rows)
            degraded = sum(s.status == 200 and not s.full for s in rows)
            refused = sum(s.status == 412 for s in rows)
            others = len(rows) - full - degraded - refused
            p99 = pct(ms, 99) if len(ms) > 1 else ms[0]
            print(f"  {name:<26} {kind:<9} {len(rows):5d} {full:9d} {degraded:9d} {refused:5d} {others:6d}   "
                  f"{statistics.median(ms):7.1f} {p99:7.1f} {max(ms):7.1f}      {sum(m > limit_ms for m in ms):5d}")
    slow = [s for s in samples if s.ms > limit_ms]
    print(f"  requests answered later than deadline + 1 s ({limit_ms / 1000:g} s): {len(slow)} of {len(samples)}"
          + (f"  !! slowest {max(s.ms for s in slow):.0f} ms" if slow else ""))
    other = [s for s in samples if s.status not in (200, 412)]
    if other:
        print(f"  !! answers other than 200/412: {status_histogram(other)}")
        for line in error_examples(other):
            print(f"  !! {line}")
    if tl.up is not None and tl.recovered is not None:
        after = [s for s in samples if s.kind == "fetch" and s.started >= tl.recovered]
        print(f"  recovered by itself: yes — first full-card fetch hook {tl.recovered - tl.up:.1f} s after sekmet "
              f"answered again ({tl.recovered - (tl.killed or 0):.1f} s after the kill); after it, "
              f"{sum(s.status == 200 and s.full for s in after)} of {len(after)} fetch hooks got full cards")
    elif tl.up is not None:
        print(f"  recovered by itself: NO — no full-card fetch hook within {end - tl.up:.1f} s of sekmet answering")
    down = [s for s in samples if s.kind == "prefetch" and tl.killed is not None and tl.up is not None
            and tl.killed <= s.started < tl.up]
    print(f"  prefetch hooks while sekmet was down: {sum(s.status == 200 for s in down)} of {len(down)} answered 200"
          f" ({sum(s.status == 200 and s.full for s in down)} with the full card)")


def report_service_log(log: Path) -> None:
    """What the service logged at WARNING and above, counted (the JSON log's level, logger and event)."""
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            counts[f"{entry.get('level')} {entry.get('logger')}: {entry.get('event')}"] += 1
        except (ValueError, AttributeError):
            if line.strip():
                counts[f"(not JSON) {line.strip()[:100]}"] += 1
    print(f"\nservice log ({log.name}), {sum(counts.values())} lines at WARNING and above:")
    for text, n in counts.most_common(12):
        print(f"  {n:6d}× {text[:150]}")


# --------------------------------------------------------------------------- the runs


async def load_phase(ehr: Ehr, service: Service, args: argparse.Namespace) -> None:
    print(f"\n(2) load: {args.clients} concurrent EHR clients for {args.duration:g} s, demo patients at random, "
          "prefetch / fetch 50/50")
    t0 = time.perf_counter()
    warm = await run_load(ehr, args.clients, t0, lambda t: t >= WARM_UP_S, seed=1)
    print(f"  warm-up {WARM_UP_S:g} s: {len(warm)} hooks ({status_histogram(warm)}), not counted")
    parent = service.process.pid
    before = memory(service)
    print(f"  service memory after warm-up: {fmt_memory(before, parent)}")
    series: list[int] = []
    sampler = asyncio.ensure_future(sample_memory(service, MEMORY_EVERY_S, series))
    t0 = time.perf_counter()
    try:
        samples = await run_load(ehr, args.clients, t0, lambda t: t >= args.duration, seed=2)
    finally:
        sampler.cancel()
    elapsed = time.perf_counter() - t0
    after = memory(service)
    report_load(samples, elapsed, args.deadline)
    print(f"  service memory at the end:    {fmt_memory(after, parent)}")
    ratio = sum(after.values()) / max(sum(before.values()), 1)
    print(f"  memory end / start: {ratio:.3f}" + ("" if ratio <= 1.10 else "   !! grew more than 10 %"))
    trend = " ".join(f"{kb / 1024:.0f}" for kb in series)
    print(f"  total RSS every {MEMORY_EVERY_S:g} s during the run (MB): {trend}")


async def fault_phase(ehr: Ehr, service: Service, fhir: FhirServer, ids: list[str],
                      args: argparse.Namespace) -> None:
    duration: float = args.fault_duration
    kill_at, restart_at = duration / 3, duration * 2 / 3
    print(f"\n(3) faults: the same load for {duration:g} s; sekmet SIGKILLed at ~{kill_at:.0f} s, restarted (same "
          f"port, same data) at ~{restart_at:.0f} s; deadline {args.deadline:g} s")
    tl = Timeline()
    t0 = time.perf_counter()

    def now() -> float:
        return time.perf_counter() - t0

    def on_sample(s: Sample) -> None:
        if tl.recovered is None and tl.up is not None and s.kind == "fetch" and s.started >= tl.up and s.full:
            tl.recovered = s.started + s.ms / 1000

    recovery_timeout: float = args.recovery_timeout
    hard_stop = duration + recovery_timeout + 60  # whatever happens (a restart that hangs), the run ends

    def should_stop(t: float) -> bool:
        if tl.failure is not None or t >= hard_stop:
            return t >= duration
        if t < duration:
            return False
        if tl.recovered is not None:  # seen recovering: a short tail to see every worker recovered
            return t >= max(duration, tl.recovered + RECOVERY_TAIL_S)
        return tl.up is not None and t >= tl.up + recovery_timeout

    async def controller() -> None:
        try:
            await asyncio.sleep(kill_at)
            tl.killed = now()
            await asyncio.to_thread(fhir.kill)
            await asyncio.sleep(max(0.0, restart_at - now()))
            tl.restart_begun = now()
            await asyncio.to_thread(fhir.start, True)  # same port, keep_data: the patients must still be there
            tl.up = now()
            tl.patients_after_restart = await asyncio.to_thread(fhir.patients_present, ids)
        except Exception as exc:  # the load must still end, and the report say why
            tl.failure = f"{type(exc).__name__}: {str(exc)[:500]}"

    load = asyncio.ensure_future(run_load(ehr, args.clients, t0, should_stop, on_sample, seed=3))
    await controller()
    samples = await load
    end = now()
    report_fault(samples, tl, end, args.deadline)
    print(f"  service memory after the fault run: {fmt_memory(memory(service), service.process.pid)}")


async def run(args: argparse.Namespace, workdir: Path) -> None:
    bundles, patients = demo_patients(args.as_of)
    issuer = Issuer()
    fhir = FhirServer(workdir / "sekmet")
    try:
        started = time.perf_counter()
        server = fhir.start()
        for bundle in bundles:
            server.load(bundle)
        print(f"(1) sekmet-fhir {fhir.base_url}: {len(bundles)} demo patients loaded in "
              f"{time.perf_counter() - started:.1f} s")
        env = service_env(issuer, workdir, args.deadline, args.as_of)
        with running_service(env, workdir) as service:
            tree = process_tree(service.process.pid)
            print(f"  service {service.url}: `axiom-cds serve --workers {WORKERS}` (pid {service.process.pid}, "
                  f"{len(tree)} processes), auth ON (ES384, kid {KID}), AXIOM_FHIR_DEADLINE_S={args.deadline:g}, "
                  f"evaluation date {args.as_of}")
            ehr = Ehr(service, fhir.base_url, issuer, patients)
            async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
                await sanity(ehr, session)
                await record_baseline(ehr, session)
            await load_phase(ehr, service, args)
            await fault_phase(ehr, service, fhir, [p.id for p in patients], args)
            report_service_log(service.log)
    finally:
        fhir.close()


def _interrupt(signum: int, _: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the load run (2)")
    parser.add_argument("--fault-duration", type=float, default=40.0, help="seconds of the fault run (3)")
    parser.add_argument("--recovery-timeout", type=float, default=40.0,
                        help="longest the fault run goes on after the restart, waiting for recovery (3)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent simulated EHR clients")
    parser.add_argument("--deadline", type=float, default=2.0, help="AXIOM_FHIR_DEADLINE_S for the service")
    parser.add_argument("--as-of", type=date.fromisoformat, default=AS_OF, help="evaluation date (AXIOM_AS_OF)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # unwind like Ctrl-C, so the finally blocks stop both servers
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; client, service and FHIR server share them")
    with tempfile.TemporaryDirectory(prefix="axiom-bench-load-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
