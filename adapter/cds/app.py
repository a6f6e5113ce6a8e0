"""The FastAPI application, assembled: settings checked, middleware, routers, error handlers, lifespan.

Where each guarantee lives: authentication is `deps.require_caller`, attached here to every CDS Hooks
router (health stays open); the JWT audience comes from `AXIOM_PUBLIC_BASE_URL` (`issuers.auth_config`
refuses to build the app without it); errors become OperationOutcomes in `handlers.py`; body limits and
request ids in `middleware.py`; CORS in `cors.py`; the routes in `routes/`.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..engine import warm_up
from ..fhir.sessions import SessionPool
from ..logs import configure as configure_logging
from ..logs import install_request_ids
from ..review.routes import install as install_review
from ..store import Store
from ..store.writer import BackgroundWriter
from ..trials import load_trial
from .auth import Authenticator, KeySets
from .cors import add_cors
from .deps import require_caller
from .handlers import install_error_handlers
from .hook import Service
from .issuers import AuthConfig, auth_config, testing_only_warning
from .metrics import Metrics
from .middleware import GuardMiddleware
from .replay import ReplayGuard
from .routes import discovery, feedback, health, hooks
from .routes.discovery import SERVICE_ID
from .settings import Settings
from .shutdown import Stopping

__all__ = ["SERVICE_ID", "create_app", "served_app"]

log = logging.getLogger("axiom_cds")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service. ValueError when authentication is on without a trusted issuer or a public base URL."""
    settings = settings or Settings()
    install_request_ids()
    auth = auth_config(settings)
    load_trial(settings.trial)  # a broken trial definition stops the service here

    # no redirect for a trailing slash: Starlette's 307 names the Host header's server (never trusted here),
    # before any authentication, and a client following it would re-POST the prefetch there
    app = FastAPI(title="AXIOM eligibility CDS Hooks service", version=__version__, lifespan=lifespan,
                  description="CDS Hooks 2.0 service: AXIOM (NCT05333458) trial eligibility on patient-view.",
                  redirect_slashes=False)
    app.state.settings = settings
    app.state.auth_config = auth
    app.state.stopping = Stopping(settings.shutdown_drain_s)  # /readyz: 503 once SIGTERM/SIGINT arrived
    app.add_middleware(GuardMiddleware, max_body_bytes=int(settings.max_request_mb * 2**20),
                       body_timeout_s=settings.body_timeout_s)
    add_cors(app, settings)  # last added, outermost
    install_error_handlers(app)
    for router in (discovery.router, hooks.router, feedback.router):  # every CDS call: the EHR's JWT
        app.include_router(router, dependencies=[Depends(require_caller)])
    app.include_router(health.router)  # open: liveness, readiness and /metrics for orchestrators and scrapers
    install_review(app)  # the SMART review app (/review): its own auth (SMART EHR launch), not the CDS JWT
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    config: AuthConfig | None = app.state.auth_config
    warm_up(settings.trial)  # fail at start, not on the first hook, if the trial data is broken
    app.state.stopping.watch()  # under `serve`: the signal makes /readyz 503 (and starts the drain)
    # issued cards are needed while an override of them can still suppress a card: twice the period
    store = Store(settings.database_url, card_days=2 * max(settings.suppress_days, 0) + 1,
                  audit_days=settings.audit_days or None, comment_days=settings.feedback_comment_days)
    app.state.service = Service(settings, SessionPool(settings.fhir_connections_per_server), store,
                                BackgroundWriter(store.write_batch), metrics=metrics_for(settings, config))
    jwks_http = httpx.AsyncClient(timeout=5.0, follow_redirects=False)
    app.state.auth = None if config is None else Authenticator(
        list(config.issuers), KeySets(jwks_http), ReplayGuard(store).is_new, config.audience_base,
        settings.jwt_clock_skew_s, settings.jwt_max_lifetime_s)
    start_warnings(settings, config)
    if settings.gc_tuning:
        # parsing a multi-megabyte prefetch allocates enough objects to trigger repeated full
        # collections; freezing start-up objects and raising the threshold halves the latency
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
    yield
    # uvicorn runs this after the last request in flight (or after AXIOM_SHUTDOWN_GRACE_S): the pending
    # audit rows and issued cards are written, then the database closed, whatever the HTTP clients do
    log.info("stopping: closing FHIR sessions and the database")
    try:
        await jwks_http.aclose()
        await app.state.service.sessions.close()
    finally:
        await run_in_threadpool(app.state.service.writer.close)
        await run_in_threadpool(app.state.service.store.close)
        review_store = getattr(app.state, "review_store", None)  # opened by the first review app request
        if review_store is not None:
            await run_in_threadpool(review_store.close)


def metrics_for(settings: Settings, config: AuthConfig | None) -> Metrics:
    """The metrics, labelled only with the FHIR servers and issuers configured (bounded series)."""
    issuers = config.issuers if config is not None else ()
    servers = [*settings.fhir_servers, *(s for i in issuers for s in i.fhir_servers)]
    return Metrics(servers, [i.iss for i in issuers])


def start_warnings(settings: Settings, config: AuthConfig | None) -> None:
    """Configurations that work but expose the service: said in the log at every start."""
    if config is None:
        log.warning("AUTHENTICATION IS OFF (--no-auth): any caller can use this service. "
                    "Only for a local sandbox on 127.0.0.1 — never in front of real patient data.")
        return
    for issuer in config.issuers:
        if issuer.testing_only:
            log.warning(testing_only_warning(issuer), extra={"issuer": issuer.iss})
    if not settings.fhir_servers and not all(i.fhir_servers for i in config.issuers):
        log.warning("No FHIR server allow-list (AXIOM_FHIR_SERVERS): a trusted EHR's hook can make this "
                    "service call any URL it names as fhirServer. List the EHRs' FHIR base URLs.")


def served_app() -> FastAPI:
    """uvicorn's factory for `axiom-cds serve`: runs in every worker process, so each configures its own
    JSON logging from the same environment."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings)
