"""`axiom-cds`: evaluate a Bundle file or a patient on a FHIR server; serve the CDS Hooks service.

Bad input never produces a traceback: one line on stderr, exit status 2.
"""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer
import uvicorn
from pydantic import ValidationError

from .cds.issuers import auth_config, testing_only_warning
from .cds.protocol import uvicorn_limits
from .cds.settings import Settings
from .cds.shutdown import serve_until_stopped
from .cds.tls import tls_options
from .criteria.model import EligibilityReport
from .demo import run_demo
from .engine import evaluate_bundle, evaluate_record, fhir_wanted
from .errors import FhirServerError, InputError
from .fhir.bundle import read_bytes
from .fhir.server import fetch_record
from .fhir.urls import base_url_problem
from .logs import configure as configure_logging
from .report.card import cards_response
from .report.text import render
from .review.config import review_config
from .review.settings import ReviewSettings
from .store import Store
from .synth.generator import write_bundles
from .trials import load_trial

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="AXIOM (NCT05333458) trial eligibility from FHIR R4 data.")


class Format(StrEnum):
    json = "json"
    card = "card"
    text = "text"


def fail(message: str) -> typer.Exit:
    typer.echo(f"axiom-cds: error: {message}", err=True)
    return typer.Exit(2)


def parse_as_of(value: str | None) -> date:
    if value is None:
        return date.today()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise fail(f"--as-of must be a date YYYY-MM-DD, got {value!r}") from None


def output(report: EligibilityReport, fmt: Format) -> str:
    if fmt is Format.text:
        return render(report)
    body = report.to_json() if fmt is Format.json else cards_response(report)
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()


@app.command()
def evaluate(
    bundle: Annotated[Path | None, typer.Argument(help="FHIR Bundle (JSON) with one Patient; - for stdin",
                                                  show_default=False)] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Evaluation date YYYY-MM-DD (default: today)")]
    = None,
    fmt: Annotated[Format, typer.Option("--format", help="json report, CDS Hooks card, or text table")]
    = Format.json,
    fhir_server: Annotated[str | None, typer.Option("--fhir-server", help="FHIR R4 base URL")] = None,
    patient: Annotated[str | None, typer.Option("--patient", help="Patient id on --fhir-server")] = None,
    token: Annotated[str | None, typer.Option("--token", help="Bearer token for --fhir-server",
                                              envvar="AXIOM_FHIR_TOKEN", show_envvar=True)] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per FHIR request")] = 30.0,
    trial: Annotated[str, typer.Option("--trial", help="Trial definition: a YAML file, or the id of one in "
                                       "mappings/trials/", envvar="AXIOM_TRIAL", show_envvar=True)] = "axiom",
) -> None:
    """Evaluate one patient against every AXIOM criterion."""
    when = parse_as_of(as_of)
    try:
        load_trial(trial)  # a bad definition fails before any FHIR call
        if fhir_server is not None:
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


@app.command()
def demo(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Evaluation date YYYY-MM-DD (default: today)")]
    = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the demo Bundles")] = Path(".sandbox/demo"),
) -> None:
    """Write the demo patients as FHIR Bundles and evaluate each one."""
    typer.echo(run_demo(out, parse_as_of(as_of)))


