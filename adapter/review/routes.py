"""The review app's endpoints: EHR launch, the EHR's callback, the page, and its three forms.

GET  /review/launch?iss=…&launch=…  iss allow-listed → smart-configuration → PKCE S256 → the EHR's authorize
GET  /review/callback?code=…&state=… state checked against the cookie's session → code exchanged → id_token
                                    verified (identity.py) → /review/app
GET  /review/app                    the chart read with the clinician's token, evaluated, every criterion shown
POST /review/attestations           the checklist, stored (CSRF token of the session)
POST /review/referral               the referral ServiceRequest draft written to the EHR, read back — unless an
                                    open one for this patient and trial is there already (drafts.find_open)
POST /review/lab-orders             the missing labs' ServiceRequest drafts, likewise
POST /review/end                    the session and its token discarded

Every answer is HTML with the security headers of pages.py, errors included (HtmlRoute): no
OperationOutcome, no stack trace. No URL carries a token, a code after the callback, or the patient.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from yarl import URL

from ..cds.hook import Service
from ..engine import fhir_wanted
from ..fhir.client import SessionClient
from ..fhir.scopes import read_types
from ..report.card import OVERALL_TEXT, clinical
from ..report.text import plain
from ..trials import Trial, load_trial
from .chart import STATUS_ORDER, STATUS_TEXT, Chart, criteria_views, patient_banner, read_chart
from .config import COOKIE, ReviewConfig, read_app_context, review_config
from .drafts import Draft, Existing, create, drafts, find_open, read_back
from .errors import ReviewError
from .identity import Identity, identify, logged_user
from .pages import STATIC, page, security_headers, static
from .sessions import Attestation, ReviewStore, Session, expiry
from .settings import ReviewSettings
from .smart import authorize_url, discover, exchange_code, grants, missing_read_scopes, pkce_pair, requested_scopes

log = logging.getLogger("axiom_cds.review")

MAX_WRITE_LOCKS = 256
GROUP_TITLES = {"not-met": "Not met", "unknown": "Unknown — what the chart does not say",
                "met": "Met", "not-applicable": "Not applicable"}


def install(app: FastAPI) -> None:
    """The review app on the service: its settings from AXIOM_REVIEW_* (ValueError when they contradict
    each other), its routes. `app.state.review` may be replaced before the first request (tests)."""
    app.state.review = review_config(ReviewSettings(), app.state.settings)
    app.state.review_lock = asyncio.Lock()
    app.state.review_write_locks = {}
    app.include_router(router)


class HtmlRoute(APIRoute):
    """Every outcome of a review route is a page with the security headers — a ReviewError its own page, a
    malformed request a 400, anything unexpected a 500 page — never the service's JSON error handlers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            config: ReviewConfig = request.app.state.review
            try:
                response = await handler(request)
            except ReviewError as exc:
                response = _problem(exc)
            except RequestValidationError:
                response = _problem(ReviewError(400, "The request was not understood",
                                                "It is missing a field or has one of the wrong form."))
            except Exception as exc:
                log.exception("review page failed", extra={"error": type(exc).__name__, "path": request.url.path})
                response = _problem(ReviewError(500, "The review could not be shown",
                                                "Something went wrong in the service; it has been logged."))
            for name, value in security_headers(tuple(config.settings.frame_ancestors)).items():
                response.headers.setdefault(name, value)
            return response

        return route


router = APIRouter(prefix="/review", route_class=HtmlRoute, include_in_schema=False)


def _problem(exc: ReviewError) -> Response:
    return page("error.html", exc.status, title=exc.title, detail=exc.detail, status=exc.status,
                relaunch=exc.relaunch)


def _config(request: Request) -> ReviewConfig:
    config: ReviewConfig = request.app.state.review
    if not config.enabled:
        raise ReviewError(503, "The review app is not set up on this service",
                          "It needs a SMART client registration (AXIOM_REVIEW_CLIENT_ID), the EHRs it may be "
                          "launched from (AXIOM_REVIEW_ALLOWED_ISSUERS) and its public URL.", relaunch=False)
    return config


