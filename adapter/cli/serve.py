"""`axiom-cds serve`: the CDS Hooks service (and the review app) under uvicorn, every setting checked here
first so that a mistake is one line and exit 2, not a traceback per worker."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from .common import app, configuration_error, fail


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8080]")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [default: 1]")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Accept calls without a JWT (local sandbox only)")]
    = False,
) -> None:
    """Run the CDS Hooks service. Configuration: AXIOM_* environment variables or AXIOM_CONFIG=file.yaml."""
    import uvicorn

    from ..cds import shutdown
    from ..cds.issuers import auth_config, testing_only_warning
    from ..cds.protocol import uvicorn_limits
    from ..cds.settings import Settings
    from ..cds.tls import tls_options
    from ..errors import InputError
    from ..logs import configure as configure_logging
    from ..review.config import review_config
    from ..review.settings import ReviewSettings
    from ..trials import load_trial

    # Options become environment so that every worker process builds the same Settings.
    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"AXIOM_{name}"] = str(value)
    if no_auth:
        os.environ["AXIOM_AUTH_REQUIRED"] = "false"
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError
        raise configuration_error(exc) from None
    try:
        load_trial(settings.trial)  # a bad AXIOM_TRIAL stops the service here, in one line
    except InputError as exc:
        raise fail(str(exc)) from None
    try:
        auth = auth_config(settings)  # the same checks as every worker's create_app, here in one line
        tls = tls_options(settings)  # certificate and key readable and matching (uvicorn: a traceback per worker)
        review_config(ReviewSettings(), settings)  # the review app's settings: one line here, not per worker
    except ValueError as exc:  # pydantic's ValidationError and TlsError too
        raise configuration_error(exc) from None
    configure_logging(settings.log_level, settings.log_json)  # only once the service will start
    if auth is None:
        typer.secho("WARNING: authentication is OFF (--no-auth). Local sandbox only — never with real patient "
                    "data.", err=True, fg="red", bold=True)
    for issuer in auth.issuers if auth else ():
        if issuer.testing_only:
            typer.secho(f"WARNING: {testing_only_warning(issuer)}", err=True, fg="red", bold=True)
    for warning in tls.warnings:
        typer.secho(f"WARNING: {warning}", err=True, fg="red", bold=True)
    # access_log off: uvicorn's line carries the query string; the service logs its own (adapter/logs.py)
    config = uvicorn.Config("adapter.cds.app:served_app", factory=True, host=settings.host, port=settings.port,
                            workers=settings.workers, log_level=settings.log_level.lower(), access_log=False,
                            log_config=None, timeout_graceful_shutdown=settings.shutdown_grace_s,
                            timeout_worker_healthcheck=settings.worker_start_timeout_s,
                            **uvicorn_limits(settings), **tls.options)
    shutdown.serve_until_stopped(config)  # SIGTERM/SIGINT: in-flight hooks finish, exit 0
