"""`axiom-cds reference [--check]`: the criteria and code-mapping reference pages, generated from mappings/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import app, fail


@app.command()
def reference(
    out: Annotated[Path, typer.Option("--out", help="Where the Markdown pages go")] = Path("docs/reference"),
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 naming the pages that differ "
                                        "from the data")] = False,
) -> None:
    """The criteria and code-mapping reference, generated from mappings/ (AXIOM_MAPPINGS honoured)."""
    from .. import reference as ref

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
