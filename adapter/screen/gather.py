"""The gathering pass: every resource of the candidates, as the raw JSON lines of the source.

One DuckDB statement reads every file (`read_ndjson_objects`: each line as its own text, validated as JSON),
one SELECT per group of files that share a lead type (sources.py) and were or were not narrowed. A line is
parsed only when its text may concern a candidate (`first_look`). A line that starts with its file's lead
type (`{"resourceType":"Observation"…`, as an export writes every line) is of that type, so only that type's
tests run: `Patient/<candidate id>` (one DFA regular expression over the ids) or a `\\u` escape (it could
spell anything) for the engine's types, plus no `Patient/` at all for an Observation or Medication (a result
or Medication without a subject); a candidate's id (read right after `"id":` where an export's Patient
line puts it) or any escape for a narrowed Patient; every Patient and Condition of a file the narrowing did
not read; nothing for a type the engine never reads (an Encounter). A line that starts otherwise gets the
type-blind tests. It is kept only when exact: a candidate's Patient; a
resource whose `subject` (else `patient`) reference is a candidate's (`reference_key`, as the engine
attributes it) and whose type the engine reads (fhir.record.KEPT_TYPES); an Observation or Medication
without any, kept aside (a candidate's report, panel or order may point at it: FHIR then gives it that
patient); a Patient or Condition of a file the narrowing did not read ("strays": narrowed after this pass,
engines.py).

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
from .db import MAX_OBJECT_BYTES

if TYPE_CHECKING:
    import duckdb

    from .sources import Sources

#: Resources without a subject that a candidate's report, panel or order may point at (their patient is
#: then the pointer's): result Observations and Medications.
ORPHAN_TYPES = ("Observation", "Medication")
IDS_PER_PATTERN = 400  # ids in one alternation (RE2 compiles each to a DFA of bounded memory)
POINTERS = (b'"result"', b'"hasMember"', b'"medicationReference"')
ESCAPE = "\\u"  # a JSON escape: it can spell `Patient/…` or an id without their letters appearing
# a line with one: the one-byte search for a backslash skips ahead fastest, the escape is looked for only in
# the lines that have one (a CASE keeps that order; DuckDB may reorder the two tests of an AND)
BACKSLASH = "contains(json, '\\')"
ESCAPED = f"CASE WHEN {BACKSLASH} THEN contains(json, '{ESCAPE}') ELSE false END"
NO_PATIENT = "NOT contains(json, 'Patient/')"  # a result or Medication without a subject (or with another's)
TYPE_FIRST = '{"resourceType":"'  # how an export's line starts: its type is then read from its first characters
TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{0,63}")  # a lead type that may be written into SQL (else: any type)
PATIENT_FIRST = TYPE_FIRST + 'Patient","id":"'  # how an export's Patient line starts: its id follows
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


def _patient_is_candidate(alternations: list[str]) -> tuple[str, dict[str, str]]:
    """The test that a Patient line may be a candidate's (its backslash test apart). A line that starts
    `{"resourceType":"Patient","id":"` (as an export writes a Patient) has its id right there: read by an
    anchored expression, which stops after it; the first `id` is the one the gathering extracts (a key
    twice stops the screen anyway). Any other line has a candidate's id as a string anywhere (a search
    that visits every character: twice the time)."""
    first, first_params = _any_match("json", [f"^{re.escape(PATIENT_FIRST)}(?:{a})\"" for a in alternations], "pfirst")
    anywhere, anywhere_params = _any_match("json", [f'"(?:{a})"' for a in alternations], "patient")
    return (f"CASE WHEN starts_with(json, '{PATIENT_FIRST}') THEN {first} ELSE {anywhere} END",
            {**first_params, **anywhere_params})


def _led(column: str, *types: str) -> str:
    return "(" + " OR ".join(f"starts_with({column}, '{TYPE_FIRST}{t}\"')" for t in types) + ")"


def _any_type(patients: str, refs: str, narrowed: bool) -> str:
    """The first look at a line of any type (its file's lead is not known, or the line starts otherwise):
    `Patient/<candidate id>`, an escape, or the tests that need the line's type, told by its first
    characters when it starts with its resourceType — a Patient or Condition of a file not narrowed (a
    stray), a Patient whose text has a candidate's id as a string (`patients`) or any escape, an Observation
    or Medication without `Patient/`; a line that starts otherwise has the type-blind tests (`Condition`,
    `Patient"`, no `Patient/`). Plain ORs and ANDs: each skips the rows an earlier test settled."""
    strays = "" if narrowed else f"OR {_led('json', 'Patient', 'Condition')} "
    return (f"{refs} OR {ESCAPED} "
            f"OR (NOT starts_with(json, '{TYPE_FIRST}') AND (contains(json, 'Condition') "
            f"OR contains(json, 'Patient\"') OR {NO_PATIENT})) "
            f"{strays}"
            f"OR ({_led('json', 'Patient')} AND ({BACKSLASH} OR {patients})) "
            f"OR ({_led('json', *ORPHAN_TYPES)} AND {NO_PATIENT})")


def first_look(lead: str | None, narrowed: bool, patients: str, refs: str) -> str:
    """What a line of a file led by `lead` must have to be parsed. A line that starts with that type's
    `{"resourceType":"…"` is of that type (the first key is what `json_extract_string` reads), so only the
    tests its type needs run: none for a type the engine does not read (an Encounter is never parsed),
    every line for a Patient or Condition of a file not narrowed (a stray), `patients` or an escape for a
    narrowed Patient, `refs` or an escape for the engine's types, and no `Patient/` for an Observation or
    Medication (a result without a subject). Any other line of the file gets `_any_type`."""
    anywhere = _any_type(patients, refs, narrowed)
    if lead is None or not TYPE_NAME.fullmatch(lead):
        return anywhere
    if lead in ("Patient", "Condition") and not narrowed:
        own = "true"
    elif lead == "Patient":
        own = f"{BACKSLASH} OR {patients}"
    elif lead in ORPHAN_TYPES:
        own = f"{refs} OR {ESCAPED} OR {NO_PATIENT}"
    elif lead in KEPT_TYPES:
        own = f"{refs} OR {ESCAPED}"
    else:
        own = "false"
    led = _led("json", lead)
    return f"({led} AND ({own})) OR (NOT {led} AND ({anywhere}))"


def _groups(sources: Sources, narrowed: tuple[Path, ...]) -> list[tuple[str | None, bool, list[str]]]:
    """The files by lead type and whether the narrowing read them: one first look per group."""
    groups: dict[tuple[str, bool], list[str]] = {}
    for path, lead in zip(sources.files, sources.leads, strict=True):
        groups.setdefault((lead or "", path in narrowed), []).append(str(path))
    return [(lead or None, was_narrowed, files) for (lead, was_narrowed), files in sorted(groups.items())]


def _scan(con: duckdb.DuckDBPyConnection, sources: Sources, ids: Sequence[str], narrowed: tuple[Path, ...],
          only: tuple[str, dict[str, str]] | None = None) -> list[Row]:
    """The lines that are the candidates' (or may be pointed at); strays go to the STRAYS table.

    The first look (`first_look`, or `only`) is a few tests per line, each a literal search that skips
    ahead fast or one regular expression of the candidates' references: a test starting with `"`, or one
    regular expression of them all, would visit every character of every line (measured: several times
    slower). One SELECT per group of files (their lead type, narrowed or not), in one statement."""
    alternations = _alternation(ids)
    refs, ref_params = _any_match("json", [rf'Patient\\?/(?:{a})["/\\]' for a in alternations], "ref")
    in_ref, in_ref_params = _any_match("ref", [f"(?:^|/)(?:{a})(?:/|$)" for a in alternations], "inref")
    patients, patient_params = _patient_is_candidate(alternations)
    # every parameter named is used: the first looks all hold `refs` and `patients` (`_any_type`)
    params: dict[str, Any] = {**in_ref_params, **(only[1] if only is not None else {**ref_params, **patient_params})}
    reads = []
    for k, (lead, was_narrowed, files) in enumerate(_groups(sources, narrowed)):
        look = only[0] if only is not None else first_look(lead, was_narrowed, patients, refs)
        params[f"files{k}"] = files
        reads.append(f"SELECT json, {was_narrowed} AS narrowed FROM read_ndjson_objects($files{k}, "
                     f"compression = 'auto_detect', maximum_object_size = {MAX_OBJECT_BYTES}) WHERE {look}")
    kept = ", ".join(f"'{t}'" for t in KEPT_TYPES)
    orphans = ", ".join(f"'{t}'" for t in ORPHAN_TYPES)
    con.execute("CREATE OR REPLACE TEMP TABLE candidates AS SELECT unnest($ids::VARCHAR[]) AS id", {"ids": list(ids)})
    union = " UNION ALL ".join(reads)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE hits AS
        SELECT json, type, id, ref, stray, mine FROM (
            SELECT json, type, id, ref, NOT narrowed AND type IN ('Patient', 'Condition') AS stray,
                   (type = 'Patient' AND ref IS NULL AND id IN (SELECT id FROM candidates))
                   OR (ref IS NULL AND type IN ({orphans}))
                   OR (ref IS NOT NULL AND type IN ({kept}) AND {in_ref}) AS mine FROM (
                SELECT json, narrowed, f[1] AS type, f[2] AS id, coalesce(f[3], f[4]) AS ref FROM (
                    SELECT json, narrowed,
                           json_extract_string(json, ['$.resourceType', '$.id', '$.subject.reference',
                                                      '$.patient.reference']) AS f
                    FROM ({union}))))
        WHERE stray OR mine
    """, params)
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
