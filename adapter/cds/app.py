"""The FastAPI application: discovery, patient-view, feedback, health; errors as OperationOutcomes."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .. import __version__
from ..engine import fhir_wanted, warm_up
from ..errors import FhirServerError, InputError
from ..fhir.queries import PATIENT_KEY, prefetch_templates, searches
from ..fhir.sessions import SessionPool
from ..fhir.wire import load_hook, load_json
from ..logs import configure as configure_logging
from ..logs import install_request_ids
from ..store import FeedbackError, Store, parse_feedback
from ..store.writer import BackgroundWriter
from ..trials import load_trial
from .auth import Authenticator, AuthError, KeySets, issuers_from_settings
from .hook import Service, patient_key, patient_view
from .issuers import PRESETS
from .middleware import GuardMiddleware
from .outcome import operation_outcome
from .replay import ReplayGuard
from .request import HOOK, parse_hook_request
from .settings import Settings

SERVICE_ID = "axiom-eligibility"


class UnauthorizedError(Exception):
    """Raised by the auth dependency; answered with a bare 401."""


log = logging.getLogger("axiom_cds")

HOOK_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["hook", "hookInstance", "context"],
    "properties": {
        "hook": {"const": HOOK},
        "hookInstance": {"type": "string", "format": "uuid"},
        "fhirServer": {"type": "string", "format": "uri"},
        "fhirAuthorization": {"type": "object", "required": ["access_token", "token_type"]},
        "context": {"type": "object", "required": ["patientId"],
                    "properties": {"patientId": {"type": "string"}, "userId": {"type": "string"}}},
        "prefetch": {"type": "object", "additionalProperties": True},
    },
}


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def discovery(settings: Settings) -> dict[str, Any]:
    trial = load_trial(settings.trial)
    return {"services": [{
        "hook": HOOK,
        "id": SERVICE_ID,
        "title": f"{trial.short_title} trial eligibility ({trial.nct})",
        "description": (f"Checks the patient's chart against every eligibility criterion of {trial.title} "
                        f"({trial.nct}, trial record {trial.version}) and suggests a referral when the "
                        "patient may be eligible; shows nothing for patients without a sarcoma."),
        "prefetch": prefetch_templates(fhir_wanted(trial)),
        "usageRequirements": ("Read access to Patient, Condition, Observation, MedicationStatement, "
                              "MedicationRequest and MedicationAdministration (patient/*.read)."),
    }]}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    install_request_ids()

    issuers = issuers_from_settings(settings.trusted_issuers, settings.trust_presets, PRESETS)
    servers_of = {i.iss: i.fhir_servers for i in issuers}
    if settings.auth_required and not issuers:
        raise ValueError("authentication is required but no trusted issuer is configured "
                         "(AXIOM_TRUSTED_ISSUERS / AXIOM_TRUST_PRESETS, or --no-auth for a local sandbox)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warm_up(settings.trial)  # fail at start, not on the first hook, if the trial data is broken
        # issued cards are needed while an override of them can still suppress a card: twice the period
        store = Store(settings.database_url, card_days=2 * max(settings.suppress_days, 0) + 1,
                      audit_days=settings.audit_days or None, comment_days=settings.feedback_comment_days)
        app.state.service = Service(settings, SessionPool(), store, BackgroundWriter(store.write_batch))
        jwks_http = httpx.AsyncClient(timeout=5.0, follow_redirects=False)

        app.state.auth = Authenticator(issuers, KeySets(jwks_http), ReplayGuard(store).is_new,
                                       settings.jwt_clock_skew_s) \
            if settings.auth_required else None
        if settings.auth_required and not settings.fhir_servers and not all(servers_of.values()):
            log.warning("No FHIR server allow-list (AXIOM_FHIR_SERVERS): a trusted EHR's hook can make this "
                        "service call any URL it names as fhirServer. List the EHRs' FHIR base URLs.")
        if not settings.auth_required:
            log.warning("AUTHENTICATION IS OFF (--no-auth): any caller can use this service. "
                        "Only for a local sandbox on 127.0.0.1 — never in front of real patient data.")
        if settings.gc_tuning:
            # parsing a multi-megabyte prefetch allocates enough objects to trigger repeated full
            # collections; freezing start-up objects and raising the threshold halves the latency
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 20)
        yield
        await jwks_http.aclose()
        await app.state.service.sessions.close()
        await run_in_threadpool(app.state.service.writer.close)
        await run_in_threadpool(app.state.service.store.close)

    app = FastAPI(title="AXIOM eligibility CDS Hooks service", version=__version__, lifespan=lifespan,
                  description="CDS Hooks 2.0 service: AXIOM (NCT05333458) trial eligibility on patient-view.")
    # Browsers (the CDS Hooks sandbox) call directly; Chrome adds a Private Network Access preflight when
    # an https page calls a service on 127.0.0.1.
    app.add_middleware(GuardMiddleware, max_body_bytes=int(settings.max_request_mb * 2**20))
    # CORS outermost: preflights are answered before any other check, and errors carry CORS headers
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                       allow_origin_regex=settings.cors_origin_regex or None, allow_methods=["GET", "POST", "OPTIONS"],
                       allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                       expose_headers=["X-Request-ID"], allow_private_network=True, max_age=600)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        return operation_outcome(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return operation_outcome(400, "invalid request")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error", extra={"error": type(exc).__name__})
        return operation_outcome(500, "internal error; the request was not evaluated")

    async def authenticated(request: Request) -> None:
        """CDS Hooks 2.0 JWT on every CDS call; any failure is a bare 401 (the reason goes to the log)."""
        auth: Authenticator | None = request.app.state.auth
        if auth is None:
            return
        called = (settings.public_base_url.rstrip("/") + request.url.path) if settings.public_base_url \
            else str(request.url.replace(query=None, fragment=None))
        try:
            claims = await auth.verify(request.headers.get("authorization"), called)
        except AuthError as exc:
            log.info("auth refused", extra={"path": request.url.path, "reason": str(exc)})
            raise UnauthorizedError from None
        request.state.issuer = claims.get("iss")

    @app.exception_handler(UnauthorizedError)
    async def unauthorized(_: Request, exc: UnauthorizedError) -> Response:
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(authenticated)]
    prefetch_keys = tuple(prefetch_templates(fhir_wanted(load_trial(settings.trial))))  # decoded lazily
    eager_keys = frozenset({PATIENT_KEY})
    observation_keys = frozenset(s.key for s in searches("-", fhir_wanted(load_trial(settings.trial)), None)
                                 if s.resource_type == "Observation")

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        return json_response({"status": "ok", "version": __version__, "trial": load_trial(settings.trial).version})

    @app.get("/cds-services", tags=["cds-hooks"], summary="CDS Hooks discovery", dependencies=guarded)
    async def services() -> Response:
        return json_response(discovery(settings))

    @app.post(f"/cds-services/{SERVICE_ID}", tags=["cds-hooks"], summary="patient-view: AXIOM eligibility card",
              dependencies=guarded,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": HOOK_REQUEST_SCHEMA}}}})
    async def invoke(request: Request) -> Response:
        try:
            hook = parse_hook_request(load_hook(await request.body(), prefetch_keys, eager_keys,
                                                   observation_keys))
        except InputError as exc:
            return operation_outcome(400, str(exc))
        issuer = getattr(request.state, "issuer", None)
        allowed = servers_of.get(str(issuer)) or settings.fhir_servers
        try:
            return json_response(await patient_view(hook, request.app.state.service, issuer, allowed))
        except (FhirServerError, InputError) as exc:  # InputError: the Patient itself was not valid FHIR
            log.info("hook refused", extra={"hook_instance": hook.hook_instance, "status": 412,
                                            "patient_hash": patient_key(hook.fhir_server, hook.patient_id),
                                            "reason": str(exc).replace(hook.patient_id, "[patient]")})
            return operation_outcome(412, str(exc))

    @app.post(f"/cds-services/{SERVICE_ID}/feedback", tags=["cds-hooks"], summary="Card feedback",
              dependencies=guarded,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"type": "object", "required": ["feedback"]}}}}})
    async def feedback(request: Request) -> Response:
        try:
            items = parse_feedback(load_json(await request.body()))
        except (InputError, FeedbackError) as exc:
            return operation_outcome(400, str(exc))
        stored = await run_in_threadpool(request.app.state.service.store.add_feedback, items)
        log.info("feedback stored", extra={"items": len(items), "new": stored})
        return Response(status_code=200)

    return app


def served_app() -> FastAPI:
    """uvicorn's factory for `axiom-cds serve`: runs in every worker process, so each configures its own
    JSON logging from the same environment."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings)
