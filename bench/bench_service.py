"""Benchmark: the CDS Hooks service over HTTP, against baselines measured in the same run.

(a) patient-view with the full prefetch of the realistic record vs a bare FastAPI endpoint that only
    parses the same body (orjson.loads, a whole parse; the service reads the prefetch lazily, see
    adapter/fhir/wire.py): same uvicorn settings (1 worker, gc tuning), same client, sequential.
    Target: p50 and p99 within 1.5x.
(b) patient-view without prefetch (fhirServer = sekmet-fhir holding the realistic record) vs the slowest
    single FHIR request chain the hook makes (each search with its pages, and the Patient read, timed
    alone with the service's own aiohttp client code, interleaved with the hooks). Target: p50 within
    1.3x. Also the FHIR requests and TCP connections per hook, counted by a proxy in front of the server.
(c) throughput: 32 concurrent clients for --duration s against patient-view with the full prefetch of a
    typical patient (tests/fixtures/asps-likely-eligible.json), and the bare endpoint with the same body.

Everything listens on 127.0.0.1; servers are subprocesses started and stopped here. Ratios only mean
something within one run (2 noisy cores: ±30 %). Nothing is asserted.

    .venv/bin/python bench/bench_service.py [--requests 300] [--fetch-requests 60] [--duration 30] [--only a,b,c]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
from fastapi import FastAPI, Request, Response

from adapter.engine import fhir_wanted
from adapter.fhir.client import SessionClient, read_patient, search_all
from adapter.fhir.gather import merge_searches
from adapter.fhir.queries import PATIENT_KEY, Search, searches
from adapter.fhir.sessions import SessionPool
from adapter.fhir_sandbox import free_port, running_server
from adapter.synth.realistic import realistic_bundle
from adapter.trials import load_trial as trial

AS_OF = date(2026, 11, 21)  # the fixtures' evaluation date
ROOT = Path(__file__).resolve().parents[1]
TYPICAL = ROOT / "tests" / "fixtures" / "asps-likely-eligible.json"
HOOK_PATH = "/cds-services/axiom-eligibility"
JSON_HEADERS = {"Content-Type": "application/json"}
WARM_UP = 5
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=60)
Json = dict[str, Any]


# --------------------------------------------------------------------------- the servers (subprocesses)


def bare_app() -> FastAPI:
    """The baseline: what any FastAPI endpoint taking this body must do — read it and parse it."""
    app = FastAPI()

    @app.post(HOOK_PATH)
    async def invoke(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(orjson.dumps({"cards": []}), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app


def serve(kind: str, port: int, db: str) -> None:
    """Child process: one uvicorn worker, the same settings for both kinds."""
    import uvicorn

    from adapter.cds.app import create_app
    from adapter.cds.settings import Settings

    settings = Settings(as_of=AS_OF, database_url=f"sqlite:///{db}", log_level="WARNING", auth_required=False)
    if kind == "hook":
        app = create_app(settings)  # applies the gc tuning in its lifespan when settings.gc_tuning
    else:
        app = bare_app()
        if settings.gc_tuning:  # the same three calls as adapter/cds/app.py's lifespan
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 20)
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False)


@dataclass
class Server:
    kind: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def server_process(kind: str, workdir: Path) -> Iterator[Server]:
    """Start `serve(kind)` in a fresh Python on a free port; wait for /healthz; SIGTERM it afterwards."""
    for _ in range(3):  # a free port can be taken before the child binds it
        port = free_port()
        log = workdir / f"{kind}-{port}.log"
        with log.open("wb") as fh:
            process = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port),
                                        "--db", str(workdir / f"{kind}.db")],
                                       stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        if wait_healthy(url, process):
            break
        _stop(process)
    else:
        raise RuntimeError(f"the {kind} server did not start:\n{log.read_text()[-2000:]}")
    try:
        yield Server(kind, url, process, log)
    finally:
        _stop(process)


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> bool:
    """Poll /healthz until 200; False if the process dies or the timeout passes (shared with bench_load)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(trust_env=False, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            with contextlib.suppress(httpx.TransportError):
                if http.get(f"{url}/healthz").status_code == 200:
                    return True
            time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- hook bodies


def _codings(resource: Json) -> set[str]:
    return {f"{c.get('system')}|{c.get('code')}" for c in (resource.get("code") or {}).get("coding") or ()}


def _effective(resource: Json) -> str:
    return str(resource.get("effectiveDateTime") or (resource.get("effectivePeriod") or {}).get("start") or "")


def prefetch_for(bundle: Json) -> tuple[Json, int]:
    """What an EHR sends for the discovery's prefetch templates (no date floor), from a patient's Bundle.

    Each search of adapter/fhir/queries.py selects its resources the way a server would (type, the
    `code` OR list, `_sort=-date`, `_include`d Medications) into a searchset. Returns the prefetch and
    how many resources no template selects (an EHR would not send them).
    """
    entries = bundle["entry"]
    resources = [e["resource"] for e in entries]
    full_urls = {id(e["resource"]): e.get("fullUrl") for e in entries}
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    by_ref = {f"{r['resourceType']}/{r['id']}": r for r in resources}
    prefetch: Json = {PATIENT_KEY: patient}
    used = {id(patient)}

    def entry(resource: Json, mode: str) -> Json:
        e: Json = {"resource": resource, "search": {"mode": mode}}
        if full_urls.get(id(resource)):
            e["fullUrl"] = full_urls[id(resource)]
        return e

    for search in searches(patient["id"], fhir_wanted(trial()), None):
        codes = search.params.get("code") or search.params.get("combo-code")
        wanted = set(codes.split(",")) if codes else None
        matches = [r for r in resources if r["resourceType"] == search.resource_type
                   and (wanted is None or _codings(r) & wanted)]
        if search.params.get("_sort") == "-date":
            matches.sort(key=_effective, reverse=True)
        included = []
        if "_include" in search.params:
            refs = {(r.get("medicationReference") or {}).get("reference") for r in matches}
            included = [by_ref[ref] for ref in sorted(ref for ref in refs if ref in by_ref)]
        used.update(id(r) for r in (*matches, *included))
        prefetch[search.key] = {"resourceType": "Bundle", "type": "searchset", "total": len(matches),
                                "entry": [entry(r, "match") for r in matches] + [entry(r, "include")
                                                                                 for r in included]}
    return prefetch, sum(id(r) not in used for r in resources)


def hook_request(patient_id: str, *, prefetch: Json | None = None, fhir_server: str | None = None) -> bytes:
    body: Json = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                  "context": {"userId": "Practitioner/bench", "patientId": patient_id}}
    if fhir_server is not None:
        body["fhirServer"] = fhir_server
    if prefetch is not None:
        body["prefetch"] = prefetch
    return orjson.dumps(body)


