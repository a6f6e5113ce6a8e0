"""patient-view: request → record (prefetch + FHIR) → report → card, with alert-fatigue suppression."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from yarl import URL

from ..engine import evaluate_record, fhir_wanted
from ..errors import FhirServerError, InputError
from ..fhir.client import SessionClient, same_server
from ..fhir.gather import NO_SERVER, GatherStats, gather_record
from ..fhir.queries import searches
from ..fhir.sessions import SessionPool
from ..fhir.urls import shown
from ..report.card import card as make_card
from ..store import AuditRow, IssuedCard, Store
from ..store.writer import BackgroundWriter
from ..trials import load_trial
from .metrics import Metrics
from .request import HookRequest
from .settings import Settings

log = logging.getLogger("axiom_cds.hook")


@dataclass
class Service:
    """What a hook needs besides the request; built once at start-up."""

    settings: Settings
    sessions: SessionPool
    store: Store
    writer: BackgroundWriter[IssuedCard | AuditRow]
    key_secret: bytes = field(init=False, repr=False)
    metrics: Metrics = field(default_factory=Metrics)  # app.py builds it with the configured labels

    def __post_init__(self) -> None:
        self.key_secret = patient_key_secret(self.settings, self.store)

    def as_of(self) -> date:
        return self.settings.as_of or datetime.now(UTC).date()

    def patient_key(self, fhir_server: str | None, patient_id: str) -> str:
        return patient_key(self.key_secret, fhir_server, patient_id)


PATIENT_KEY_SECRET = "patient_key"  # its name in the database's deployment secrets


def patient_key_secret(settings: Settings, store: Store) -> bytes:
    """AXIOM_PATIENT_KEY_SECRET, else the deployment's own, generated at first start and kept in the
    database: stable across restarts and shared by replicas, so suppression finds earlier cards."""
    if settings.patient_key_secret is not None:
        return settings.patient_key_secret.get_secret_value().encode()
    return store.deployment_secret(PATIENT_KEY_SECRET)


def patient_key(secret: bytes, fhir_server: str | None, patient_id: str) -> str:
    """An opaque, stable key for a patient on a server: stored and logged instead of the id.

    Keyed (HMAC-SHA256): a plain hash of (server, id) is reversed by hashing candidate ids — every demo
    patient's was. Without the secret, a log line's key names nobody."""
    message = f"{fhir_server or '-'}|{patient_id}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def may_call(fhir_server: str, allowed: Sequence[str]) -> bool:
    """Whether the service may call this FHIR server: at or under an allowed base, or anything when no
    list is configured. A hook's fhirServer is the caller's choice; without a list, a trusted caller could
    make the service fetch any URL it can reach (server-side request forgery)."""
    return not allowed or any(same_server(fhir_server, base) for base in allowed)


async def patient_view(req: HookRequest, service: Service, issuer: str | None = None,
                       allowed_servers: Sequence[str] = (), review_url: str | None = None) -> dict[str, Any]:
    """The CDS Hooks response body. Raises FhirServerError (→ 412) when the Patient cannot be had.
    `review_url`: the review app's launch URL when it is set up (the card links to it)."""
    started = time.perf_counter()
    settings = service.settings
    trial = load_trial(settings.trial)
    as_of = service.as_of()
    client = None
    no_server = NO_SERVER
    if req.fhir_server is not None and not may_call(req.fhir_server, allowed_servers):
        no_server = "the hook's fhirServer is not one this service is allowed to call"
        log.warning("fhirServer not allowed: not called", extra={
            "hook_instance": req.hook_instance, "issuer": issuer, "fhir_host": URL(req.fhir_server).host})
    elif req.fhir_server is not None:
        breaker = service.sessions.breaker(req.fhir_server, settings.fhir_breaker_failures,
                                           settings.fhir_breaker_cooldown_s, settings.fhir_breaker_first_cooldown_s)
        client = SessionClient(req.fhir_server, service.sessions.get(req.fhir_server), req.access_token,
                               settings.fhir_request_timeout_s, retries=settings.fhir_retries, breaker=breaker,
                               max_response_bytes=int(settings.fhir_max_response_mb * 1024 * 1024),
                               max_entries_per_page=settings.fhir_max_entries_per_page,
                               slots=service.sessions.slots(req.fhir_server))
        service.metrics.watch_breaker(req.fhir_server, breaker)
    stats = GatherStats()
    wanted = fhir_wanted(trial)
    # server: the base absolute references must have to be this patient's, even when it is not called
    called = req.fhir_server if client is not None else None
    try:
        record = await gather_record(req.patient_id, searches(req.patient_id, wanted, as_of), req.prefetch, client,
                                     settings.fhir_deadline_s, stats, no_server, wanted=wanted, server=req.fhir_server)
    except (FhirServerError, InputError):  # no Patient: a 412 (routes/hooks.py), counted here
        service.metrics.gathered(stats, issuer, called, patient_failed=True)
        service.metrics.hook_done("none", "error-412", time.perf_counter() - started)
        raise
    service.metrics.gathered(stats, issuer, called, patient_failed=False)
    report = evaluate_record(record, as_of, settings.trial)
    key = service.patient_key(req.fhir_server, req.patient_id)
    cards: list[dict[str, Any]] = []
    issued: list[IssuedCard] = []
    suppressed = False
    shown_verdict = report.overall != "not-applicable" and (
        settings.show_not_eligible or report.overall != "not-eligible")
    if shown_verdict:
        # an indexed read; WAL readers do not wait for the writer, so it stays on the loop
        suppressed = service.store.suppressed(key, report.overall, datetime.now(UTC), settings.suppress_days)
        if not suppressed:
            card = make_card(report, suppress_days=settings.suppress_days, team=settings.study_team,
                             review_url=review_url, hook_instance=req.hook_instance)
            if card is not None:  # None for a deceased patient: no referral
                issued.append(IssuedCard(card["uuid"], key, report.overall, trial.version, datetime.now(UTC)))
                cards.append(card)
    total_ms = round((time.perf_counter() - started) * 1000)
    service.writer.submit(*issued, AuditRow(  # the server without secrets (refused in requests already)
        evaluated_at=datetime.now(UTC), issuer=issuer, hook_instance=req.hook_instance,
        fhir_server=shown(req.fhir_server) if req.fhir_server else None, patient_id=req.patient_id,
        verdict=report.overall, cohort=report.cohort,
        statuses={c.id: c.status for c in report.criteria}, trial_version=trial.version, as_of=as_of.isoformat(),
        card_shown=bool(cards), duration_ms=total_ms))
    log.info("hook evaluated", extra={
        "hook_instance": req.hook_instance, "patient_hash": key, "verdict": report.overall,
        "cohort": report.cohort, "cards": len(cards), "suppressed": suppressed,
        "prefetched": len(stats.prefetched), "fhir_calls": len(stats.fetched), "fhir_repaired": len(stats.repaired),
        "fhir_failed": len(stats.failed), "fhir_ms": round(stats.seconds * 1000), "total_ms": total_ms})
    outcome = "card" if cards else "suppressed" if suppressed else "no-card"
    service.metrics.hook_done(report.overall, outcome, time.perf_counter() - started)
    return {"cards": cards}
