"""The narrowing pass: which patients have a code of one of the trial's cohort diagnoses.

DuckDB `read_ndjson` with explicit columns (never auto-detected: a file of odd data must not change the
schema) over the files an export leads with Patients or Conditions (sources.py); the Patients and
Conditions met in any other file are added from the gathering pass (`scan_lines`), so any layout is read.
The columns that can hold anything in real data — `subject`, `patient`, `code`, `extension`, `meta` — are
read as JSON: an element of an unexpected type is a value the SQL finds nothing in, not an error; only a
line that is not JSON (or repeats a key) stops the screen.

The codes are never listed here: the trial's cohort criteria (kinds in COHORT_KINDS) name condition sets
of mappings/conditions.yaml, and each distinct (system, code) of the source's Conditions — a few thousand
at most — is matched in Python by the same `CodeSet.match` the engine uses (ICD-O-3 ranges and behaviours,
ICD-10-CM prefixes, exact codes), in Condition.code and in the mCODE histology extension, the places the
engine reads them. A set matched by profile or body site adds its profiles and the set its sites lie
within. The result is a superset of the patients the engine puts in a cohort: a refuted or provisional
Condition, one recorded after the evaluation date, or one of another patient's is a candidate that the
engine then decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import tables
from ..criteria.kinds import COHORT_KINDS
from ..fhir.wire import reference_key
from .db import MAX_OBJECT_BYTES, file_list

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    import duckdb

    from ..trials import Trial

# explicit columns: only what the narrowing reads; the shapes real data varies in are JSON
COLUMNS = ("{'resourceType': 'VARCHAR', 'id': 'VARCHAR', 'subject': 'JSON', 'patient': 'JSON', "
           "'code': 'JSON', 'extension': 'JSON', 'meta': 'JSON'}")


@dataclass(frozen=True)
class CohortCodes:
    """What puts a Condition in one of the trial's cohort diagnosis sets (or may: a superset)."""

    sets: tuple[tables.CodeSet, ...]
    histology_extension: str
    profiles: frozenset[str]

    def matches(self, system: str | None, code: str | None) -> bool:
        return any(s.match(system, code) is not None for s in self.sets)


def cohort_codes(trial: Trial) -> CohortCodes:
    """The condition sets the trial's cohort criteria name, with the sets their body sites lie within."""
    table = tables.conditions()
    wanted = [name for spec in trial.specs if spec.kind in COHORT_KINDS
              for name in spec.params.condition_sets()]
    names: dict[str, None] = {}
    while wanted:
        name = wanted.pop(0)
        if name not in names:
            names[name] = None
            within = table.sets[name].body_site_within
            if within:
                wanted.append(within)
    sets = tuple(table.sets[name] for name in names)
    return CohortCodes(sets, table.histology_extension, frozenset(p for s in sets for p in s.profiles))


@dataclass(frozen=True)
class Narrowed:
    """What the narrowing found. `candidates`: ids of the Patients with a cohort diagnosis code, sorted.
    `without_patient`: references with such a code and no Patient resource in the source. `not_relative`:
    cohort Conditions whose subject is an absolute or urn reference (a Bundle without fullUrls does not
    attribute them to anyone)."""

    screened: int
    candidates: tuple[str, ...]
    without_patient: tuple[str, ...]
    not_relative: int
    conditions: int


SCAN = "scan"  # the temporary table of Patients and Conditions the narrowing reads


def scan_files(con: duckdb.DuckDBPyConnection, files: tuple[Path, ...]) -> None:
    """The Patients and Conditions of these files into `scan`: only the columns the narrowing reads."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {SCAN} (type VARCHAR, id VARCHAR, ref VARCHAR, code JSON, "
                "extension JSON, meta JSON)")
    if not files:
        return
    con.execute(f"""
        INSERT INTO {SCAN}
        SELECT resourceType, id,
               coalesce(json_extract_string(subject, '$.reference'), json_extract_string(patient, '$.reference')),
               code, extension, meta
        FROM read_ndjson($files, columns = {COLUMNS}, format = 'newline_delimited', compression = 'auto_detect',
                         maximum_object_size = {MAX_OBJECT_BYTES})
        WHERE resourceType IN ('Patient', 'Condition')
    """, {"files": file_list(files)})


def scan_lines(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Add the Patients and Conditions among the raw lines of `table` (column `json`), found elsewhere."""
    con.execute(f"""
        INSERT INTO {SCAN}
        SELECT type, json_extract_string(json, '$.id'),
               coalesce(json_extract_string(json, '$.subject.reference'),
                        json_extract_string(json, '$.patient.reference')),
               json_extract(json, '$.code'), json_extract(json, '$.extension'), json_extract(json, '$.meta')
        FROM {table} WHERE type IN ('Patient', 'Condition')
    """)


