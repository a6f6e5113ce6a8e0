"""Request dependencies. `require_caller` is THE authentication check: every CDS Hooks route depends on
it (see `app.create_app`), and tests stand in for a caller with `app.dependency_overrides[require_caller]`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import Request

from .auth import Authenticator, AuthError
from .hook import Service
from .settings import Settings

log = logging.getLogger("axiom_cds")


class UnauthorizedError(Exception):
    """Raised by `require_caller`; answered with a bare 401 (handlers.py)."""


@dataclass(frozen=True)
class Caller:
    """Who is calling, as far as the service trusts it."""

    issuer: str | None  # the verified JWT `iss`; None with authentication off
    fhir_servers: tuple[str, ...]  # the FHIR servers its hooks may name; () = any


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def require_caller(request: Request) -> Caller:
    """CDS Hooks 2.0 JWT on every CDS call; any failure is a bare 401 (the reason goes to the log). The
    audience is the configured public base URL plus the path: the request's Host is never consulted."""
    settings = get_settings(request)
    if not settings.auth_required:
        return Caller(None, tuple(settings.fhir_servers))
    auth: Authenticator | None = getattr(request.app.state, "auth", None)
    if auth is None:  # the lifespan did not run: no verifier, no entry
        raise UnauthorizedError
    try:
        verified = await auth.verify(request.headers.get("authorization"), request.url.path)
    except AuthError as exc:
        log.info("auth refused", extra={"path": request.url.path, "reason": str(exc)})
        raise UnauthorizedError from None
    # an issuer's own FHIR server list replaces the service-wide one for its hooks
    return Caller(verified.issuer.iss, verified.issuer.fhir_servers or tuple(settings.fhir_servers))
