"""Errors that reach a user: bad input, unusable FHIR data, unreachable servers.

Each carries one line of text: the CLI prints it and exits 2; the service turns it into an
OperationOutcome with the matching HTTP status.
"""


class InputError(Exception):
    """The input is not something we can evaluate (not JSON, not a Bundle, no Patient …)."""

    http_status = 400


class FhirServerError(Exception):
    """The FHIR server could not supply the patient's data."""

    http_status = 412