def _coded_refs(con: duckdb.DuckDBPyConnection, codes: CohortCodes) -> list[str]:
    """Subject references of the Conditions with a cohort code (in code or histology) or profile."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE cond_codes AS
        WITH cond AS (SELECT ref, code, extension FROM {SCAN} WHERE type = 'Condition' AND ref IS NOT NULL)
        SELECT ref, json_extract_string(c, '$.system') AS system, json_extract_string(c, '$.code') AS code
        FROM (SELECT ref, unnest(json_extract(code, '$.coding[*]')) AS c FROM cond
              UNION ALL
              SELECT ref, unnest(json_extract(e, '$.valueCodeableConcept.coding[*]')) AS c
              FROM (SELECT ref, unnest(json_extract(extension, '$[*]')) AS e FROM cond)
              WHERE json_extract_string(e, '$.url') = $histology)
    """, {"histology": codes.histology_extension})
    distinct = con.execute("SELECT DISTINCT system, code FROM cond_codes "
                           "WHERE system IS NOT NULL AND code IS NOT NULL").fetchall()
    matched = [(system, code) for system, code in distinct if codes.matches(system, code)]
    con.execute("CREATE OR REPLACE TEMP TABLE matched (system VARCHAR, code VARCHAR)")
    if matched:
        con.executemany("INSERT INTO matched VALUES (?, ?)", matched)
    refs = [r for (r,) in con.execute("SELECT DISTINCT ref FROM cond_codes JOIN matched USING (system, code)")
            .fetchall()]
    if codes.profiles:
        refs += [r for (r,) in con.execute(f"""
            SELECT DISTINCT ref FROM (
                SELECT ref, unnest(json_extract_string(meta, '$.profile[*]')) AS p
                FROM {SCAN} WHERE type = 'Condition' AND ref IS NOT NULL)
            WHERE split_part(p, '|', 1) IN (SELECT unnest($profiles))
        """, {"profiles": sorted(codes.profiles)}).fetchall()]
    con.execute("DROP TABLE cond_codes; DROP TABLE matched")
    return refs


def coded_patients(refs: Iterable[str]) -> tuple[set[str], int]:
    """The Patient ids the subject references of cohort-coded Conditions name (`reference_key`, as the
    engine attributes them), and how many of those references are absolute or urn (each engine's count)."""
    coded: set[str] = set()
    not_relative = 0
    for ref in refs:
        key = reference_key(ref)
        if key.startswith("Patient/"):
            coded.add(key.removeprefix("Patient/"))
            not_relative += "://" in ref or ref.startswith("urn:")
    return coded, not_relative


def narrow(con: duckdb.DuckDBPyConnection, trial: Trial) -> Narrowed:
    """The candidates among what `scan` holds: the Patients with a cohort diagnosis code."""
    coded, not_relative = coded_patients(_coded_refs(con, cohort_codes(trial)))
    con.execute("CREATE OR REPLACE TEMP TABLE coded (id VARCHAR)")
    if coded:
        con.executemany("INSERT INTO coded VALUES (?)", [(i,) for i in sorted(coded)])
    present = {i for (i,) in con.execute(
        f"SELECT DISTINCT id FROM {SCAN} WHERE type = 'Patient' AND id IN (SELECT id FROM coded)").fetchall()}
    counts = con.execute(f"SELECT count(DISTINCT id) FILTER (WHERE type = 'Patient') + "
                         f"count(*) FILTER (WHERE type = 'Patient' AND id IS NULL), "
                         f"count(*) FILTER (WHERE type = 'Condition') FROM {SCAN}").fetchone()
    con.execute("DROP TABLE coded")
    return Narrowed(
        screened=int(counts[0]) if counts else 0,
        candidates=tuple(sorted(present)),
        without_patient=tuple(f"Patient/{i}" for i in sorted(coded - present)),
        not_relative=not_relative,
        conditions=int(counts[1]) if counts else 0)
