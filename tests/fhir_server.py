"""A real FHIR R4 server (sekmet-fhir) for tests, started once per test session.

Why a real server: respx cannot mock aiohttp (which the adapter's FHIR client uses), and a mock would
only check that we send the requests we think are right. A real server checks that the searches mean
what we think they mean (token OR lists, date prefixes, paging, _include).
The launcher is shared with the sandbox and the benchmarks (adapter/fhir_sandbox.py): 127.0.0.1 only,
base_url with the exact port (next links are absolute), a fresh data_dir, the order simulator disabled.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapter.fhir_sandbox import FhirSandboxError, SekmetServer, running_server, to_transaction

FhirTestServer = SekmetServer  # what the tests call it

__all__ = ["FhirTestServer", "fhir_server", "to_transaction"]


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirTestServer]:
    """One sekmet-fhir server for the whole session; tests load their own patients (unique ids)."""
    try:
        with running_server(tmp_path_factory.mktemp("sekmet")) as server:
            yield server
    except FhirSandboxError as exc:
        pytest.fail(str(exc), pytrace=False)
