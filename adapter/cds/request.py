"""Validate a CDS Hooks 2.0 patient-view request without copying its (possibly megabytes of) prefetch.

Parsing a 2.6 MB prefetch into pydantic models costs more than evaluating it, so the envelope is
checked by hand and the prefetch is handed on as parsed JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..fhir.urls import base_url_problem
from ..fhir.wire import FHIR_ID

HOOK = "patient-view"
# a UUID as RFC 4122 writes it: Python's uuid.UUID also takes braces, `urn:uuid:` and 32 bare digits, and
# the value as sent goes into the logs and audit rows
UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class HookRequest:
    hook_instance: str
    patient_id: str
    user_id: str | None
    fhir_server: str | None
    access_token: str | None
    prefetch: dict[str, Any] | None

    def __repr__(self) -> str:  # never print the token
        return f"HookRequest(hookInstance={self.hook_instance}, patient={self.patient_id})"


def _fhir_base_url(value: Any) -> str:
    """fhirServer as a FHIR base URL; a user name, password or query string in it is refused (400), not
    used: it would go out with every request and into logs and audit rows (fhir/urls.py)."""
    if not isinstance(value, str):
        raise InputError("fhirServer must be a URL string")
    problem = base_url_problem(value)
    if problem is not None:
        raise InputError(f"fhirServer {problem}")
    return value.rstrip("/")


def parse_hook_request(body: Any) -> HookRequest:
    """The request, or InputError naming the first problem (→ HTTP 400 with an OperationOutcome)."""
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    if body.get("hook") != HOOK:
        raise InputError(f"hook must be '{HOOK}'" + (" (missing)" if "hook" not in body else ""))
    instance = body.get("hookInstance")
    if not isinstance(instance, str) or not UUID_TEXT.fullmatch(instance):
        raise InputError("hookInstance must be a UUID (8-4-4-4-12 hexadecimal digits)")
    context = body.get("context")
    if not isinstance(context, dict):
        raise InputError("context must be an object")
    patient_id = context.get("patientId")
    if not isinstance(patient_id, str) or not FHIR_ID.fullmatch(patient_id):
        raise InputError("context.patientId must be a FHIR id")
    user_id = context.get("userId")
    if user_id is not None and not isinstance(user_id, str):
        raise InputError("context.userId must be a string")
    fhir_server = _fhir_base_url(body["fhirServer"]) if body.get("fhirServer") is not None else None
    token = None
    auth = body.get("fhirAuthorization")
    if auth is not None:
        if fhir_server is None:
            raise InputError("fhirServer is required when fhirAuthorization is present")
        if not isinstance(auth, dict) or not isinstance(auth.get("access_token"), str) or not auth["access_token"]:
            raise InputError("fhirAuthorization.access_token must be a non-empty string")
        if str(auth.get("token_type", "")).lower() != "bearer":
            raise InputError("fhirAuthorization.token_type must be 'Bearer'")
        token = auth["access_token"]
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        raise InputError("prefetch must be an object")
    return HookRequest(instance, patient_id, user_id, fhir_server, token, prefetch)
