"""`axiom-cds`: evaluate a Bundle file or a patient on a FHIR server, screen a population, serve the CDS Hooks
service (and its sandbox), write demo and synthetic data, export the audit trail, generate the reference.

One module per command; each imports what it needs when it runs, so `axiom-cds evaluate` does not load the
web service, the database or DuckDB. Bad input never produces a traceback: one line on stderr, exit status 2.
"""

from __future__ import annotations

from . import audit, demo, evaluate, reference, sandbox, screen, serve, synth
from .common import app

__all__ = ["app", "audit", "demo", "evaluate", "main", "reference", "sandbox", "screen", "serve", "synth"]


def main() -> None:
    app()
