"""`axiom-cds evaluate`: one patient — a Bundle file (or stdin) or a patient on a FHIR server — against every
criterion, as the JSON report, the CDS Hooks card or a text table."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import AsOf, TrialOption, app, fail, parse_as_of

if TYPE_CHECKING:
    from ..criteria.model import EligibilityReport


class Format(StrEnum):
    json = "json"
    card = "card"
    text = "text"


@app.command()
def evaluate(
    bundle: Annotated[Path | None, typer.Argument(help="FHIR Bundle (JSON) with one Patient; - for stdin",
                                                  show_default=False)] = None,
    as_of: AsOf = None,
    fmt: Annotated[Format, typer.Option("--format", help="json report, CDS Hooks card, or text table")]
    = Format.json,
    fhir_server: Annotated[str | None, typer.Option("--fhir-server", help="FHIR R4 base URL")] = None,
    patient: Annotated[str | None, typer.Option("--patient", help="Patient id on --fhir-server")] = None,
    token: Annotated[str | None, typer.Option("--token", help="Bearer token for --fhir-server",
                                              envvar="AXIOM_FHIR_TOKEN", show_envvar=True)] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per FHIR request")] = 30.0,
    trial: TrialOption = "axiom",
) -> None:
    """Evaluate one patient against every AXIOM criterion."""
    import asyncio

    from ..engine import evaluate_bundle, evaluate_record, fhir_wanted
    from ..errors import FhirServerError, InputError
    from ..fhir.bundle import read_bytes
    from ..fhir.urls import base_url_problem
    from ..trials import load_trial

    when = parse_as_of(as_of)
    try:
        load_trial(trial)  # a bad definition fails before any FHIR call
        if fhir_server is not None:
            from ..fhir.server import fetch_record

            if bundle is not None:
                raise fail("give either a BUNDLE file or --fhir-server, not both")
            if not patient:
                raise fail("--fhir-server needs --patient ID")
            if (problem := base_url_problem(fhir_server)) is not None:  # said without repeating the URL
                raise fail(f"--fhir-server {problem}")
            record = asyncio.run(fetch_record(fhir_server, patient, fhir_wanted(load_trial(trial)), when, token,
                                             timeout))
            report = evaluate_record(record, when, trial)
        else:
            if bundle is None:
                raise fail("give a BUNDLE file, or --fhir-server URL --patient ID")
            data = sys.stdin.buffer.read() if str(bundle) == "-" else read_bytes(bundle)
            report = evaluate_bundle(data, when, trial)
    except (InputError, FhirServerError) as exc:
        raise fail(str(exc)) from None
    typer.echo(output(report, fmt))


def output(report: EligibilityReport, fmt: Format) -> str:
    import orjson

    from ..report.card import cards_response
    from ..report.text import render

    if fmt is Format.text:
        return render(report)
    body = report.to_json() if fmt is Format.json else cards_response(report)
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