async def _store(request: Request) -> ReviewStore:
    """The session store, opened on first use (the database may be PostgreSQL shared by replicas)."""
    state = request.app.state
    store: ReviewStore | None = getattr(state, "review_store", None)
    if store is None:
        async with state.review_lock:
            store = getattr(state, "review_store", None)
            if store is None:
                store = await run_in_threadpool(ReviewStore, state.settings.database_url)
                state.review_store = store
    return store


def _trial(request: Request) -> Trial:
    return load_trial(request.app.state.settings.trial)


def _types(request: Request) -> tuple[str, ...]:
    return read_types(fhir_wanted(_trial(request)))


def _http(config: ReviewConfig) -> httpx.AsyncClient:
    """For the EHR's authorization server: no redirect followed, no proxy from the environment (as the
    FHIR layer's aiohttp sessions), a timeout."""
    return httpx.AsyncClient(timeout=config.settings.http_timeout_s, follow_redirects=False, trust_env=False)


def _set_cookie(response: Response, config: ReviewConfig, secret: str, minutes: int) -> None:
    response.set_cookie(COOKIE, secret, max_age=minutes * 60, path="/review", httponly=True,
                        secure=config.secure_cookie, samesite=config.settings.cookie_samesite)


def _see(where: str) -> RedirectResponse:
    """303 to another page of the app, relative (a path prefix added by a reverse proxy is kept)."""
    return RedirectResponse(where, status_code=303)


# --------------------------------------------------------------------------- launch and callback


@router.get("/launch")
async def launch(request: Request) -> Response:
    config = _config(request)
    iss, launch_id = request.query_params.get("iss", ""), request.query_params.get("launch", "")
    if not iss or not launch_id or len(iss) > 2048 or len(launch_id) > 2048:
        raise ReviewError(400, "The EHR did not start the review properly",
                          "The launch has no iss or no launch parameter: the review opens only from the EHR.")
    iss = iss.rstrip("/")
    if iss not in config.settings.allowed_issuers:
        raise ReviewError(403, "This EHR may not open the review",
                          "The FHIR server that launched it is not one this service is configured to trust "
                          "(AXIOM_REVIEW_ALLOWED_ISSUERS).", relaunch=False)
    async with _http(config) as http:
        smart = await discover(http, iss)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(32)
    store = await _store(request)
    if (old := request.cookies.get(COOKIE)) is not None:  # one review per browser: the earlier one ends
        await run_in_threadpool(store.end, old)
    secret = await run_in_threadpool(store.create, Session(iss=iss, token_endpoint=smart.token_endpoint, state=state,
                                                           verifier=verifier,
                                                           expires_at=expiry(config.settings.launch_minutes),
                                                           oidc_issuer=smart.issuer, jwks_uri=smart.jwks_uri))
    target = authorize_url(smart, client_id=str(config.settings.client_id), redirect_uri=config.redirect_uri,
                           launch=launch_id, scopes=requested_scopes(_types(request), config.settings.scope_version),
                           state=state, iss=iss, challenge=challenge)
    response = _see(target)
    _set_cookie(response, config, secret, config.settings.launch_minutes)
    log.info("review launched", extra={"fhir_host": URL(iss).host})
    return response


@router.get("/callback")
async def callback(request: Request) -> Response:
    config = _config(request)
    store = await _store(request)
    secret = request.cookies.get(COOKIE)
    session = await run_in_threadpool(store.load, secret)
    if secret is None or session is None:
        raise ReviewError(400, "The sign-in cannot be matched to a launch",
                          "This browser has no review launch in progress: it expired after "
                          f"{config.settings.launch_minutes} minutes, or cookies are blocked for this site.")
    if session.state is None:  # the callback again (Back, a reload): the review goes on, nothing is done
        raise ReviewError(400, "This sign-in was already completed",
                          "The EHR's answer was used once already in this browser; the review is still open.",
                          relaunch=False)
    try:
        return await _complete(request, config, store, secret, session)
    except ReviewError:
        await run_in_threadpool(store.end, secret)  # a failed sign-in leaves nothing to resume
        raise


