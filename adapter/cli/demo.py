"""`axiom-cds demo`: the demo patients written as Bundles and evaluated, for a first look without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import AsOf, app, parse_as_of


@app.command()
def demo(
    as_of: AsOf = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the demo Bundles")] = Path(".sandbox/demo"),
) -> None:
    """Write the demo patients as FHIR Bundles and evaluate each one."""
    from ..demo import run_demo

    typer.echo(run_demo(out, parse_as_of(as_of)))
