"""Exception handlers: every error is a FHIR OperationOutcome, except a refused caller — a bare 401 that
says nothing about why."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from .deps import UnauthorizedError
from .outcome import operation_outcome

log = logging.getLogger("axiom_cds")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        return operation_outcome(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return operation_outcome(400, "invalid request")

    @app.exception_handler(UnauthorizedError)
    async def unauthorized(_: Request, exc: UnauthorizedError) -> Response:
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error", extra={"error": type(exc).__name__})
        return operation_outcome(500, "internal error; the request was not evaluated")
