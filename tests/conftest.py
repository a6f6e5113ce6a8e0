"""Shared pytest fixtures."""

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapter.synth.population import write_population
from tests.fhir_server import fhir_server
from tests.helpers import AS_OF, ENRICHED
from tests.postgres_server import postgres_server, postgres_url
from tests.service_server import cds_service, cds_service_factory

__all__ = ["cds_service", "cds_service_factory", "fhir_server", "http", "postgres_server", "postgres_url"]


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """An HTTP client for the services the tests start on 127.0.0.1 (no proxy from the environment)."""
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        yield client


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A command run in-process (CliRunner: `serve`, `screen -v`) routes the root logger to its own stderr,
    which the runner closes: every test leaves logging as it found it, so no later test logs into a closed
    stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 generated patients (seed 21) as NDJSON, enriched in sarcoma: the screen tests' population, for
    each engine."""
    folder = tmp_path_factory.mktemp("population")
    write_population(folder, 21, 1500, AS_OF, prevalence=ENRICHED)
    return folder
