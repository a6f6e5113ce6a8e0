"""The gathering pass: every resource of the candidates, as the raw JSON lines of the source.

One DuckDB scan of every file (`read_ndjson_objects`: each line as its own text, validated as JSON). A line
is parsed only when its text may concern a candidate: `Patient/<candidate id>` in it (one DFA regular
expression over the ids), a `\\u` escape (it could spell anything), a Patient or Condition of a file the
narrowing did not read, a Patient with a candidate's id, or an Observation or Medication without any
`Patient/` (a result or Medication without a subject); the type is told by the line's first characters
when it starts with its resourceType, else by `Condition`, `Patient"` and no `Patient/` in it. It is kept
only when exact: a candidate's Patient; a resource whose `subject` (else `patient`) reference is a
candidate's (`reference_key`, as the engine attributes it) and whose type the engine reads
(fhir.record.KEPT_TYPES); an Observation or Medication without any, kept aside (a candidate's report, panel
or order may point at it: FHIR then gives it that patient); a Patient or Condition of a file the narrowing
did not read ("strays": narrowed after this pass, engines.py).

A subject-less resource a candidate points at whose text names some patient elsewhere is not caught by
the first look; a second, targeted scan fetches whatever a candidate's chart points at and is missing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..fhir.record import KEPT_TYPES
from ..fhir.wire import reference_key
from .db import MAX_OBJECT_BYTES, file_list

if TYPE_CHECKING:
    import duckdb

    from .sources import Sources

#: Resources without a subject that a candidate's report, panel or order may point at (their patient is
#: then the pointer's): result Observations and Medications.
ORPHAN_TYPES = ("Observation", "Medication")
IDS_PER_PATTERN = 400  # ids in one alternation (RE2 compiles each to a DFA of bounded memory)
POINTERS = (b'"result"', b'"hasMember"', b'"medicationReference"')
ESCAPE = "\\u"  # a JSON escape: it can spell `Patient/…` or an id without their letters appearing
TYPE_FIRST = '{"resourceType":"'  # how an export's line starts: its type is then read from its first characters
STRAYS = "strays"  # temporary table: Patients and Conditions of files the narrowing did not read

Row = tuple[str, str | None, str | None, str | None]  # line, type, id, subject-else-patient reference


@dataclass
class Chart:
    """One candidate's resources as raw JSON: its Patient line(s), its own, and the subject-less ones its
    resources point at."""

    patient_id: str
    patients: list[bytes] = field(default_factory=list)
    own: list[bytes] = field(default_factory=list)
    pointed: list[bytes] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)  # `Type/id` of its own resources

    @property
    def patient(self) -> str:
        return f"Patient/{self.patient_id}"

    def lines(self) -> list[bytes]:
        """The Patient first, then the rest in byte order: the same chart whatever the files' order."""
        return [*sorted(self.patients), *sorted(self.own), *sorted(self.pointed)]


def _alternation(ids: Sequence[str]) -> list[str]:
    return ["|".join(re.escape(i) for i in ids[k:k + IDS_PER_PATTERN]) for k in range(0, len(ids), IDS_PER_PATTERN)]


def _any_match(column: str, patterns: list[str], name: str) -> tuple[str, dict[str, str]]:
    """`(regexp_matches(column, $name0) OR …)`, with the parameters."""
    params = {f"{name}{k}": p for k, p in enumerate(patterns)}
    return "(" + (" OR ".join(f"regexp_matches({column}, ${key})" for key in params) or "false") + ")", params


def _led(column: str, *types: str) -> str:
    return "(" + " OR ".join(f"starts_with({column}, '{TYPE_FIRST}{t}\"')" for t in types) + ")"


def _by_type(column: str, patients: str) -> str:
    """The tests that need the line's type, told by its first characters when it starts with its
    resourceType (an export's lines do; `json_extract_string` then reads that same first value): a
    Patient or Condition of a file not narrowed (a stray), a Patient whose text has a candidate's id as a
    string (`patients`) or any escape, an Observation or Medication without `Patient/`. A line of another
    type costs no search, nor a Patient or Condition of a narrowed file: `Condition`, absent, is looked for
    through a whole line, and each line that passes is parsed (measured: most of the first look). A line
    that starts otherwise has the type-blind tests (`Condition`, `Patient"`, no `Patient/`). Plain ORs and
    ANDs, not CASE: only these skip the rows an earlier test settled."""
    no_patient = f"NOT contains({column}, 'Patient/')"
    return (f"(NOT starts_with({column}, '{TYPE_FIRST}') AND (contains({column}, 'Condition') "
            f"OR contains({column}, 'Patient\"') OR {no_patient})) "
            f"OR ({_led(column, 'Patient', 'Condition')} AND NOT list_contains($narrowed, filename)) "
            f"OR ({_led(column, 'Patient')} AND (contains({column}, '\\') OR {patients})) "
            f"OR ({_led(column, *ORPHAN_TYPES)} AND {no_patient})")


