"""Prometheus metrics of one service instance, served at `GET /metrics` (routes/health.py).

One registry per instance (not prometheus-client's global one): two apps in one process (the tests)
count apart. Labels are bounded and carry no patient data: a verdict and an outcome from fixed sets,
prefetch keys from the trial's own templates, FHIR servers only when allow-listed (shown without
credentials or query), issuers only when configured — any other value is counted under `other`, so a
caller cannot grow the series without limit by naming new servers or issuers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from ..fhir.breaker import CircuitBreaker
from ..fhir.client import same_server
from ..fhir.gather import MERGED, GatherStats
from ..fhir.queries import PATIENT_KEY
from ..fhir.urls import shown

__all__ = ["CONTENT_TYPE_LATEST", "OTHER", "Metrics"]

OTHER = "other"  # a server or issuer that is not configured: one label for all of them
NO_ISSUER = "none"  # authentication off: no verified issuer
BREAKER_STATES = ("closed", "half-open", "open")
# a hook's budget is a few seconds (AXIOM_FHIR_DEADLINE_S, 3 s by default): resolution below and around it
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0)


class _Breakers(Collector):
    """The breaker state of each watched server, read at scrape time: an open breaker turns half-open
    by the clock, with no hook to tell us."""

    def __init__(self) -> None:
        self.watched: dict[str, CircuitBreaker] = {}

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("axiom_fhir_breaker_state", "Circuit breaker of a FHIR server: 1 for its "
                                   "current state", labels=["server", "state"])
        for server, breaker in sorted(self.watched.items()):
            current = breaker.state
            for state in BREAKER_STATES:
                family.add_metric([server, state], 1.0 if state == current else 0.0)
        yield family


class Metrics:
    def __init__(self, servers: Iterable[str] = (), issuers: Iterable[str] = ()) -> None:
        """`servers`: the allow-listed FHIR base URLs; `issuers`: the configured JWT issuers."""
        self.registry = CollectorRegistry()
        self._servers = tuple(dict.fromkeys(shown(s).rstrip("/") for s in servers))
        self._issuers = frozenset(issuers)
        self.hooks = Counter("axiom_hooks", "patient-view hooks answered, by verdict and outcome "
                             "(card, no-card, suppressed, error-412)", ["verdict", "outcome"], registry=self.registry)
        self.hook_seconds = Histogram("axiom_hook_seconds", "Time to answer a patient-view hook",
                                      buckets=SECONDS_BUCKETS, registry=self.registry)
        self.fhir_seconds = Histogram("axiom_fhir_gather_seconds", "Time a hook spent gathering its record "
                                      "(prefetch and FHIR searches)", buckets=SECONDS_BUCKETS, registry=self.registry)
        self.fhir_requests = Counter("axiom_fhir_requests", "FHIR reads and searches a hook made (retries and "
                                     "pages inside one are not counted apart), by server and outcome (ok, error)",
                                     ["server", "outcome"], registry=self.registry)
        self.prefetch_keys = Counter("axiom_prefetch_keys", "Prefetch keys of hooks by issuer and how they came: "
                                     "prefetched, fetched (not sent), repaired (sent unusable, then fetched)",
                                     ["issuer", "key", "source"], registry=self.registry)
        self._breakers = _Breakers()
        self.registry.register(self._breakers)

    def server_label(self, url: str) -> str:
        """The allow-listed base `url` is at or under, as shown; `other` for anything else."""
        return next((base for base in self._servers if same_server(url, base)), OTHER)

    def issuer_label(self, issuer: str | None) -> str:
        if issuer is None:
            return NO_ISSUER
        return issuer if issuer in self._issuers else OTHER

    def watch_breaker(self, server: str, breaker: CircuitBreaker) -> None:
        self._breakers.watched[self.server_label(server)] = breaker

    def gathered(self, stats: GatherStats, issuer: str | None, server: str | None, patient_failed: bool) -> None:
        """One hook's gathering. `server`: the FHIR server called (None: none); `patient_failed`: the
        gathering ended without a Patient."""
        who = self.issuer_label(issuer)
        fetched = list(stats.fetched)
        if server is not None and PATIENT_KEY not in stats.prefetched:
            fetched.insert(0, PATIENT_KEY)  # read from the server (gather.py does not list it)
        repaired = set(stats.repaired)
        for key in stats.prefetched:
            self.prefetch_keys.labels(who, key, "prefetched").inc()
        for key in fetched:
            self.prefetch_keys.labels(who, key, "repaired" if key in repaired else "fetched").inc()
        if server is None:
            return
        failed = {part for key in stats.failed for part in key.split(MERGED)}
        if patient_failed:
            failed.add(PATIENT_KEY)
        label = self.server_label(server)
        for key in fetched:
            self.fhir_requests.labels(label, "error" if key in failed else "ok").inc()
        if not patient_failed:  # gather.py times only a gathering that ended with a record
            self.fhir_seconds.observe(stats.seconds)

    def hook_done(self, verdict: str, outcome: str, seconds: float) -> None:
        self.hooks.labels(verdict, outcome).inc()
        self.hook_seconds.observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