# --------------------------------------------------------------------------- measuring


def pct(values: list[float], p: int) -> float:
    """The p-th percentile (inclusive method; with 60 samples p99 is close to the maximum)."""
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def fmt(values: list[float]) -> str:
    return f"p50 {statistics.median(values):7.1f} ms   p99 {pct(values, 99):7.1f} ms"


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[float, int, bytes]:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=JSON_HEADERS) as response:
        data = await response.read()
    return (time.perf_counter() - started) * 1000, response.status, data


def summary_of(data: bytes) -> str:
    cards = orjson.loads(data).get("cards") or []
    return cards[0]["summary"] if cards else "(no card)"


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def ratio_line(name: str, ours: float, base: float, target: float) -> str:
    r = ours / base
    return f"  {name}: {r:.2f}x  (target <= {target}x: {'met' if r <= target else 'MISSED'})"


# --------------------------------------------------------------------------- (a) prefetch vs bare parse


async def bench_a(hook: Server, bare: Server, n: int) -> None:
    bundle = realistic_bundle(seed=1, as_of=AS_OF)
    prefetch, dropped = prefetch_for(bundle)
    pid = prefetch[PATIENT_KEY]["id"]
    body = hook_request(pid, prefetch=prefetch)
    sizes = ", ".join(f"{k} {len(v.get('entry') or ())}" for k, v in prefetch.items() if k != PATIENT_KEY)
    print(f"\n(a) patient-view, full prefetch of the realistic record vs a bare endpoint parsing the same body\n"
          f"  body {len(body) / 1e6:.2f} MB: patient + {sizes}\n"
          f"  ({dropped} of {len(bundle['entry'])} resources match no prefetch template and are not sent)")
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
        hook_url, bare_url = hook.url + HOOK_PATH, bare.url + HOOK_PATH
        for _ in range(WARM_UP):
            _, status, data = await post(session, hook_url, body)
            assert status == 200, data[:300]
            await post(session, bare_url, body)
        print(f"  card: {summary_of(data)}")
        hook_ms: list[float] = []
        bare_ms: list[float] = []
        for _ in range(n):  # interleaved, so drift in the machine's speed hits both alike
            ms, status, data = await post(session, bare_url, body)
            if status != 200:
                print(f"  !! bare endpoint answered {status}: {data[:200]!r}")
            bare_ms.append(ms)
            ms, status, data = await post(session, hook_url, body)
            if status != 200:
                print(f"  !! hook answered {status}: {data[:200]!r}")
            hook_ms.append(ms)
    print(f"  hook (prefetch)    {fmt(hook_ms)}   (n={n}, sequential, 1 connection)")
    print(f"  bare parse+reply   {fmt(bare_ms)}")
    print(ratio_line("p50 hook / bare", statistics.median(hook_ms), statistics.median(bare_ms), 1.5))
    print(ratio_line("p99 hook / bare", pct(hook_ms, 99), pct(bare_ms, 99), 1.5))


