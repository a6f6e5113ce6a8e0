"""FHIR OperationOutcome error responses: every error this service returns is one of these."""

from __future__ import annotations

import orjson
from fastapi import Response

FHIR_JSON = "application/fhir+json"

# FHIR issue-type codes (http://hl7.org/fhir/issue-type) per HTTP status
ISSUE_CODE = {400: "invalid", 401: "login", 404: "not-found", 405: "not-supported", 408: "timeout",
              412: "not-found", 413: "too-costly", 415: "not-supported", 422: "processing", 431: "too-costly",
              503: "transient",
              500: "exception"}


def operation_outcome(status: int, message: str, issue: str | None = None) -> Response:
    """`issue`: the issue-type code when the status alone does not say why (a 412's cause)."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": issue or ISSUE_CODE.get(status, "processing"), "diagnostics": message}],
    }
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON)
