"""A FHIR server's population as a folder of NDJSON, for `axiom-cds screen --fhir-server`.

`fetch_population` (population.py) is the entry point: Bulk Data `$export` (export.py) with SMART
Backend Services authorization (auth.py), or FHIR search where the server has no `$export`
(search.py). Every URL the server hands back stays on the allowed server (http.py); the download
resumes after an interruption and cancels on Ctrl-C (state.py, export.py). Errors: errors.py.
"""

from .auth import BackendServicesConfig, public_jwks
from .errors import BulkError, ExportCancelledError, ExportNotSupportedError
from .export import Progress
from .population import PopulationDownload, afetch_population, fetch_population

__all__ = ["BackendServicesConfig", "BulkError", "ExportCancelledError", "ExportNotSupportedError",
           "PopulationDownload", "Progress", "afetch_population", "fetch_population", "public_jwks"]
