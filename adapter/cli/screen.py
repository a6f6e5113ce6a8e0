"""`axiom-cds screen`: pre-screen a whole population — a folder of Bulk Data NDJSON, or a FHIR server's,
downloaded first — into a coordinator's worklist (adapter/screen, adapter/bulk)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .common import AsOf, TrialOption, app, fail, parse_as_of


class ScreenEngine(StrEnum):
    local = "local"
    spark = "spark"


@app.command()
def screen(
    out: Annotated[Path, typer.Option("--out", help="Where worklist.json, worklist.csv and report.html go (mode "
                                      "0600: they hold patient data)", show_default=False)],
    source: Annotated[Path | None, typer.Argument(help="Folder of FHIR NDJSON files (*.ndjson, *.ndjson.gz), as "
                                                  "Bulk Data $export writes them (or --fhir-server)",
                                                  show_default=False)] = None,
    as_of: AsOf = None,
    trial: TrialOption = "axiom",
    engine: Annotated[ScreenEngine, typer.Option("--engine", help="Where the screen runs: local (DuckDB and this "
                                                 "machine's cores) or spark (PySpark: pip install "
                                                 "'axiom-cds[spark]', and Java 17+)")] = ScreenEngine.local,
    spark_master: Annotated[str | None, typer.Option("--spark-master", envvar="AXIOM_SPARK_MASTER", show_envvar=True,
                                                     help="With --engine spark: the Spark master URL [default: "
                                                     "local[*]]", show_default=False)] = None,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="Progress bar on stderr "
                                                  "[default: when stderr is a terminal]", show_default=False)]
    = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step's counts and timings (JSON "
                                          "lines on stderr; never a patient's data)")] = False,
    fhir_server: Annotated[str | None, typer.Option("--fhir-server", help="Download the population from this "
                                                    "FHIR server first: Bulk Data $export, or FHIR search when it "
                                                    "has none (into OUT/export; rerun to resume)",
                                                    show_default=False)] = None,
    group: Annotated[str | None, typer.Option("--group", help="Export this Group's members only",
                                              show_default=False)] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="AXIOM_FHIR_TOKEN", help="Bearer token for the "
                                              "FHIR server, sent to it only", show_default=False)] = None,
    client_id: Annotated[str | None, typer.Option("--client-id", help="SMART Backend Services client id "
                                                  "(with --private-key)", show_default=False)] = None,
    private_key: Annotated[Path | None, typer.Option("--private-key", help="PEM private key (RS384 or ES384) "
                                                     "registered for --client-id", show_default=False)] = None,
    allow_file_origin: Annotated[list[str] | None, typer.Option("--allow-file-origin", help="A file server "
                                                                "(scheme://host[:port]) the export's manifest "
                                                                "may point to", show_default=False)] = None,
) -> None:
    """Pre-screen every patient of an NDJSON export (or of a FHIR server's, with --fhir-server):
    worklist.json, worklist.csv and report.html in --out."""
    from ..errors import FhirServerError, InputError
    from ..logs import configure as configure_logging
    from ..screen import screen as run_screen

    when = parse_as_of(as_of)
    if verbose:
        configure_logging("INFO", True)
    if (source is None) == (fhir_server is None):
        raise fail("give a folder of NDJSON files or --fhir-server URL (one of them)")
    if (client_id is None) != (private_key is None):
        raise fail("--client-id and --private-key go together (SMART Backend Services)")
    try:
        if fhir_server is not None:
            source = _download_population(fhir_server, out / "export", group, token, client_id, private_key,
                                          tuple(allow_file_origin or ()), trial, when)
        assert source is not None
        summary = run_screen(source, out, when, trial, engine.value, progress, spark_master=spark_master)
    except (InputError, FhirServerError) as exc:
        raise fail(str(exc)) from None
    unread = f", {summary.unreadable} not evaluated (listed in report.html)" if summary.unreadable else ""
    typer.echo(f"{summary.screened} patients screened: {summary.candidates} with a cohort diagnosis code, "
               f"{summary.in_cohort} in a cohort, {summary.likely_eligible} likely eligible{unread}")
    for path in summary.paths:
        typer.echo(str(path))


def _download_population(server: str, dest: Path, group: str | None, token: str | None, client_id: str | None,
                         private_key: Path | None, file_origins: tuple[str, ...], trial: str, as_of: date) -> Path:
    """`screen --fhir-server`: the population as NDJSON in `dest` (adapter/bulk; resumed when rerun)."""
    from ..bulk import fetch_population
    from ..bulk.auth import BackendServicesConfig
    from ..bulk.errors import ExportCancelledError

    auth = BackendServicesConfig(client_id, private_key) if client_id and private_key else None
    try:
        done = fetch_population(server, dest, group=group, auth=auth, token=token, trial=trial,
                                allowed_file_origins=file_origins, as_of=as_of)
    except ExportCancelledError:
        typer.echo("cancelled: the export job was deleted on the server", err=True)
        raise typer.Exit(130) from None
    typer.echo(f"downloaded by {done.method} from {done.server}: {done.patients} patients into {done.directory}",
               err=True)
    return done.directory
