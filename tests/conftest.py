"""Shared pytest fixtures."""

from tests.fhir_server import fhir_server
from tests.postgres_server import postgres_server, postgres_url
from tests.service_server import cds_service, cds_service_factory

__all__ = ["cds_service", "cds_service_factory", "fhir_server", "postgres_server", "postgres_url"]
