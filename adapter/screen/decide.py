"""Deciding each candidate: its chart as one Bundle, through the one engine (`evaluate_bundle`).

No rule is implemented here. A chart becomes the collection Bundle `axiom-cds evaluate` would be given
for that patient (the raw lines as entries, no fullUrl), and the engine's report comes back as its JSON
(`EligibilityReport.to_json`): the same bytes in, the same verdict out. A chart the engine refuses
(InputError: an invalid Patient, two different Patients under one id …) is reported as unreadable, never
as a verdict.

On a machine with more than one core, many candidates are decided by worker processes forked from this
one before DuckDB opens (engines.py): no DuckDB thread exists to be lost in the fork, and a fork of the
small process is quick (forked after the scans, with the allocator's memory still mapped, it took 0.15 s
at 10^5 patients). The workers wait while the scans run. The order of the results is the order of the
charts.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from multiprocessing.pool import Pool
from typing import Any

import orjson

from ..engine import evaluate_bundle, warm_up
from ..errors import InputError

CHUNK = 4  # charts per task sent to a worker (smaller: the workers finish together; bigger: fewer messages)
MIN_PARALLEL = 16  # fewer candidates are decided here: a pool costs more than it saves


@dataclass(frozen=True)
class PatientResult:
    """One candidate: the engine's report as JSON, the name shown in report.html, or why it has no report."""

    patient: str
    report: dict[str, Any] | None
    name: str | None = None
    problem: str | None = None


def bundle_bytes(lines: Iterable[bytes]) -> bytes:
    """A collection Bundle whose entries are these resources, byte for byte."""
    entries = b",".join(b'{"resource":' + line.strip() + b"}" for line in lines)
    return b'{"resourceType":"Bundle","type":"collection","entry":[' + entries + b"]}"


def patient_name(patient_line: bytes) -> str | None:
    """`given family` of the Patient's first name (else its text), for people reading the report."""
    try:
        patient = orjson.loads(patient_line)
    except orjson.JSONDecodeError:
        return None
    names = patient.get("name") if isinstance(patient, dict) else None
    first = names[0] if isinstance(names, list) and names and isinstance(names[0], dict) else {}
    given = first.get("given")
    parts = [p for p in given if isinstance(p, str)] if isinstance(given, list) else []
    if isinstance(first.get("family"), str):
        parts.append(first["family"])
    text = " ".join(parts) or (first["text"] if isinstance(first.get("text"), str) else "")
    return text or None


def decide_one(task: tuple[str, list[bytes], str, str]) -> PatientResult:
    patient, lines, as_of, trial = task
    name = patient_name(lines[0]) if lines else None
    try:
        report = evaluate_bundle(bundle_bytes(lines), date.fromisoformat(as_of), trial)
    except InputError as exc:
        return PatientResult(patient, None, name, str(exc))
    return PatientResult(patient, report.to_json(), name)


def _decide_many(tasks: list[tuple[str, list[bytes], str, str]]) -> list[PatientResult]:
    return [decide_one(t) for t in tasks]


@contextmanager
def worker_pool(processes: int, trial: str) -> Iterator[Pool | None]:
    """Workers forked from this process, warmed up first (code tables, unit registry, trial) so that each
    starts warm; None on one core, or where fork is not the platform's way. Enter it before DuckDB
    opens: a fork copies no thread, and DuckDB's would be missing in the workers."""
    warm_up(trial)
    if processes < 2 or sys.platform != "linux":
        yield None
        return
    pool = multiprocessing.get_context("fork").Pool(processes)
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()


def decide(tasks: list[tuple[str, list[bytes], str, str]], pool: Pool | None) -> Iterator[PatientResult]:
    """Each candidate's result, in the order of `tasks` (a few are decided here: a pool costs more). The
    workers are given their charts at once, before the first result is asked for."""
    if pool is None or len(tasks) < MIN_PARALLEL:
        return (decide_one(t) for t in tasks)
    chunks = [tasks[k:k + CHUNK] for k in range(0, len(tasks), CHUNK)]
    return (result for results in pool.imap(_decide_many, chunks) for result in results)