# --------------------------------------------------------------------------- (b) FHIR fallback vs slowest query


@dataclass
class CountingProxy:
    """A TCP proxy on 127.0.0.1 counting connections accepted and HTTP requests seen (its own thread)."""

    target_port: int
    port: int = 0
    connections: int = 0
    requests: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    REQUEST_LINE = re.compile(rb"(?:^|\r\n)(?:GET|POST|PUT|DELETE|HEAD|OPTIONS) \S+ HTTP/1\.[01]\r\n")

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool) -> None:
        tail = b""
        try:
            while data := await reader.read(65536):
                if count:  # request lines; a 40-byte tail catches one split across reads
                    window = tail + data
                    self.requests += len(self.REQUEST_LINE.findall(window)) - \
                        len(self.REQUEST_LINE.findall(tail))
                    tail = window[-40:]
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer, True), self._pipe(up_reader, writer, False))

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[CountingProxy]:
        self.port = free_port()
        self._thread = threading.Thread(target=self._run, daemon=True, name="counting proxy")
        self._thread.start()
        self._ready.wait(10)
        try:
            yield self
        finally:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


async def bench_b(hook: Server, workdir: Path, n: int) -> None:
    bundle = realistic_bundle(seed=1, as_of=AS_OF)
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    print("\n(b) patient-view without prefetch (fhirServer = sekmet-fhir with the realistic record) vs its "
          "slowest FHIR query")
    fhir_dir = workdir / "sekmet"
    with running_server(fhir_dir, free_port()) as fhir:
        started = time.perf_counter()
        fhir.load(bundle)
        print(f"  loaded {len(bundle['entry'])} resources into {fhir.base_url} in "
              f"{time.perf_counter() - started:.1f} s")
        body = hook_request(pid, fhir_server=fhir.base_url)
        pool = SessionPool()
        client = SessionClient(fhir.base_url, pool.get(fhir.base_url), None, 30.0)
        jobs: dict[str, Callable[[], Awaitable[Any]]] = {"Patient read": lambda: read_patient(client, pid)}

        def job(search: Search) -> Callable[[], Awaitable[Any]]:
            return lambda: search_all(client, search)

        plan = merge_searches(searches(pid, fhir_wanted(trial()), AS_OF))  # what the hook sends
        for search in plan:
            jobs[f"{search.resource_type} '{search.key}'"] = job(search)

        async def all_at_once() -> None:  # what the hook's gather does, without the service around it
            await asyncio.gather(*(fn() for fn in jobs.values()))

        sizes: dict[str, int] = {}
        for name, fn in jobs.items():
            result = await fn()
            sizes[name] = len(result) if isinstance(result, list) else 1
        per_query: dict[str, list[float]] = {name: [] for name in jobs}
        gathered: list[float] = []
        hook_ms: list[float] = []
        async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
            url = hook.url + HOOK_PATH
            for _ in range(3):
                _, status, data = await post(session, url, body)
                assert status == 200, data[:300]
            print(f"  card: {summary_of(data)}")
            for _ in range(n):  # interleaved, so drift in the server's speed hits the hook and its queries alike
                ms, status, data = await post(session, url, body)
                if status != 200 or b'"cards":[{' not in data:
                    print(f"  !! hook answered {status}: {data[:200]!r}")
                hook_ms.append(ms)
                for name, fn in jobs.items():
                    per_query[name] += await timed(fn, 1)
                gathered += await timed(all_at_once, 1)
        await pool.close()
    p50s = {name: statistics.median(ms) for name, ms in per_query.items()}
    slowest = max(p50s, key=lambda k: p50s[k])
    print(f"  hook (no prefetch)  p50 {statistics.median(hook_ms):7.1f} ms   p99 {pct(hook_ms, 99):7.1f} ms"
          f"   (n={n}, sequential)")
    print("  each FHIR query alone, with its pages (the service's own client code, keep-alive), between hooks:")
    for name, value in sorted(p50s.items(), key=lambda kv: -kv[1]):
        print(f"    {name:<52} p50 {value:7.1f} ms   {sizes[name]:5d} entries")
    print(f"  sum of those p50s: {sum(p50s.values()):.1f} ms; all {len(jobs)} gathered at once from this client "
          f"(the hook's fetch without the service): p50 {statistics.median(gathered):.1f} ms")
    print(ratio_line(f"p50 hook / slowest query ({slowest})", statistics.median(hook_ms), p50s[slowest], 1.3))
    print(f"  (for reference) p50 hook / all queries gathered: "
          f"{statistics.median(hook_ms) / statistics.median(gathered):.2f}x")

    # Counting: the same data behind a proxy. sekmet is restarted on the same data with the proxy's URL
    # as base_url, so its next links lead through the proxy too (timings above had no proxy in the way).
    with CountingProxy(0).running() as proxy:
        sekmet_port = free_port()
        proxy.target_port = sekmet_port
        proxy_url = f"http://127.0.0.1:{proxy.port}/fhir"
        with running_server(fhir_dir, sekmet_port, keep_data=True, base_url=proxy_url):
            body = hook_request(pid, fhir_server=proxy_url)
            async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
                url = hook.url + HOOK_PATH
                _, status, data = await post(session, url, body)
                assert status == 200 and b'"cards":[{' in data, data[:300]
                first = (proxy.requests, proxy.connections)
                hooks = 10
                for _ in range(hooks):
                    _, status, data = await post(session, url, body)
                    assert status == 200, data[:300]
                reqs = (proxy.requests - first[0]) / hooks
                conns = (proxy.connections - first[1]) / hooks
    print(f"  FHIR requests per hook: {reqs:.1f} (1 Patient read + {len(plan)} searches + next pages); first "
          f"hook {first[0]}")
    print(f"  TCP connections opened per hook: first hook {first[1]}, then {conns:.1f} per hook over {hooks} "
          "hooks (reused)")


