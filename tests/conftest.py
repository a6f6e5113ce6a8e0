"""Shared pytest fixtures."""

from tests.fhir_server import fhir_server

__all__ = ["fhir_server"]
