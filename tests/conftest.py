"""Shared pytest fixtures."""

from tests.fhir_server import fhir_server

__all__ = ["fhir_server"]
from tests.service_server import cds_service, cds_service_factory

__all__ += ["cds_service", "cds_service_factory"]
