"""`axiom-cds synth`: seeded synthetic patients as Bundles, or a whole population as Bulk Data NDJSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import app, fail, parse_as_of


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Directory to write the Bundles (with --population: the NDJSON "
                                        "files) into")],
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives byte-identical files")] = 7,
    count: Annotated[int, typer.Option(help="Random patients to write")] = 6,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Dates are relative to this day (default: today)")]
    = None,
    scenarios: Annotated[bool, typer.Option("--scenarios", help="Also write the named scenarios")] = False,
    population: Annotated[int | None, typer.Option(
        "--population", min=1, help="Instead: N patients as Bulk Data NDJSON (one file per resource type, all "
        "patients interleaved; a few percent with a cancer, far fewer with a sarcoma), for `screen`")] = None,
    gzip: Annotated[bool, typer.Option("--gzip", help="With --population: write *.ndjson.gz")] = False,
) -> None:
    """Write seeded synthetic AXIOM patients as FHIR Bundles (one Patient each), or a population as NDJSON."""
    if population is not None:
        from ..synth.population import write_population

        if scenarios:
            raise fail("--scenarios writes Bundles: it cannot be combined with --population")
        written = write_population(out, seed, population, parse_as_of(as_of), compress=gzip)
        for path in written.paths:
            typer.echo(str(path))
        return
    if gzip:
        raise fail("--gzip needs --population")
    from ..synth.generator import write_bundles

    for path in write_bundles(out, seed, count, parse_as_of(as_of), scenarios=scenarios):
        typer.echo(str(path))
