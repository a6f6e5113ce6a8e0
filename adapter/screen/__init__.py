"""Population pre-screening (`axiom-cds screen`): the few trial candidates among all of a source's patients.

sources.py finds the NDJSON files; an engine (engines.py: `local` = DuckDB narrowing + gathering, then the
one Python engine per candidate) gives one result per candidate; worklist.py, html.py and output.py write
worklist.json, worklist.csv and report.html (mode 0600). For every patient in the worklist, `overall`,
`cohort` and `statuses` are what `axiom-cds evaluate` gives on a Bundle of that patient's resources; every
patient left out is one the engine calls `not-applicable`. Same input, same bytes out (no time stamps).
Logs carry counts and timings only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import orjson

from ..trials import load_trial
from . import html, output, worklist
from .engines import engine_named
from .progress import steps
from .sources import SourceError, find_sources

__all__ = ["ScreenSummary", "SourceError", "screen"]

log = logging.getLogger("axiom_cds.screen")

FILES = ("worklist.json", "worklist.csv", "report.html")


@dataclass(frozen=True)
class ScreenSummary:
    screened: int
    candidates: int
    in_cohort: int
    likely_eligible: int
    unreadable: int
    paths: tuple[Path, ...]


def screen(source: Path, out: Path, as_of: date, trial: str = "axiom", engine: str = "local",
           progress: bool | None = None, *, spark_master: str | None = None) -> ScreenSummary:
    """Screen every patient of the NDJSON folder `source`; write the worklist into `out`.

    SourceError (one line) on a missing or empty folder, a line that is not JSON, an unwritable `out`, an
    unknown engine; a bad trial definition raises TrialFileError before anything is read. `spark_master`:
    where `--engine spark` runs (default AXIOM_SPARK_MASTER, else local[*]).
    """
    definition = load_trial(trial)
    run_engine = engine_named(engine, spark_master=spark_master)
    sources = find_sources(source)
    output.prepare(out)
    with steps(progress) as shown:
        run = run_engine(sources, trial, as_of, shown)
        shown.step("writing the worklist")
        doc = worklist.build(definition, as_of, run.screened, run.candidates, run.results, run.notes)
        contents = (orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n",
                    worklist.to_csv(doc, definition.criterion_ids).encode(),
                    html.render(doc, definition, run.results).encode())
        paths = tuple(out / name for name in FILES)
        for path, data in zip(paths, contents, strict=True):
            output.write_private(path, data)
    steps_left = {a["step"]: a["remaining"] for a in doc["attrition"]}
    log.info("screen written", extra={"screened": run.screened, "candidates": run.candidates,
                                      "in_cohort": len(doc["patients"]), "unreadable": len(doc["unreadable"])})
    return ScreenSummary(run.screened, run.candidates, len(doc["patients"]), steps_left["likely eligible"],
                         len(doc["unreadable"]), paths)
