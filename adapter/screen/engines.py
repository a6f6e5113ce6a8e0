"""Engines: the sources, a trial and an evaluation date in; one result per candidate out.

An engine is a plain function (`Engine`). `local` runs here: a DuckDB pass narrows (narrow.py), a second
gathers the candidates' resources (gather.py), and the one Python engine decides each (decide.py). `spark`
(spark.py: Spark SQL narrows and gathers, the same decide.py runs grouped by patient) gives the same
results: everything downstream — worklist, CSV, HTML — reads only `EngineRun`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import duckdb

from ..trials import Trial, load_trial
from .db import open_db, read_error, threads
from .decide import PatientResult, decide, worker_pool
from .gather import STRAYS, Chart, gather
from .narrow import SCAN, Narrowed, cohort_codes, narrow, scan_files, scan_lines
from .progress import Steps
from .sources import SourceError, Sources

log = logging.getLogger("axiom_cds.screen")


@dataclass
class EngineRun:
    """`screened`: Patients seen. `candidates`: Patients with a cohort diagnosis code (the narrowing's
    output). `results`: one per candidate, and one per cohort-coded reference without a Patient resource
    (with a `problem`). `notes`: what a reader of the worklist must know about the source (counts only)."""

    screened: int
    candidates: int
    results: list[PatientResult]
    notes: list[str] = field(default_factory=list)


Engine = Callable[[Sources, str, date, Steps], EngineRun]


def local_engine(sources: Sources, trial: str, as_of: date, steps: Steps) -> EngineRun:
    definition = load_trial(trial)
    with worker_pool(threads(), trial) as pool:  # forked before DuckDB opens: no thread to lose
        started = time.perf_counter()
        with open_db() as con:
            try:
                narrowed, charts = _narrow_and_gather(con, sources, definition, steps)
            except duckdb.Error as exc:
                raise read_error(exc, sources.files) from None
            gathered_at = time.perf_counter()
            tasks = [(c.patient, c.lines(), as_of.isoformat(), trial) for c in charts]
            log.info("screen gathered", extra={"files": len(sources.files), "patients": narrowed.screened,
                                                "conditions": narrowed.conditions, "candidates": len(charts),
                                                "resources": sum(len(lines) for _, lines, _, _ in tasks),
                                                "seconds": round(gathered_at - started, 3)})
            steps.step("deciding each candidate", total=len(charts))
            decided = decide(tasks, pool)  # the workers start now, while DuckDB closes
        results = []
        for result in decided:
            results.append(result)
            steps.advance()
    results += without_patient(narrowed)
    log.info("screen decided", extra={"candidates": len(charts), "unreadable": sum(r.report is None for r in results),
                                      "seconds": round(time.perf_counter() - gathered_at, 3)})
    return EngineRun(narrowed.screened, len(narrowed.candidates), results, source_notes(narrowed))


def without_patient(narrowed: Narrowed) -> list[PatientResult]:
    """A result (a problem, no report) per cohort-coded reference to a patient the source has no Patient for."""
    return [PatientResult(ref, None, None, "a Condition with a cohort diagnosis code refers to this patient, "
                          "and the source has no Patient resource for it") for ref in narrowed.without_patient]


def source_notes(narrowed: Narrowed) -> list[str]:
    """What a reader of the worklist must know about the source, whichever engine narrowed it."""
    if not narrowed.not_relative:
        return []
    return [f"{narrowed.not_relative} Condition(s) with a cohort diagnosis code refer to their patient by an "
            "absolute URL or urn: a file source attributes only relative references (Patient/id), as "
            "`axiom-cds evaluate` does for a Bundle without fullUrls"]


def _narrow_and_gather(con: duckdb.DuckDBPyConnection, sources: Sources, definition: Trial, steps: Steps
                       ) -> tuple[Narrowed, list[Chart]]:
    """Narrow the files led by Patients or Conditions (an export's: a few percent of the bytes), gather from
    every file; Patients and Conditions met in the other files (another layout) are narrowed then, and new
    candidates gathered in one more pass."""
    led = sources.led_by("Patient", "Condition")
    steps.step("narrowing: cohort diagnosis codes")
    codes = cohort_codes(definition)
    scan_files(con, led, codes)
    narrowed = narrow(con, codes)
    if not narrowed.candidates and len(led) == len(sources.files):
        return narrowed, []
    steps.step("gathering the candidates' resources")
    charts = gather(con, sources, narrowed.candidates, led)
    strays_row = con.execute(f"SELECT count(*) FROM {STRAYS}").fetchone()
    if strays_row and strays_row[0]:
        scan_lines(con, STRAYS, codes)
        again = narrow(con, codes)
        new = sorted(set(again.candidates) - set(narrowed.candidates))
        if new:
            steps.step("gathering the candidates found outside the Patient and Condition files")
            charts = sorted([*charts, *gather(con, sources, new, sources.files)], key=lambda c: c.patient_id)
        narrowed = again
    con.execute(f"DROP TABLE IF EXISTS {STRAYS}; DROP TABLE IF EXISTS {SCAN}")
    return narrowed, charts


def spark_engine(sources: Sources, trial: str, as_of: date, steps: Steps, master: str | None = None) -> EngineRun:
    """`--engine spark` (spark.py) on `master` (default AXIOM_SPARK_MASTER, else local[*]). PySpark (an
    optional extra) is imported only when this engine runs."""
    from .spark import run_spark  # noqa: PLC0415

    return run_spark(sources, trial, as_of, steps, master)


ENGINES: dict[str, Engine] = {"local": local_engine, "spark": spark_engine}


def engine_named(name: str, *, spark_master: str | None = None) -> Engine:
    """The engine `name`; for spark, on `spark_master` when given."""
    found = ENGINES.get(name)
    if found is None:
        raise SourceError(f"--engine {name} is not available in this version (available: {', '.join(ENGINES)})")
    if name == "spark" and spark_master:
        def on_master(sources: Sources, trial: str, as_of: date, steps: Steps) -> EngineRun:
            return spark_engine(sources, trial, as_of, steps, spark_master)
        return on_master
    return found
