"""`POST /cds-services/axiom-eligibility/feedback`: what the clinician did with the card."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from ...errors import InputError
from ...fhir.wire import load_json
from ...store import FeedbackError, parse_feedback, record_feedback
from ..deps import get_service
from ..hook import Service
from ..outcome import operation_outcome
from .discovery import SERVICE_ID

log = logging.getLogger("axiom_cds")

router = APIRouter(tags=["cds-hooks"])


@router.post(f"/cds-services/{SERVICE_ID}/feedback", summary="Card feedback",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"type": "object", "required": ["feedback"]}}}}})
async def feedback(request: Request, service: Annotated[Service, Depends(get_service)]) -> Response:
    try:
        items = parse_feedback(load_json(await request.body()))
        # only about cards this service issued (422 otherwise); one just answered may still be queued
        stored = await run_in_threadpool(record_feedback, service.store, items, service.writer.flush)
    except (InputError, FeedbackError) as exc:
        return operation_outcome(exc.http_status, str(exc))
    log.info("feedback stored", extra={"items": len(items), "new": stored})
    return Response(status_code=200)
