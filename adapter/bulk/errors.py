"""What can go wrong when a population is fetched from a FHIR server: one tree, one line each.

Every error is a `BulkError`, itself a `FhirServerError` (adapter/errors.py), so the CLI prints the
message and exits 2 with no traceback. Messages never carry a token, a URL's query string or a
patient's data: they name the server by `shown()` URL and quote an OperationOutcome's diagnostics
only bounded (`MAX_DIAGNOSTICS_CHARS`).

    BulkError
    ├── ExportNotSupportedError  the server has no $export (the caller falls back to FHIR search)
    ├── KickoffRefusedError      the kick-off was answered 4xx (the OperationOutcome's diagnostics)
    ├── ExportFailedError        the export job failed, vanished, or its manifest is unusable
    ├── ExportTimeoutError       a request, or the whole export, took longer than allowed
    ├── ExportCancelledError     Ctrl-C or SIGTERM: the server was asked (DELETE) to drop the job
    ├── UnsafeUrlError           a URL from the server is off the allowed server (or a redirect is)
    ├── ResponseTooLargeError    a JSON answer (status, manifest, page) over its bound
    ├── DestinationError         the destination folder holds another download, or cannot be written
    ├── SearchFailedError        the search fallback could not find or fetch the patients
    └── AuthError                SMART Backend Services: discovery, key, assertion or token refused
"""

from __future__ import annotations

from ..errors import FhirServerError

MAX_DIAGNOSTICS_CHARS = 300


class BulkError(FhirServerError):
    """A population could not be fetched; the message says why in one line."""


class ExportNotSupportedError(BulkError):
    """The server does not offer Bulk Data `$export` (404/405/501, or its CapabilityStatement says so)."""


class KickoffRefusedError(BulkError):
    """The server refused the kick-off request (4xx other than 'no such operation')."""


class ExportFailedError(BulkError):
    """The export job failed on the server, is gone, or came back with an unusable manifest."""


class ExportTimeoutError(BulkError):
    """No answer in time, or the export did not complete within the polling budget."""


class ExportCancelledError(BulkError):
    """Interrupted by the user; `deleted` says whether the server accepted the DELETE of the job."""

    def __init__(self, message: str, deleted: bool) -> None:
        super().__init__(message)
        self.deleted = deleted


class UnsafeUrlError(BulkError):
    """A URL the server handed back (Content-Location, a file, a next link, a redirect) is not on the
    allowed server: it is not requested, and the token never goes there."""


class ResponseTooLargeError(BulkError):
    """A JSON answer was bigger than its bound; refused while reading it."""


class DestinationError(BulkError):
    """The destination folder cannot hold this download (another export's state, not writable)."""


class SearchFailedError(BulkError):
    """The FHIR-search fallback could not complete (a search or a patient's fetch failed)."""


class AuthError(BulkError):
    """SMART Backend Services authorization failed (discovery, key file, token endpoint's answer)."""


def bounded(text: str, limit: int = MAX_DIAGNOSTICS_CHARS) -> str:
    """`text` on one line, printable characters only, at most `limit` characters."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