# --------------------------------------------------------------------------- (c) throughput


async def load_run(url: str, body: bytes, clients: int, duration_s: float,
                   expect: bytes | None) -> tuple[list[float], int, list[str], float]:
    """`clients` workers posting back to back for `duration_s`: latencies, errors, error samples, seconds."""
    latencies: list[float] = []
    errors = 0
    samples: list[str] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=CLIENT_TIMEOUT) as session:
        for _ in range(WARM_UP):
            await post(session, url, body)
        deadline = time.perf_counter() + duration_s

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                try:
                    ms, status, data = await post(session, url, body)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors += 1
                    samples.append(type(exc).__name__)
                    continue
                if status != 200 or (expect is not None and expect not in data):
                    errors += 1
                    samples.append(f"{status}: {data[:120]!r}")
                else:
                    latencies.append(ms)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies, errors, samples, elapsed


async def bench_c(hook: Server, bare: Server, duration_s: float, clients: int) -> None:
    bundle = orjson.loads(TYPICAL.read_bytes())
    prefetch, _ = prefetch_for(bundle)
    body = hook_request(prefetch[PATIENT_KEY]["id"], prefetch=prefetch)
    print(f"\n(c) throughput: {clients} concurrent clients for {duration_s:g} s, full prefetch of a typical patient "
          f"({TYPICAL.name}, {len(bundle['entry'])} resources, body {len(body) / 1e3:.0f} kB)")
    results = {}
    for server, expect in ((hook, b'"cards":[{'), (bare, None)):
        lat, errors, samples, elapsed = await load_run(server.url + HOOK_PATH, body, clients, duration_s, expect)
        if not lat:
            print(f"  !!!!! the {server.kind} server answered no request successfully: {errors} errors, {samples[:3]}")
            continue
        results[server.kind] = (len(lat) + errors) / elapsed
        name = "hook" if server.kind == "hook" else "bare parse+reply"
        print(f"  {name:<17} {len(lat) / elapsed:7.1f} requests/s   p50 {statistics.median(lat):6.1f} ms   "
              f"p95 {pct(lat, 95):6.1f} ms   p99 {pct(lat, 99):6.1f} ms   errors {errors}")
        if errors:
            print(f"  !!!!! {errors} ERRORS from the {name} server (must be 0); first: {samples[:3]}")
    print(f"  hook / bare throughput: {results['hook'] / results['bare']:.2f}x")


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, workdir: Path) -> None:
    parts = set(args.only.split(","))
    with server_process("hook", workdir) as hook, server_process("bare", workdir) as bare:
        print(f"servers: hook {hook.url} (adapter.cds.app:create_app), bare {bare.url}; uvicorn, 1 worker each, "
              f"gc tuning as the service's; client: aiohttp in this process")
        if "a" in parts:
            await bench_a(hook, bare, args.requests)
        if "b" in parts:
            await bench_b(hook, workdir, args.fetch_requests)
        if "c" in parts:
            await bench_c(hook, bare, args.duration, args.clients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300,
                        help="sequential requests of each kind in (a): a p99 needs a few hundred samples")
    parser.add_argument("--fetch-requests", type=int, default=60, help="sequential hooks (and query rounds) in (b)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per server (c)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (c)")
    parser.add_argument("--only", default="a,b,c", help="which parts to run, e.g. a,c")
    parser.add_argument("--serve", choices=("hook", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.db)
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, evaluation date {AS_OF}")
    with tempfile.TemporaryDirectory(prefix="axiom-bench-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
