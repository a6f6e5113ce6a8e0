"""Operations, open (no CDS token: orchestrators and scrapers are not EHRs): `GET /healthz` liveness,
`GET /readyz` readiness (the database answers), `GET /metrics` Prometheus metrics (adapter/cds/metrics.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from ... import __version__
from ...trials import load_trial
from ..deps import get_service, get_settings
from ..hook import Service
from ..metrics import CONTENT_TYPE_LATEST
from ..outcome import operation_outcome
from ..settings import Settings
from .discovery import json_response

log = logging.getLogger("axiom_cds")

router = APIRouter(tags=["ops"])

# a readiness probe must answer before the orchestrator's own timeout (Kubernetes: 1 s by default, often
# raised): a hung database is "not ready", not a hung probe
READY_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz(settings: Annotated[Settings, Depends(get_settings)]) -> Response:
    return json_response({"status": "ok", "version": __version__, "trial": load_trial(settings.trial).version})


@router.get("/readyz")
async def readyz(request: Request, service: Annotated[Service, Depends(get_service)]) -> Response:
    """200 when the database answers (every hook reads it for suppression); else 503, and the process
    stays alive: /healthz is the liveness check, a restart would not bring the database back. 503 too
    from SIGTERM/SIGINT on (adapter/cds/shutdown.py): a load balancer stops sending new requests."""
    if request.app.state.stopping.begun:
        return operation_outcome(503, "not ready: shutting down")
    try:
        await asyncio.wait_for(run_in_threadpool(service.store.ping), READY_TIMEOUT_S)
    except Exception as exc:  # any failure of the database means not ready; its kind goes to the log
        log.warning("not ready: database unavailable", extra={"error": type(exc).__name__})
        return operation_outcome(503, "not ready: the database does not answer")
    return json_response({"status": "ready"})


@router.get("/metrics")
async def metrics(settings: Annotated[Settings, Depends(get_settings)],
                  service: Annotated[Service, Depends(get_service)]) -> Response:
    if not settings.metrics_enabled:
        return operation_outcome(404, "metrics are not enabled (AXIOM_METRICS_ENABLED)")
    return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