async def _complete(request: Request, config: ReviewConfig, store: ReviewStore, secret: str,
                    session: Session) -> Response:
    query = request.query_params
    expected, session.state = session.state or "", None
    if not hmac.compare_digest(query.get("state", "").encode(), expected.encode()):
        raise ReviewError(400, "The sign-in does not match this browser's launch",
                          "The state the EHR sent back is not the one this browser's launch carried (a stale "
                          "or forged sign-in link); nothing was done.")
    await run_in_threadpool(store.save, secret, session)  # the state is spent before the code is exchanged
    if query.get("error"):
        raise ReviewError(403, "The EHR did not authorize the review",
                          "Access was refused or cancelled at the EHR's sign-in.")
    code = query.get("code", "")
    if not code or len(code) > 4096:
        raise ReviewError(400, "The EHR sent no authorization code", "The sign-in answer has no code.")
    async with _http(config) as http:
        secret_value = config.settings.client_secret.get_secret_value() if config.settings.client_secret else None
        token = await exchange_code(http, session.token_endpoint, code=code, verifier=session.verifier,
                                    redirect_uri=config.redirect_uri, client_id=str(config.settings.client_id),
                                    client_secret=secret_value)
        missing = missing_read_scopes(token.scope, _types(request), config.settings.scope_version)
        if missing:
            raise ReviewError(403, "The EHR did not grant the access the review needs",
                              f"Not granted: {', '.join(missing)}. The review reads what the card reads; the EHR's "
                              "administrator can grant these scopes to the app.", relaunch=False)
        # no id_token (an EHR that ignores `openid`): the review goes on, its clinician not identified
        who = Identity(None, None) if token.id_token is None else await identify(
            http, token.id_token, iss=session.iss, token_endpoint=session.token_endpoint,
            issuer=session.oidc_issuer, listed_jwks=session.jwks_uri, client_id=str(config.settings.client_id))
    session.fhir_user, session.user_display = who.fhir_user, who.display
    minutes = config.settings.session_minutes
    lifetime = min(timedelta(minutes=minutes), timedelta(seconds=token.expires_in or minutes * 60))
    session.access_token, session.patient, session.scope = token.access_token, token.patient, sorted(token.scope)
    session.app_context = token.app_context
    session.hook_instance = read_app_context(token.app_context)[1]
    session.expires_at = (datetime.now(UTC) + lifetime).isoformat()
    await run_in_threadpool(store.save, secret, session)
    response = _see("app")
    _set_cookie(response, config, secret, max(1, int(lifetime.total_seconds() // 60)))
    service: Service = request.app.state.service
    log.info("review signed in", extra={"hook_instance": session.hook_instance, "scopes": len(token.scope),
                                        "writes": grants(token.scope, "ServiceRequest", "c"),
                                        "id_token": token.id_token is not None,
                                        "fhir_user": logged_user(session.fhir_user),
                                        "patient_hash": service.patient_key(session.iss, token.patient)})
    return response


# --------------------------------------------------------------------------- the page


async def _signed_in(request: Request) -> tuple[ReviewConfig, ReviewStore, str, Session]:
    config = _config(request)
    store = await _store(request)
    secret = request.cookies.get(COOKIE)
    session = await run_in_threadpool(store.load, secret)
    if secret is None or session is None or not session.signed_in:
        raise ReviewError(401, "The review session has ended",
                          f"It expired (a review lasts at most {config.settings.session_minutes} minutes after "
                          "sign-in), was ended, or was replaced by a review opened later in this browser.")
    return config, store, secret, session


async def _form(request: Request, session: Session) -> Any:
    """The posted form, refused (403) without this session's CSRF token: a form from another site, or from
    a page of an earlier review in this browser, does nothing."""
    form = await request.form()
    sent = form.get("csrf")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise ReviewError(403, "This form cannot be accepted",
                          "It does not belong to the current review in this browser (it may come from an "
                          "earlier review's page). Nothing was changed; reload the review and try again.",
                          relaunch=False)
    return form


async def _chart(request: Request, config: ReviewConfig, session: Session) -> Chart:
    service: Service = request.app.state.service
    started = time.perf_counter()
    chart = await read_chart(service, session, config.settings.fhir_deadline_s, config.settings.http_timeout_s)
    assert session.patient is not None
    log.info("review evaluated", extra={
        "hook_instance": session.hook_instance, "patient_hash": service.patient_key(session.iss, session.patient),
        "verdict": chart.report.overall, "fhir_ms": chart.fhir_ms,
        "total_ms": round((time.perf_counter() - started) * 1000)})
    return chart


def _can(session: Session, needed: str) -> bool:
    return grants(frozenset(session.scope), "ServiceRequest", needed)


@router.get("/app")
async def app_page(request: Request) -> Response:
    config, store, secret, session = await _signed_in(request)
    chart = await _chart(request, config, session)
    service: Service = request.app.state.service
    assert session.patient is not None
    saved = await run_in_threadpool(store.attestations, service.patient_key(session.iss, session.patient),
                                    chart.report.trial.version)
    referral, labs = drafts(chart.report, service.settings.study_team, session.fhir_user)
    existing, unchecked = [], None
    if referral is not None and not any(c["kind"] == "referral" for c in session.created):
        try:
            existing = await _open_referrals(service, config, session, referral)
        except ReviewError as exc:  # the page still shows the chart; the button is not offered
            unchecked = exc.detail
    notice = session.notice
    if notice is not None:  # said once
        session.notice = None
        await run_in_threadpool(store.save, secret, session)
    return page("app.html", **_page_context(service, session, chart, saved, (referral, labs), existing, unchecked),
                notice=notice)


async def _open_referrals(service: Service, config: ReviewConfig, session: Session, referral: Draft) -> list[Existing]:
    """The open referrals of this patient and trial in the EHR; ReviewError when the app cannot tell (no
    search scope, no answer) — then it creates none, so a referral is never made twice."""
    if not _can(session, "s"):
        raise ReviewError(403, "The app cannot check for an existing referral",
                          "The EHR did not grant it the right to search ServiceRequests (patient/ServiceRequest.s), "
                          "so it cannot check whether this patient has a referral already; none is created from "
                          "here.", relaunch=False)
    assert session.access_token is not None and session.patient is not None
    client = SessionClient(session.iss, service.sessions.get(session.iss), session.access_token,
                           config.settings.http_timeout_s)
    return await find_open(client, session.patient, referral)


def _page_context(service: Service, session: Session, chart: Chart, saved: dict[str, Attestation],
                  offered_drafts: tuple[Draft | None, list[Draft]], existing: list[Existing],
                  unchecked: str | None) -> dict[str, Any]:
    """What app.html shows: who is signed in, the verdict, every criterion with its evidence, the checklist,
    the drafts (the referral only when no open one exists and the app could check)."""
    report = chart.report
    trial = report.trial
    referral, labs = offered_drafts
    offered = {c["offered"] for c in session.created}
    has_referral = any(c["kind"] == "referral" for c in session.created)
    views = criteria_views(chart, session.iss)
    warnings = []
    trial_named = read_app_context(session.app_context)[0]
    if trial_named is not None and trial_named != trial.id:
        warnings.append(f"The card that opened this review was for trial '{trial_named}'; this service evaluates "
                        f"'{trial.id}'.")
    if report.overall == "not-applicable":
        warnings.append("The chart has no sarcoma diagnosis this trial applies to.")
    team = service.settings.study_team
    overall_text = OVERALL_TEXT.get(report.overall, "not applicable")
    return {
        "title": f"{trial.short_title}: {overall_text}", "patient": patient_banner(chart.record),
        "csrf": session.csrf, "trial": trial, "overall": report.overall, "overall_text": overall_text,
        "cohort": trial.cohorts[report.cohort].title if report.cohort else None, "as_of": report.as_of.isoformat(),
        "reasons": [clinical(plain(r)) for r in report.reasons], "data_notes": [plain(n) for n in report.data_notes],
        "warnings": warnings, "status_text": STATUS_TEXT,
        "groups": [{"title": GROUP_TITLES[s], "rows": [v for v in views if v.status == s]}
                   for s in STATUS_ORDER if any(v.status == s for v in views)],
        "show_checklist": report.overall not in ("not-eligible", "not-applicable") and bool(trial.attestations),
        "attestations": [{"id": a.id, "text": a.text, "confirmed": a.id in saved and saved[a.id].confirmed,
                          "recorded": _recorded(saved[a.id]) if a.id in saved else None} for a in trial.attestations],
        "user": session.user_display or session.fhir_user,
        "referral": None if has_referral or existing or unchecked else referral, "has_referral": has_referral,
        "existing": existing, "unchecked": unchecked if referral is not None and not has_referral else None,
        "no_referral": _no_referral(report.overall), "team": team.contact if team else None,
        "labs": [d for d in labs if d.description not in offered], "can_write": _can(session, "c"),
        "created": session.created, "fhir_base": session.iss,
    }


def _no_referral(overall: str) -> str:
    if overall == "not-eligible":
        return "the patient does not meet a criterion (see above)."
    return "the cohort or this site does not enrol now, or the patient is deceased."


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _recorded(answer: Attestation) -> str:
    return f"{_when(answer.recorded_at)} by {answer.fhir_user or 'a clinician the EHR did not identify'}"


# --------------------------------------------------------------------------- the forms


@router.post("/attestations")
async def attestations(request: Request) -> Response:
    _, store, secret, session = await _signed_in(request)
    form = await _form(request, session)
    trial = _trial(request)
    known = {a.id for a in trial.attestations}
    ticked = {v for v in form.getlist("attestation") if isinstance(v, str)}
    if not ticked <= known:
        raise ReviewError(400, "The checklist was not understood", "It names an item this trial does not have.",
                          relaunch=False)
    service: Service = request.app.state.service
    assert session.patient is not None
    answers = {a.id: a.id in ticked for a in trial.attestations}
    await run_in_threadpool(store.record_attestations, service.patient_key(session.iss, session.patient),
                            trial.version, answers, session.hook_instance, session.fhir_user)
    session.notice = f"Checklist saved: {len(ticked)} of {len(known)} confirmed."
    await run_in_threadpool(store.save, secret, session)
    log.info("review checklist saved", extra={"hook_instance": session.hook_instance, "confirmed": len(ticked),
                                              "items": len(known), "fhir_user": logged_user(session.fhir_user)})
    return _see("app")


async def _write(request: Request, kind: str) -> Response:
    """Create the drafts of `kind` the chart offers now (evaluated again: the page may be old), one press
    at a time per session in this worker: a double click finds the first press's draft and creates none."""
    _, _, secret, session = await _signed_in(request)
    await _form(request, session)
    locks: dict[str, asyncio.Lock] = request.app.state.review_write_locks
    if len(locks) > MAX_WRITE_LOCKS:  # forget the idle ones (a waiter holds its lock, so it is not idle)
        for key in [k for k, held in locks.items() if not held.locked()]:
            del locks[key]
    async with locks.setdefault(secret, asyncio.Lock()):
        return await _write_locked(request, kind)


async def _write_locked(request: Request, kind: str) -> Response:
    config, store, secret, session = await _signed_in(request)  # again, inside the lock: what is created now
    if not _can(session, "c"):
        raise ReviewError(403, "The EHR did not grant this app the right to write orders",
                          "Creating a ServiceRequest needs the scope patient/ServiceRequest.c.", relaunch=False)
    chart = await _chart(request, config, session)
    service: Service = request.app.state.service
    referral, labs = drafts(chart.report, service.settings.study_team, session.fhir_user)
    offered = {c["offered"] for c in session.created}
    if kind == "referral":
        wanted = [referral] if referral is not None and not any(c["kind"] == "referral" for c in session.created) \
            else []
        existing = await _open_referrals(service, config, session, referral) if referral and wanted else []
        if existing:  # made meanwhile (another session, the card, another clinician): not made twice
            session.notice = f"No referral was created: ServiceRequest/{existing[0].id} is open in the EHR already."
            await run_in_threadpool(store.save, secret, session)
            log.info("review referral exists", extra={"hook_instance": session.hook_instance})
            return _see("app")
    else:
        wanted = [d for d in labs if d.description not in offered]
    if not wanted:
        session.notice = "Nothing to create: " + ("the referral was created already, or the chart no longer offers "
                                                  "one." if kind == "referral" else "no lab is missing or stale now, "
                                                  "or the orders were created already.")
        await run_in_threadpool(store.save, secret, session)
        return _see("app")
    assert session.access_token is not None and session.patient is not None
    client = SessionClient(session.iss, service.sessions.get(session.iss), session.access_token,
                           config.settings.http_timeout_s)
    for draft in wanted:
        made = await _create_one(service, config, session, client, draft)
        if made is None:  # the server's conditional create found an open referral made meanwhile
            session.notice = "No referral was created: one is open in the EHR already."
            await run_in_threadpool(store.save, secret, session)
            return _see("app")
        session.created.append(made)
        await run_in_threadpool(store.save, secret, session)  # each as soon as it exists: never created twice
    ids = ", ".join(f"ServiceRequest/{c['id']}" for c in session.created[-len(wanted):])
    session.notice = ("Referral" if kind == "referral" else "Lab orders") + f" created as drafts in the EHR: {ids}."
    await run_in_threadpool(store.save, secret, session)
    log.info("review drafts created", extra={"hook_instance": session.hook_instance, "kind": kind,
                                             "count": len(wanted)})
    return _see("app")


async def _create_one(service: Service, config: ReviewConfig, session: Session, client: SessionClient,
                      draft: Draft) -> dict[str, Any] | None:
    """The draft created and read back; None when the server answered with an open one instead."""
    assert session.access_token is not None and session.patient is not None
    rid, new = await create(service.sessions.get(session.iss), session.iss, session.access_token, draft,
                            config.settings.http_timeout_s)
    if not new:
        return None
    if not _can(session, "r"):  # created, but the EHR did not let the app read it back
        stored = {"kind": draft.kind, "id": rid, "what": draft.description,
                  "status": "draft (as sent; not read back: no read scope)", "intent": draft.resource["intent"]}
    else:
        stored = await read_back(client, rid, session.patient, draft)
    return {**stored, "offered": draft.description}  # what the page offered: not offered again


@router.post("/referral")
async def referral(request: Request) -> Response:
    return await _write(request, "referral")


@router.post("/lab-orders")
async def lab_orders(request: Request) -> Response:
    return await _write(request, "lab-order")


@router.post("/end")
async def end(request: Request) -> Response:
    _, store, secret, session = await _signed_in(request)
    await _form(request, session)
    await run_in_threadpool(store.end, secret)
    response = page("ended.html", title="Review ended")
    response.delete_cookie(COOKIE, path="/review")
    return response


@router.get("/static/{name}")
async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        raise ReviewError(404, "Not found", "There is no such file.", relaunch=False)
    return Response(static(name), media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})
