"""The typer app every command module registers on, and what several commands share: the one-line error
(exit 2), the evaluation date, the trial option."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="AXIOM (NCT05333458) trial eligibility from FHIR R4 data.")

AsOf = Annotated[str | None, typer.Option("--as-of", help="Evaluation date YYYY-MM-DD (default: today)")]
TrialOption = Annotated[str, typer.Option("--trial", help="Trial definition: a YAML file, or the id of one in "
                                          "mappings/trials/", envvar="AXIOM_TRIAL", show_envvar=True)]


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


def configuration_error(exc: ValueError) -> typer.Exit:
    """A settings model's first validation error (pydantic), or a settings check's message, as one line."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return fail(f"configuration: {first['loc']}: {first['msg']}")
    return fail(str(exc))