def _scan(con: duckdb.DuckDBPyConnection, sources: Sources, ids: Sequence[str], narrowed: tuple[Path, ...],
          only: tuple[str, dict[str, str]] | None = None) -> list[Row]:
    """The lines that are the candidates' (or may be pointed at); strays go to the STRAYS table.

    The first look is a few tests per line, each a literal search that skips ahead fast (`Patient/…` with a
    candidate id, `\\u`, then `_by_type`): a test starting with `"`, or one regular expression of them all,
    would visit every character of every line (measured: several times slower)."""
    alternations = _alternation(ids)
    refs, ref_params = _any_match("json", [rf'Patient\\?/(?:{a})["/\\]' for a in alternations], "ref")
    in_ref, in_ref_params = _any_match("ref", [f"(?:^|/)(?:{a})(?:/|$)" for a in alternations], "inref")
    if only is None:
        patients, patient_params = _any_match("json", [f'"(?:{a})"' for a in alternations], "patient")
        look = f"{refs} OR contains(json, '{ESCAPE}') OR {_by_type('json', patients)}"
        params: dict[str, Any] = {**ref_params, **patient_params}
    else:
        look, params = only
    kept = ", ".join(f"'{t}'" for t in KEPT_TYPES)
    orphans = ", ".join(f"'{t}'" for t in ORPHAN_TYPES)
    con.execute("CREATE OR REPLACE TEMP TABLE candidates (id VARCHAR)")
    if ids:
        con.executemany("INSERT INTO candidates VALUES (?)", [(i,) for i in ids])
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE hits AS
        SELECT json, type, id, ref, stray, mine FROM (
            SELECT json, type, id, ref,
                   NOT list_contains($narrowed, filename) AND type IN ('Patient', 'Condition') AS stray,
                   (type = 'Patient' AND ref IS NULL AND id IN (SELECT id FROM candidates))
                   OR (ref IS NULL AND type IN ({orphans}))
                   OR (ref IS NOT NULL AND type IN ({kept}) AND {in_ref}) AS mine FROM (
                SELECT json, filename, f[1] AS type, f[2] AS id, coalesce(f[3], f[4]) AS ref FROM (
                    SELECT json, filename,
                           json_extract_string(json, ['$.resourceType', '$.id', '$.subject.reference',
                                                      '$.patient.reference']) AS f
                    FROM read_ndjson_objects($files, compression = 'auto_detect', filename = true,
                                             maximum_object_size = {MAX_OBJECT_BYTES})
                    WHERE {look})))
        WHERE stray OR mine
    """, {"files": file_list(sources.files), "narrowed": file_list(narrowed), **params, **in_ref_params})
    if only is None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {STRAYS} AS SELECT json, type FROM hits WHERE stray")
    rows: list[Row] = con.execute("SELECT json, type, id, ref FROM hits WHERE mine").fetchall()
    con.execute("DROP TABLE hits; DROP TABLE candidates")
    return rows


def _pointers(line: bytes) -> list[str]:
    """The references a report, panel or order makes to results, members or its Medication."""
    if not any(p in line for p in POINTERS):
        return []
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError:
        return []
    out: list[str] = []
    for name in ("result", "hasMember"):
        items = resource.get(name)
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and isinstance(item.get("reference"), str):
                out.append(item["reference"])
    med = resource.get("medicationReference")
    if isinstance(med, dict) and isinstance(med.get("reference"), str):
        out.append(med["reference"])
    return out


def pointed_keys(line: bytes) -> list[str]:
    """The resource keys a line points at (`_pointers`, contained `#` references left out), keyed as the
    gathering keys resources: a urn as it is, else `reference_key`."""
    return [ref if ref.startswith("urn:") else reference_key(ref) for ref in _pointers(line)
            if not ref.startswith("#")]


def _point(chart: Chart, pool: dict[str, bytes]) -> set[str]:
    """Add the subject-less resources the chart's resources point at (and what those point at); return
    the keys pointed at that are neither the chart's own nor in the pool."""
    seen: set[str] = set()
    missing: set[str] = set()
    queue = [key for line in chart.own for key in pointed_keys(line)]
    while queue:
        key = queue.pop()
        if key in seen or key in chart.keys:
            continue
        seen.add(key)
        if key not in pool:
            missing.add(key)
            continue
        chart.pointed.append(pool[key])
        queue.extend(pointed_keys(pool[key]))
    return missing


class _Charts:
    def __init__(self, candidates: Sequence[str]) -> None:
        self.by_id = {i: Chart(i) for i in candidates}
        self.pool: dict[str, bytes] = {}

    def take(self, rows: list[Row]) -> None:
        for line, rtype, rid, ref in rows:
            raw = line.encode()
            if rtype == "Patient" and ref is None:
                if rid in self.by_id:
                    self.by_id[rid].patients.append(raw)
                continue
            if ref is None:
                if rid is not None:
                    self.pool.setdefault(f"{rtype}/{rid}", raw)
                continue
            key = reference_key(ref)
            owner = self.by_id.get(key.removeprefix("Patient/")) if key.startswith("Patient/") else None
            if owner is not None:
                owner.own.append(raw)
                owner.keys.add(f"{rtype}/{rid}")


def gather(con: duckdb.DuckDBPyConnection, sources: Sources, candidates: Sequence[str],
           narrowed: tuple[Path, ...]) -> list[Chart]:
    """The candidates' charts, in the order of `candidates`; the Patients and Conditions of the files not
    in `narrowed` are left in the STRAYS table."""
    charts = _Charts(candidates)
    charts.take(_scan(con, sources, candidates, narrowed))
    missing = set()
    for chart in charts.by_id.values():
        missing |= _point(chart, charts.pool)
    wanted = sorted({key.split("/", 1)[1] for key in missing if key.split("/", 1)[0] in ORPHAN_TYPES})
    if wanted:  # subject-less resources whose text names some patient elsewhere: fetch them by id
        only = _any_match("json", [f'"(?:{a})"' for a in _alternation(wanted)], "orphan")
        charts.take([row for row in _scan(con, sources, candidates, narrowed, only) if row[3] is None])
        for chart in charts.by_id.values():
            chart.pointed.clear()
            _point(chart, charts.pool)
    return [charts.by_id[i] for i in candidates]
