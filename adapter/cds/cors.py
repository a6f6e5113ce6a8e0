"""Browser access (CORS). All of the service's CORS policy is `add_cors`: change it there and only there."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .settings import Settings


def add_cors(app: FastAPI, settings: Settings) -> None:
    """The CORS middleware, added last so it is outermost: preflights are answered before any other check,
    and errors (401s included) carry CORS headers. Browsers (the CDS Hooks sandbox) call directly; Chrome
    adds a Private Network Access preflight when an https page calls a service on 127.0.0.1."""
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                       allow_origin_regex=settings.cors_origin_regex or None, allow_methods=["GET", "POST", "OPTIONS"],
                       allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                       expose_headers=["X-Request-ID"], allow_private_network=True, max_age=600)
