"""`axiom-cds audit export`: the audit trail (one row per evaluation) as JSON lines or CSV on stdout."""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from .common import app, fail

audit_app = typer.Typer(help="The audit trail: one row per evaluation.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("export")
def audit_export(
    database_url: Annotated[str | None, typer.Option(help="Database [default: AXIOM_DATABASE_URL]")] = None,
    since: Annotated[str | None, typer.Option(help="Only evaluations on or after this date/time (ISO 8601)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
) -> None:
    """Write the audit rows (who asked, which patient, verdict, criterion statuses, trial version) to stdout."""
    import orjson

    from ..cds.settings import Settings
    from ..store import Store

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
