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

import duckdb

from .. import tables
from ..criteria.kinds import COHORT_KINDS
from ..fhir.wire import reference_key
from .db import MAX_OBJECT_BYTES, file_list

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from ..trials import Trial

# explicit columns: only what the narrowing reads; the shapes real data varies in are JSON
COLUMNS = ("{'resourceType': 'VARCHAR', 'id': 'VARCHAR', 'subject': 'JSON', 'patient': 'JSON', "
           "'code': 'JSON', 'extension': 'JSON', 'meta': 'JSON'}")
_CODING = "STRUCT(system VARCHAR, code VARCHAR)[]"
# the same, typed as FHIR shapes them (read first: faster; a value of another shape is an error there)
TYPED_COLUMNS = ("{'resourceType': 'VARCHAR', 'id': 'VARCHAR', 'subject': 'STRUCT(reference VARCHAR)', "
                 "'patient': 'STRUCT(reference VARCHAR)', "
                 f"'code': 'STRUCT(coding {_CODING})', "
                 f"'extension': 'STRUCT(url VARCHAR, valueCodeableConcept STRUCT(coding {_CODING}))[]', "
                 "'meta': 'STRUCT(profile VARCHAR[])'}")


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

# A Condition's codings in Condition.code and in the histology extension, and its profiles, read from its
# JSON by `json_transform`: a value of another shape than FHIR's is NULL there (nothing found), not an error.
CODINGS = '[{"system": "VARCHAR", "code": "VARCHAR"}]'
EXTENSIONS = '[{"url": "VARCHAR", "valueCodeableConcept": {"coding": ' + CODINGS + '}}]'


def _narrowing_columns(code: str, extension: str, meta: str, *, typed: bool = False) -> str:
    """`codings` (system, code) and `profiles` of a Condition, from its `code`, `extension`, `meta` (JSON,
    or read typed as FHIR's shapes), and `unreadable`: its code is no CodeableConcept a code can be read
    from (the engine's mapping/conditions.py `unreadable_codes`: the diagnosis is then unknown, so the
    patient is a candidate). A typed read has FHIR's shapes only: nothing is unreadable there."""
    unreadable = "false" if typed else (
        f"type = 'Condition' AND coalesce(json_type({code}) <> 'NULL' AND (json_type({code}) <> 'OBJECT' "
        f"OR coalesce(json_type({code}, '$.coding') NOT IN ('ARRAY', 'NULL'), false)), false)")
    if typed:
        code, meta = f"{code}.coding", f"{meta}.profile"
    else:
        code = f"json_transform({code}, '{{\"coding\": {CODINGS}}}').coding"
        extension = f"json_transform({extension}, '{EXTENSIONS}')"
        meta = f"json_transform({meta}, '{{\"profile\": [\"VARCHAR\"]}}').profile"
    return (f"CASE WHEN type = 'Condition' THEN list_concat({code}, flatten([e.valueCodeableConcept.coding "
            f"FOR e IN {extension} IF e.url = $histology])) END AS codings, "
            f"CASE WHEN type = 'Condition' THEN {meta} END AS profiles, {unreadable} AS unreadable")


def _insert_read(con: duckdb.DuckDBPyConnection, files: tuple[Path, ...], codes: CohortCodes, typed: bool) -> None:
    ref = ("coalesce(subject.reference, patient.reference)" if typed else
           "coalesce(json_extract_string(subject, '$.reference'), json_extract_string(patient, '$.reference'))")
    con.execute(f"""
        INSERT INTO {SCAN}
        SELECT type, id, ref, {_narrowing_columns('code', 'extension', 'meta', typed=typed)} FROM (
            SELECT resourceType AS type, id, code, extension, meta, {ref} AS ref
            FROM read_ndjson($files, columns = {TYPED_COLUMNS if typed else COLUMNS}, format = 'newline_delimited',
                             compression = 'auto_detect', maximum_object_size = {MAX_OBJECT_BYTES})
            WHERE resourceType IN ('Patient', 'Condition'))
    """, {"files": file_list(files), "histology": codes.histology_extension})


