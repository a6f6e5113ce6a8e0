"""`axiom-cds sandbox`: a local FHIR server with the demo patients plus this service, on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import AsOf, app, fail, parse_as_of


@app.command()
def sandbox(
    fhir_port: Annotated[int | None, typer.Option("--fhir-port", help="FHIR server port (default 8090; "
                                                  "with --check a free one)", show_default=False)] = None,
    port: Annotated[int | None, typer.Option("--port", help="CDS Hooks service port (default 8080; with "
                                             "--check a free one)", show_default=False)] = None,
    as_of: AsOf = None,
    directory: Annotated[Path, typer.Option("--dir", help="Where the FHIR data, hook bodies and feedback go")]
    = Path(".sandbox"),
    check: Annotated[bool, typer.Option("--check", help="Run two example hooks, verify their verdicts, stop "
                                        "(exit 1 if a card is unexpected)")] = False,
    keep_data: Annotated[bool, typer.Option("--keep-data", help="Reuse the FHIR data and the feedback from the "
                                            "last run (patients you added, cards dismissed); default: start empty")]
    = False,
) -> None:
    """Local sandbox: a FHIR server with the demo patients plus this service, on 127.0.0.1."""
    from ..fhir_sandbox import FhirSandboxError
    from ..sandbox import SandboxError, SandboxOptions, run_sandbox

    options = SandboxOptions(directory, parse_as_of(as_of), fhir_port, port, check, keep_data)
    try:
        status = run_sandbox(options, typer.echo)
    except (SandboxError, FhirSandboxError) as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(status)