audit_app = typer.Typer(help="The audit trail: one row per evaluation.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("export")
def audit_export(
    database_url: Annotated[str | None, typer.Option(help="Database [default: AXIOM_DATABASE_URL]")] = None,
    since: Annotated[str | None, typer.Option(help="Only evaluations on or after this date/time (ISO 8601)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
) -> None:
    """Write the audit rows (who asked, which patient, verdict, criterion statuses, trial version) to stdout."""
    if fmt not in ("jsonl", "csv"):
        raise fail("--format must be jsonl or csv")
    try:
        start = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise fail(f"--since must be an ISO 8601 date or date-time, got {since!r}") from None
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    store = Store(database_url or Settings().database_url)
    try:
        rows = store.audit_rows(start)
        if fmt == "jsonl":
            for row in rows:
                typer.echo(orjson.dumps(row).decode())
        else:
            writer = None
            for row in rows:
                flat = {**row, "statuses": ";".join(f"{k}={v}" for k, v in row["statuses"].items())}
                if writer is None:
                    writer = csv.DictWriter(sys.stdout, fieldnames=list(flat))
                    writer.writeheader()
                writer.writerow(flat)
    finally:
        store.close()


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
        from .synth.population import write_population  # noqa: PLC0415 (only for --population)

        if scenarios:
            raise fail("--scenarios writes Bundles: it cannot be combined with --population")
        written = write_population(out, seed, population, parse_as_of(as_of), compress=gzip)
        for path in written.paths:
            typer.echo(str(path))
        return
    if gzip:
        raise fail("--gzip needs --population")
    for path in write_bundles(out, seed, count, parse_as_of(as_of), scenarios=scenarios):
        typer.echo(str(path))


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
    as_of: Annotated[str | None, typer.Option("--as-of", help="Evaluation date YYYY-MM-DD (default: today)")]
    = None,
    trial: Annotated[str, typer.Option("--trial", help="Trial definition: a YAML file, or the id of one in "
                                       "mappings/trials/", envvar="AXIOM_TRIAL", show_envvar=True)] = "axiom",
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
    from .screen import screen as run_screen  # noqa: PLC0415 (DuckDB loads only to screen)

    when = parse_as_of(as_of)
    if verbose:
        configure_logging("INFO", True)
    if (source is None) == (fhir_server is None):
        raise fail("give a folder of NDJSON files or --fhir-server URL (one of them)")
    if (client_id is None) != (private_key is None):
        raise fail("--client-id and --private-key go together (SMART Backend Services)")
    if spark_master:
        os.environ["AXIOM_SPARK_MASTER"] = spark_master  # what the spark engine reads (adapter/screen/spark.py)
    try:
        if fhir_server is not None:
            source = _download_population(fhir_server, out / "export", group, token, client_id, private_key,
                                          tuple(allow_file_origin or ()), trial, when)
        assert source is not None
        summary = run_screen(source, out, when, trial, engine.value, progress)
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
    from .bulk import fetch_population  # noqa: PLC0415 (only this command downloads)
    from .bulk.auth import BackendServicesConfig  # noqa: PLC0415
    from .bulk.errors import ExportCancelledError  # noqa: PLC0415

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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8080]")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [default: 1]")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Accept calls without a JWT (local sandbox only)")]
    = False,
) -> None:
    """Run the CDS Hooks service. Configuration: AXIOM_* environment variables or AXIOM_CONFIG=file.yaml."""
    # Options become environment so that every worker process builds the same Settings.
    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"AXIOM_{name}"] = str(value)
    if no_auth:
        os.environ["AXIOM_AUTH_REQUIRED"] = "false"
    try:
        settings = Settings()
    except ValidationError as exc:
        raise fail(f"configuration: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    try:
        load_trial(settings.trial)  # a bad AXIOM_TRIAL stops the service here, in one line
    except InputError as exc:
        raise fail(str(exc)) from None
    try:
        auth = auth_config(settings)  # the same checks as every worker's create_app, here in one line
        tls = tls_options(settings)  # certificate and key readable and matching (uvicorn: a traceback per worker)
    except ValueError as exc:  # TlsError too
        raise fail(str(exc)) from None
    try:
        review_config(ReviewSettings(), settings)  # the review app's settings: one line here, not per worker
    except ValidationError as exc:
        raise fail(f"configuration: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    except ValueError as exc:
        raise fail(str(exc)) from None
    configure_logging(settings.log_level, settings.log_json)  # only once the service will start
    if auth is None:
        typer.secho("WARNING: authentication is OFF (--no-auth). Local sandbox only — never with real patient "
                    "data.", err=True, fg="red", bold=True)
    for issuer in auth.issuers if auth else ():
        if issuer.testing_only:
            typer.secho(f"WARNING: {testing_only_warning(issuer)}", err=True, fg="red", bold=True)
    for warning in tls.warnings:
        typer.secho(f"WARNING: {warning}", err=True, fg="red", bold=True)
    # access_log off: uvicorn's line carries the query string; the service logs its own (adapter/logs.py)
    config = uvicorn.Config("adapter.cds.app:served_app", factory=True, host=settings.host, port=settings.port,
                            workers=settings.workers, log_level=settings.log_level.lower(), access_log=False,
                            log_config=None, timeout_graceful_shutdown=settings.shutdown_grace_s,
                            timeout_worker_healthcheck=settings.worker_start_timeout_s,
                            **uvicorn_limits(settings), **tls.options)
    serve_until_stopped(config)  # SIGTERM/SIGINT: in-flight hooks finish, exit 0 (adapter/cds/shutdown.py)


@app.command()
def sandbox(
    fhir_port: Annotated[int | None, typer.Option("--fhir-port", help="FHIR server port (default 8090; "
                                                  "with --check a free one)", show_default=False)] = None,
    port: Annotated[int | None, typer.Option("--port", help="CDS Hooks service port (default 8080; with "
                                             "--check a free one)", show_default=False)] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Evaluation date YYYY-MM-DD (default: today)")]
    = None,
    directory: Annotated[Path, typer.Option("--dir", help="Where the FHIR data, hook bodies and feedback go")]
    = Path(".sandbox"),
    check: Annotated[bool, typer.Option("--check", help="Run two example hooks, verify their verdicts, stop "
                                        "(exit 1 if a card is unexpected)")] = False,
    keep_data: Annotated[bool, typer.Option("--keep-data", help="Reuse the FHIR data and the feedback from the "
                                            "last run (patients you added, cards dismissed); default: start empty")]
    = False,
) -> None:
    """Local sandbox: a FHIR server with the demo patients plus this service, on 127.0.0.1."""
    from .fhir_sandbox import FhirSandboxError  # noqa: PLC0415 (the web app loads only when serving)
    from .sandbox import SandboxError, SandboxOptions, run_sandbox  # noqa: PLC0415

    options = SandboxOptions(directory, parse_as_of(as_of), fhir_port, port, check, keep_data)
    try:
        status = run_sandbox(options, typer.echo)
    except (SandboxError, FhirSandboxError) as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(status)


@app.command()
def reference(
    out: Annotated[Path, typer.Option("--out", help="Where the Markdown pages go")] = Path("docs/reference"),
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 naming the pages that differ "
                                        "from the data")] = False,
) -> None:
    """The criteria and code-mapping reference, generated from mappings/ (AXIOM_MAPPINGS honoured)."""
    from . import reference as ref  # noqa: PLC0415 (only this command renders Markdown)

    try:
        pages = ref.documents()
        changed = ref.stale(out, pages) if check else ref.write(out, pages)
    except ref.FAILURES as exc:  # a bad mappings file, an unwritable --out
        why = f"a mappings table lacks the key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise fail(f"reference: {' '.join(why.split())}") from None
    if check and changed:
        typer.echo(f"axiom-cds: {out} is stale ({', '.join(changed)}): run `{ref.COMMAND} --out {out}`", err=True)
        raise typer.Exit(1)
    typer.echo(f"{out}: {len(pages)} pages, " + (f"{len(changed)} updated" if changed else "up to date"))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
