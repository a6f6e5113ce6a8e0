"""Errors that reach a user: bad input, unusable FHIR data, unreachable servers.

Each carries one line of text: the CLI prints it and exits 2; the service turns it into an
OperationOutcome with the matching HTTP status.
"""


class InputError(Exception):
    """The input is not something we can evaluate (not JSON, not a Bundle, no Patient …)."""

    http_status = 400


class FhirServerError(Exception):
    """The FHIR server could not supply the patient's data. `issue`: the FHIR issue-type code
    (http://hl7.org/fhir/issue-type) of the OperationOutcome a 412 carries — why, for a machine: an
    integrator's retry logic treats `timeout` and `transient` unlike `forbidden` or `not-found`."""

    http_status = 412
    default_issue = "not-found"

    def __init__(self, message: str = "", issue: str | None = None) -> None:
        super().__init__(message)
        self.issue = issue or self.default_issue
