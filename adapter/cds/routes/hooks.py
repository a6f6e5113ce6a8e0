"""`POST /cds-services/axiom-eligibility`: the patient-view hook. Bad input is a 400; a Patient that
cannot be had (not prefetched, FHIR server refused or down, not valid FHIR) is a 412 — never a card."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from ...engine import fhir_wanted
from ...errors import FhirServerError, InputError
from ...fhir.queries import PATIENT_KEY, prefetch_templates, searches
from ...fhir.wire import load_hook
from ...review.config import launch_url
from ...trials import load_trial
from ..deps import Caller, get_service, require_caller
from ..hook import Service, patient_view
from ..outcome import operation_outcome
from ..request import HOOK, parse_hook_request
from .discovery import SERVICE_ID, json_response

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

router = APIRouter(tags=["cds-hooks"])


@dataclass(frozen=True)
class PrefetchKeys:
    """How to decode a hook body for a trial: its prefetch keys (decoded lazily), the ones parsed at once,
    and those holding Observations."""

    all: tuple[str, ...]
    eager: frozenset[str]
    observations: frozenset[str]


@cache
def prefetch_keys(trial: str) -> PrefetchKeys:
    wanted = fhir_wanted(load_trial(trial))
    return PrefetchKeys(tuple(prefetch_templates(wanted)), frozenset({PATIENT_KEY}),
                        frozenset(s.key for s in searches("-", wanted, None) if s.resource_type == "Observation"))


@router.post(f"/cds-services/{SERVICE_ID}", summary="patient-view: AXIOM eligibility card",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": HOOK_REQUEST_SCHEMA}}}})
async def invoke(request: Request, caller: Annotated[Caller, Depends(require_caller)],
                 service: Annotated[Service, Depends(get_service)]) -> Response:
    keys = prefetch_keys(service.settings.trial)
    try:
        hook = parse_hook_request(load_hook(await request.body(), keys.all, keys.eager, keys.observations))
    except InputError as exc:
        return operation_outcome(400, str(exc))
    try:
        return json_response(await patient_view(hook, service, caller.issuer, caller.fhir_servers,
                                                review_url=launch_url(request.app.state)))
    except (FhirServerError, InputError) as exc:  # InputError: the Patient itself was not valid FHIR
        log.info("hook refused", extra={"hook_instance": hook.hook_instance, "status": 412,
                                        "patient_hash": service.patient_key(hook.fhir_server, hook.patient_id),
                                        "reason": str(exc).replace(hook.patient_id, "[patient]")})
        issue = exc.issue if isinstance(exc, FhirServerError) else "invalid"  # InputError: the Patient is not valid
        return operation_outcome(412, str(exc), issue)