def scan_files(con: duckdb.DuckDBPyConnection, files: tuple[Path, ...], codes: CohortCodes) -> None:
    """The Patients and Conditions of these files into `scan`: type, id, subject reference, and a
    Condition's codings and profiles — only what the narrowing reads. Read typed first (FHIR-shaped data:
    a third faster); a value of another shape stops that read (the statement leaves nothing behind), and
    the files are read again with the JSON columns, where such a value is NULL: the same rows either way."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {SCAN} (type VARCHAR, id VARCHAR, ref VARCHAR, "
                "codings STRUCT(system VARCHAR, code VARCHAR)[], profiles VARCHAR[], unreadable BOOLEAN)")
    if not files:
        return
    try:
        _insert_read(con, files, codes, typed=True)
    except duckdb.Error:  # another shape than FHIR's somewhere, or a line that is not JSON: the JSON read says
        _insert_read(con, files, codes, typed=False)


def scan_lines(con: duckdb.DuckDBPyConnection, table: str, codes: CohortCodes) -> None:
    """Add the Patients and Conditions among the raw lines of `table` (column `json`), found elsewhere."""
    columns = _narrowing_columns("json_extract(json, '$.code')", "json_extract(json, '$.extension')",
                                 "json_extract(json, '$.meta')")
    con.execute(f"""
        INSERT INTO {SCAN}
        SELECT type, json_extract_string(json, '$.id'),
               coalesce(json_extract_string(json, '$.subject.reference'),
                        json_extract_string(json, '$.patient.reference')), {columns}
        FROM {table} WHERE type IN ('Patient', 'Condition')
    """, {"histology": codes.histology_extension})


def _coded_refs(con: duckdb.DuckDBPyConnection, codes: CohortCodes) -> list[str]:
    """Subject references of the Conditions with a cohort code (in code or histology), a code that cannot be
    read, or a cohort profile: in that order."""
    distinct = con.execute(f"SELECT DISTINCT c.system, c.code FROM (SELECT unnest(codings) AS c FROM {SCAN} "
                           "WHERE ref IS NOT NULL) WHERE c.system IS NOT NULL AND c.code IS NOT NULL").fetchall()
    matched = [{"system": system, "code": code} for system, code in distinct if codes.matches(system, code)]
    refs = [r for (r,) in con.execute(f"""
        SELECT DISTINCT ref FROM (SELECT ref, unnest(codings) AS c FROM {SCAN} WHERE ref IS NOT NULL)
        WHERE c IN (SELECT unnest($matched))
    """, {"matched": matched}).fetchall()] if matched else []
    refs += [r for (r,) in con.execute(f"SELECT DISTINCT ref FROM {SCAN} WHERE unreadable AND ref IS NOT NULL "
                                       "ORDER BY ref").fetchall()]
    if codes.profiles:
        refs += [r for (r,) in con.execute(f"""
            SELECT DISTINCT ref FROM {SCAN}
            WHERE ref IS NOT NULL
              AND len(list_filter(profiles, lambda p: list_contains($profiles, split_part(p, '|', 1)))) > 0
        """, {"profiles": sorted(codes.profiles)}).fetchall()]
    return refs


def coded_patients(refs: Iterable[str]) -> tuple[set[str], int]:
    """The Patient ids the subject references of cohort-coded Conditions name (`reference_key`, as the
    engine attributes them), and how many of those references are absolute or urn (each engine's count)."""
    coded: set[str] = set()
    not_relative = 0
    for ref in dict.fromkeys(refs):  # a reference found twice (by code and by profile) counts once
        key = reference_key(ref)
        if key.startswith("Patient/"):
            coded.add(key.removeprefix("Patient/"))
            not_relative += "://" in ref or ref.startswith("urn:")
    return coded, not_relative


def narrow(con: duckdb.DuckDBPyConnection, codes: CohortCodes) -> Narrowed:
    """The candidates among what `scan` holds: the Patients with a cohort diagnosis code (`codes`)."""
    coded, not_relative = coded_patients(_coded_refs(con, codes))
    present = {i for (i,) in con.execute(
        f"SELECT DISTINCT id FROM {SCAN} WHERE type = 'Patient' AND list_contains($coded, id)",
        {"coded": sorted(coded)}).fetchall()} if coded else set()
    patients = con.execute(f"SELECT count(DISTINCT id) + count(*) FILTER (WHERE id IS NULL) FROM {SCAN} "
                           "WHERE type = 'Patient'").fetchone()
    conditions = con.execute(f"SELECT count(*) FROM {SCAN} WHERE type = 'Condition'").fetchone()
    return Narrowed(
        screened=int(patients[0]) if patients else 0,
        candidates=tuple(sorted(present)),
        without_patient=tuple(f"Patient/{i}" for i in sorted(coded - present)),
        not_relative=not_relative,
        conditions=int(conditions[0]) if conditions else 0)
