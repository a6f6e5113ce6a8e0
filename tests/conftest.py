"""Shared pytest fixtures."""

from collections.abc import Iterator

import httpx
import pytest

from tests.fhir_server import fhir_server
from tests.postgres_server import postgres_server, postgres_url
from tests.service_server import cds_service, cds_service_factory

__all__ = ["cds_service", "cds_service_factory", "fhir_server", "http", "postgres_server", "postgres_url"]


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """An HTTP client for the services the tests start on 127.0.0.1 (no proxy from the environment)."""
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        yield client
